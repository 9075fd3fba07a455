"""Benchmark (diagnostic): which kind of derived network a profile mispredicts, by design of the networks.

A profile's probes use one operation on every edge of a fully connected cell; a fidelity check's
random derived networks have two edges per node, randomly wired, with a different operation on
almost every edge. When a check's errors share a sign (the random networks all measured slower
than predicted, say), this tells apart where it comes from. It times, exactly as ``casprof
fidelity`` does (each run bracketed by the profile's baseline network, anchored at c'_id,
interleaved rounds in sweeps), and against the same predictions:

* ``id-*``, the structure alone: ``identity`` on every edge, wired as the profile's
  ``derived_identity`` probe (``id-C``, predicted as measured by construction, a control), as a
  chain (``id-chain``: every node reads its two latest predecessors, the extremes' wiring), with
  every node reading both cell inputs (``id-inputs``), and as the random genotypes (``id-rand-k``);
* operations and wiring, for random genotype k (seed k, as the check's ``random-k``):
  ``rand-mixed-k`` (the genotype itself), ``rand-pure-k`` (its wiring, one operation per cell
  type), ``chain-mixed-k`` (the chain, with the genotype's operations in edge order) and
  ``chain-pure-k`` (the chain, one operation per cell type; the operations come from a fixed list).

Reports every group's mean error (measured − predicted, in ms and %) with its standard error over
the group's networks, and every network. ``python benchmarks/additivity_cpu.py --backend
onnxruntime`` (about 8 minutes at 768x1536 on 2 cores) or ``--backend torch --profile P``; writes
``benchmarks/results/additivity_cpu_<backend>[<settings>][_<precision>]_<digest>[_<tag>].{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from casprof._io import atomic_write_json, atomic_write_text
from casprof.backends.base import Backend
from casprof.cli._interrupt import watch_interrupts
from casprof.config import NetworkConfig
from casprof.fidelity import Candidate, FidelityReport, FidelitySettings, run_fidelity
from casprof.genotype import CellGraph, Genotype, SearchRecord, random_genotype, uniform_genotype
from casprof.hardware import detect_hardware
from casprof.ops import CELL_TYPES
from casprof.prebuild import default_workers
from casprof.probes import derived_identity_graph
from casprof.profile import Profile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
from fidelity_cpu import default_profile, print_finished_stages, result_stem, short_profile  # noqa: E402

#: One operation per cell type (normal, reduce, ms) for the ``*-pure-k`` networks, used in turn.
PURE_OPS: tuple[tuple[str, str, str], ...] = (
    ("sep_conv_3x3_x2", "sep_conv_3x3_x4", "spp_16x16"),
    ("pooled_conv_3x3", "max_pool_3x3", "conv_3x3_d2"),
    ("max_pool_3x3", "conv_3x3", "conv_15x1_1x15"),
    ("conv_3x3", "pooled_conv_3x3_x2", "spp_8x8"),
    ("dil_conv_3x3", "dil_conv_3x3", "conv_3x3_d8"),
    ("sep_conv_3x3_x4", "sep_conv_3x3_x2", "conv_3x3_d4"),
)


#: The groups in the order the report lists them.
GROUPS = ("id-C", "id-chain", "id-inputs", "id-rand", "rand-mixed", "rand-pure", "chain-mixed", "chain-pure")


def _genotype(cells: dict[str, CellGraph], config: NetworkConfig) -> Genotype:
    return Genotype(**cells, network=config, search=SearchRecord(method="manual"))


def _rewired(g: Genotype, op_of: Callable[[str, int], str]) -> Genotype:
    """``g``'s wiring with the operation of edge ``e`` (in edge order) of each cell type from ``op_of(type, e)``."""
    cells = {t: tuple(tuple((op_of(t, 2 * j + k), src) for k, (_, src) in enumerate(node)) for j, node in enumerate(g.cell(t)))
             for t in CELL_TYPES}
    return _genotype(cells, g.network)


