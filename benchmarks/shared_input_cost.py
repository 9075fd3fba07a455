"""Benchmark: is the reduction cell's factorized-reduce cost shared per input? (the schema-5 mixed_inputs probe)

Times, interleaved in rounds bracketed by the baseline network (as ``casprof measure`` does), the
``input_edges`` probe of one operation o and three reduction cells in which o replaces every input
edge except some factorized reduces (``identity`` on a stride-2 edge), the other edges ``identity``:

- ``one``: node 0's edge from input 0 (one input read by a factorized reduce);
- ``both``: node 0's edge from input 0 and node 1's edge from input 1 (the ``mixed_inputs`` probe);
- ``same``: node 0's and node 1's edges from input 0 (two factorized reduces on one input).

For each, delta = c(cell) - (additive prediction from the input_edges probe: the share of its
operations, (2n - f) / (2n) c_o^inputs). If every factorized reduce of one input shares one cost
R (casprof.edge_model), delta = R (2/3, 4/3, 1/3) for n = 3, i.e. one : both : same = 2 : 4 : 1;
if each factorized reduce had its own extra cost, ``same`` would equal ``both``.

Run: ``python benchmarks/shared_input_cost.py [--rounds 40] [--op conv_3x3] [--backend onnxruntime]``.
Writes ``benchmarks/results/shared_input_cost_<backend>_<digest>.{json,md}`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from casprof._io import atomic_write_json, atomic_write_text
from casprof.backends.base import RunnerSpec
from casprof.backends.onnxruntime_runner import OnnxRuntimeRunner
from casprof.backends.torch_runner import TorchRunner
from casprof.config import DEFAULT_CONFIG, parse_resolution
from casprof.hardware import detect_hardware
from casprof.probes import BASELINE, MIXED_INPUTS_IDENTITY_EDGES, build_network, input_edges_graph, probe_graphs
from casprof.stats import Measurement

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"one": frozenset({(0, 0)}), "both": MIXED_INPUTS_IDENTITY_EDGES, "same": frozenset({(0, 0), (1, 0)})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--op", default="conv_3x3")
    parser.add_argument("--backend", choices=["onnxruntime", "torch"], default="onnxruntime")
    parser.add_argument("--resolution", default="768x1536")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    h, w = parse_resolution(args.resolution)
    n = DEFAULT_CONFIG.intermediate_nodes("reduce")
    base = probe_graphs(DEFAULT_CONFIG, BASELINE)
    graphs = {"baseline": base, "input_edges": base | {"reduce": input_edges_graph(n, args.op)}}
    graphs |= {name: base | {"reduce": input_edges_graph(n, args.op, kept)} for name, kept in VARIANTS.items()}
    hw = detect_hardware()
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        spec = RunnerSpec(input_shape=(1, 3, h, w), threads=args.threads, workdir=Path(tmp))
        runners = {}
        for name, g in graphs.items():
            model = build_network(DEFAULT_CONFIG, g, seed=0)
            runners[name] = (OnnxRuntimeRunner(model, spec, spinning=False) if args.backend == "onnxruntime"
                             else TorchRunner(model, spec))
        for r in runners.values():
            r.activate()
            r.warmup(3)
        diffs: dict[str, list[float]] = {k: [] for k in graphs if k != "baseline"}
        rng = random.Random(0)
        for _ in range(args.rounds):
            order = list(diffs)
            rng.shuffle(order)
            before = runners["baseline"].time_once()
            for k in order:
                t = runners[k].time_once()
                after = runners["baseline"].time_once()
                diffs[k].append(t - (before + after) / 2)
                before = after
        info = runners["baseline"].info().to_dict()
        for r in runners.values():
            r.deactivate()
    rows = {}
    inputs = diffs["input_edges"]
    for name, kept in VARIANTS.items():
        share = (2 * n - len(kept)) / (2 * n)
        paired = Measurement(tuple(c - share * p for c, p in zip(diffs[name], inputs)), "ms")
        rows[name] = {"kept_identity_edges": sorted(kept), "c_ms": Measurement(tuple(diffs[name]), "ms").median,
                      "additive_share": share, "delta_ms": paired.median, "delta_ci95": list(paired.ci95)}
    one = rows["one"]["delta_ms"]
    report = {
        "benchmark": "shared_input_cost", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"python benchmarks/shared_input_cost.py --rounds {args.rounds} --op {args.op} --backend {args.backend} "
                   f"--resolution {args.resolution} --threads {args.threads}",
        "cpu": hw.cpu.model, "hardware_digest": hw.digest(), "runner": info, "rounds": args.rounds, "op": args.op,
        "seconds": round(time.time() - start, 1),
        "input_edges_c_ms": Measurement(tuple(inputs), "ms").median, "variants": rows,
        "ratios_to_one": {k: (v["delta_ms"] / one if one else None) for k, v in rows.items()},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"shared_input_cost_{args.backend}_{hw.digest()}"
    atomic_write_json(stem.with_suffix(".json"), report)
    md = markdown(report)
    atomic_write_text(stem.with_suffix(".md"), md)
    print(md)


def markdown(report: dict) -> str:
    lines = [
        f"# Shared input cost of the reduction cell's factorized reduces ({report['runner'].get('backend')})",
        "",
        f"- machine: CPU {report['cpu']}, fingerprint `{report['hardware_digest']}`; {report['date']}",
        f"- command: `{report['command']}` ({report['seconds']:.0f} s)",
        f"- {report['rounds']} rounds, each network once per round in a seeded shuffled order, every run bracketed by "
        "the baseline network; c = median of (run - mean of the two baseline runs around it); delta = median over "
        "rounds of (c_cell - additive share x c_input_edges) from the same round, with a 95 % bootstrap interval",
        f"- input_edges probe ({report['op']} on all 6 input edges of both reduction cells): c = {report['input_edges_c_ms']:.2f} ms",
        "",
        "| cell (identity = factorized reduce) | c ms | additive share of c_inputs | delta ms | 95 % interval | delta / delta(one) | expected if shared per input |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    expected = {"one": "1", "both": "2", "same": "0.5"}
    for name, r in report["variants"].items():
        lo, hi = r["delta_ci95"]
        ratio = report["ratios_to_one"][name]
        lines.append(f"| {name}: {r['kept_identity_edges']} | {r['c_ms']:.2f} | {r['additive_share']:.3f} | {r['delta_ms']:.2f} | "
                     f"{lo:.2f} … {hi:.2f} | {'-' if ratio is None else f'{ratio:.2f}'} | {expected[name]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