def designed_networks(config: NetworkConfig, pairs: int) -> list[Candidate]:
    """The structure-only networks and, for random genotypes 0..pairs-1, the four operation x wiring variants."""
    nodes = {t: config.intermediate_nodes(t) for t in CELL_TYPES}
    identity = {t: "identity" for t in CELL_TYPES}
    out = [
        Candidate("id-C", _genotype({t: derived_identity_graph(nodes[t]) for t in CELL_TYPES}, config)),
        Candidate("id-chain", uniform_genotype(identity, config)),
        Candidate("id-inputs", _genotype({t: tuple((("identity", 0), ("identity", 1)) for _ in range(nodes[t]))
                                          for t in CELL_TYPES}, config)),
    ]
    for k, ops in zip(range(pairs), itertools.cycle(PURE_OPS)):
        pure = dict(zip(CELL_TYPES, ops))
        genotype = random_genotype(k, config)
        chain = uniform_genotype(pure, config)
        in_order = {t: [op for node in genotype.cell(t) for op, _ in node] for t in CELL_TYPES}
        out += [
            Candidate(f"id-rand-{k}", _rewired(genotype, lambda t, e: "identity")),
            Candidate(f"rand-mixed-{k}", genotype),
            Candidate(f"rand-pure-{k}", _rewired(genotype, lambda t, e, pure=pure: pure[t])),
            Candidate(f"chain-mixed-{k}", _rewired(chain, lambda t, e, in_order=in_order: in_order[t][e])),
            Candidate(f"chain-pure-{k}", chain),
        ]
    return out


def group_of(name: str) -> str:
    """``rand-mixed-3`` -> ``rand-mixed``; ``id-C`` stays itself."""
    head, _, tail = name.rpartition("-")
    return head if tail.isdigit() else name


def group_rows(report: FidelityReport) -> list[dict]:
    """Per group: networks, mean error (ms, %) and its standard error over the group's networks."""
    groups: dict[str, list] = {}
    for r in report.networks:
        groups.setdefault(group_of(r.name), []).append(r)
    rows = []
    for name, rs in sorted(groups.items(), key=lambda kv: GROUPS.index(kv[0])):
        ms = [r.measured_ms - r.predicted_ms for r in rs]
        pct = [100.0 * (r.measured_ms - r.predicted_ms) / r.predicted_ms for r in rs]  # the sign of the ms column
        ratio = [r.ratio_ms - r.predicted_ms for r in rs if r.ratio_ms is not None]
        se = statistics.stdev(ms) / len(ms) ** 0.5 if len(ms) > 1 else None
        rows.append({"group": name, "n": len(rs), "mean_error_ms": statistics.fmean(ms), "se_ms": se,
                     "mean_error_pct": statistics.fmean(pct),
                     "ratio_anchored_mean_error_ms": statistics.fmean(ratio) if ratio else None})
    return rows


def _se(row: dict) -> str:
    return "-" if row["se_ms"] is None else f"{row['se_ms']:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def markdown(report: FidelityReport, rows: Sequence[dict], command: str) -> str:
    p = report.profile
    h, w = p["resolution"]
    lines = [
        f"# Prediction error by network design: {p['device']} / {p['backend']} {p['backend_version']} / {p['precision']} at {h}x{w}",
        "",
        f"- command: `{command}`",
        f"- profile: `{report.profile_path}` (hardware {p['hardware_digest']}, CPU {p['cpu']}, {p['threads']} threads"
        + (f"; CPU allocator {p['cpu_allocator']}, memory format {p['memory_format']}" if "memory_format" in p else "") + ")",
        f"- each network timed {report.settings['rounds']} times in {report.settings['sweeps']} sweeps, as `casprof fidelity` "
        "times (anchored: c'_id + median of the network's time minus its brackets' mean); error = measured − predicted",
        f"- test-retest error {report.retest_pct:.2f} %; baseline network now {report.baseline_now_ms:.2f} ms vs c'_id "
        f"{report.baseline_profile_ms:.2f} ms ({report.baseline_drift_pct:+.1f} %); wall time {report.seconds:.0f} s · {report.created}",
        *(f"- **Warning:** {w}" for w in report.warnings),
        "",
        "| group | networks | mean error (ms) | standard error (ms) | mean error (% of predicted) | ratio-anchored: mean error (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {r['group']} | {r['n']} | {r['mean_error_ms']:+.2f} | {_se(r)} | "
          f"{r['mean_error_pct']:+.2f} | {_ms(r['ratio_anchored_mean_error_ms'])} |" for r in rows),
        "",
        "Ratio-anchored: c'_id × the median of (time / its brackets' mean), as if the machine's speed change had scaled "
        "the networks as much as the baseline network; where the groups differ anchored but not ratio-anchored, the "
        "difference is the drift's, not the model's (a group's networks differ from the baseline by different amounts).",
        "",
        "| network | predicted ms | measured ms | error ms | m1 − m2 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {n.name} | {n.predicted_ms:.2f} | {n.measured_ms:.2f} | {n.measured_ms - n.predicted_ms:+.2f} | "
          f"{n.first_ms - n.second_ms:+.2f} |" for n in sorted(report.networks, key=lambda n: n.name)),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnxruntime", choices=[Backend.ONNXRUNTIME.value, Backend.TORCH.value])
    parser.add_argument("--profile", type=Path, default=None, help="default: profiles/cpu-<digest8>-<backend>-fp32-768x1536.json")
    parser.add_argument("--pairs", type=int, default=6, help="random genotypes, each in four variants (default 6)")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--sweeps", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument("--short", action="store_true", help="the TINY test network at 64x128, 1 pair, 2 rounds")
    parser.add_argument("--results", type=Path, default=None, help="output folder (default: benchmarks/results; --short: a temporary folder)")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")

    hw = detect_hardware()
    with tempfile.TemporaryDirectory(prefix="additivity-bench-") as tmp, watch_interrupts() as interrupts:
        if args.short:
            profile_path = args.profile or short_profile(args.backend, Path(tmp), interrupts.checked(lambda e: None))
            pairs, settings, results = 1, FidelitySettings(samples=5, rounds=2, sweeps=1), args.results or Path(tmp)
        else:
            profile_path = args.profile or default_profile(hw, args.backend)
            pairs, settings = args.pairs, FidelitySettings(samples=5, rounds=args.rounds, sweeps=args.sweeps)
            results = args.results or RESULTS
        profile = Profile.load(profile_path)
        candidates = designed_networks(profile.network, pairs)
        order = list(range(len(candidates)))
        random.Random(settings.seed).shuffle(order)  # no group gets a block, or a place in one, of its own
        report = run_fidelity(profile, hw, settings, profile_path=profile_path, candidates=[candidates[i] for i in order],
                              build_workers=default_workers(profile.backend.threads or 1),
                              progress=interrupts.checked(print_finished_stages))
        rows = group_rows(report)
        command = "python benchmarks/additivity_cpu.py " + " ".join(sys.argv[1:])
        stem = (result_stem(profile, hw.digest(), "additivity")
                + ("_short" if args.short else "") + (f"_{args.tag}" if args.tag else ""))
        results.mkdir(parents=True, exist_ok=True)
        data = {**{k: v for k, v in report.to_dict().items() if k != "networks"}, "command": command, "groups": rows,
                "networks": [{"name": n.name, "group": group_of(n.name), **n.to_dict()} for n in report.networks]}
        atomic_write_json(results / f"{stem}.json", data)
        md = markdown(report, rows, command)
        atomic_write_text(results / f"{stem}.md", md)
        print(md)
        print("wrote", results / f"{stem}.json", results / f"{stem}.md")

if __name__ == "__main__":
    main()
