"""Benchmark: the CAS search on the CPU — a lambda sweep, a latency budget, and search throughput.

Data: the built-in synthetic street scenes (``--dataset synthetic``). Profile: the committed CPU
profile ``profiles/cpu-6d78dc83-onnxruntime-fp32-768x1536.json`` (the default network, ONNX
Runtime latencies at 768x1536). Searches are joint (normal, reduce and multi-scale cells),
first order, seed 0, with 2 torch threads. Predicted costs are the profile's predictions for the
derived networks (``casprof predict``), not new measurements.

Parts and targets (issue "search"), for the latency (ms) and the MACs metric of that profile:
1. a lambda sweep (0, 100, 1000 in the normalised cost units of ``search.cost``) at a small
   crop; target: the largest lambda's network is predicted at least 30 % cheaper than lambda 0's.
   The report also gives the largest saving the profile allows (the cheapest derivable network)
   and the share of lambda 0's cost above that cheapest network which the largest lambda removed;
2. a ``--target`` search with the budget at 80 % of the lambda-0 network's predicted cost;
   target: its network's predicted cost lands within [85 %, 100 %] of the budget (the report
   says whether such a budget is feasible at all for the profile);
3. throughput and memory of the search at the default settings (crop 128x256, batch 16): search
   iterations per second (wall clock over the iterations after the first, which is a warm-up)
   and the peak resident memory of a fresh process that runs only that search
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, so the sweep's memory is not counted).

Run: ``python benchmarks/search_cpu.py`` on a quiet machine (8 searches of 60 iterations at
32x64, batch 2, plus the throughput search; about 15 minutes on 2 cores). Writes
``benchmarks/results/search_cpu_<hardware digest>.{json,md}`` and one sweep plot per metric
(``search_cpu_<metric>_<digest>.png``), and prints the Markdown.
``python benchmarks/search_cpu.py --short``: a smoke run with 3 iterations per search at 32x64
(under a minute); prints the Markdown and writes nothing (its figures say nothing about the targets).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")  # before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

from casprof._io import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402
from casprof.hardware import detect_hardware  # noqa: E402
from search.settings import SearchSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROFILE = ROOT / "profiles" / "cpu-6d78dc83-onnxruntime-fp32-768x1536.json"
CHEAPER_TARGET = 0.30
BUDGET_FRACTION = 0.80
LANDING = (0.85, 1.00)


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    metrics: tuple[str, ...]
    lambdas: tuple[float, ...]
    iters: int
    batch_size: int
    crop: tuple[int, int]
    throughput_iters: int
    throughput_batch: int
    throughput_crop: tuple[int, int]


#: The benchmark proper: per metric, a sweep of 60-iteration searches at 32x64, batch 2, and a
#: budget search; then 4 iterations (3 timed) at the default search settings for the throughput.
FULL = Plan(("latency_ms", "macs"), (0.0, 100.0, 1000.0), 60, 2, (32, 64), 4, 16, (128, 256))
#: The smoke run: a few iterations at the smallest crop.
SHORT = Plan(("latency_ms",), (0.0, 1.0), 3, 2, (32, 64), 3, 2, (32, 64))


#: ``--cost-over``: the support of the expected cost (search.settings.CostSupport); set by main().
COST_SUPPORT = "kept"


def _settings(plan: Plan, metric: str, **changes: object) -> SearchSettings:
    base = SearchSettings(profile=PROFILE, metric=metric, iters=plan.iters, batch_size=plan.batch_size, crop=plan.crop,
                          seed=0, log_every=max(1, plan.iters // 10), checkpoint_every=plan.iters,
                          cost_support=COST_SUPPORT)
    return base.replace(**changes)


def cost_range(metric: str) -> dict:
    """The profile's c'_id and the predicted costs of the cheapest and the dearest derivable networks.

    Each node keeps the two inputs whose best (worst) operation is cheapest (dearest), and the
    genotype goes through ``casprof.predict`` like any derived network.
    """
    from casprof.genotype import Genotype
    from casprof.ops import CELL_TYPES, candidate_ops
    from casprof.predict import edge_cost, predict
    from casprof.profile import Profile

    profile = Profile.load(PROFILE)
    config = profile.network

    def extreme(pick) -> float:
        cells = {}
        for t in CELL_TYPES:
            nodes = []
            for j in range(config.intermediate_nodes(t)):
                best = [pick(((edge_cost(profile, t, op, metric, node=j, input_index=i), op) for op in candidate_ops(t)))
                        + (i,) for i in range(2 + j)]
                chosen = sorted(best, reverse=pick is max)[:2]
                nodes.append(tuple((op, i) for _, op, i in sorted(chosen, key=lambda e: e[2])))
            cells[t] = tuple(nodes)
        return predict(profile, Genotype(**cells, network=config))[metric].value

    return {"baseline": profile.baseline[metric].value, "cheapest": extreme(min), "dearest": extreme(max)}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _printer(prefix: str):
    def report(p) -> None:
        _say(f"{prefix} it {p.iteration}/{p.total}  val loss {p.val_loss:.3f}  λ {p.lambda_:.3g}  "
             f"predicted {p.predicted_cost:.2f} {p.unit}  {p.iters_per_second:.2f} it/s")

    return report


def sweep_part(plan: Plan, metric: str, work: Path) -> dict:
    from search.sweep import run_sweep

    settings = _settings(plan, metric)
    start = time.perf_counter()
    result = run_sweep(settings, plan.lambdas, work / f"sweep-{metric}",
                       progress=lambda lam, p: _printer(f"[{metric} λ={lam:g}]")(p), announce=_say)
    seconds = time.perf_counter() - start
    rows = [r.to_dict() for r in result.rows]
    base, last = result.rows[0], result.rows[-1]
    span = cost_range(metric)
    saving = 1 - last.predicted_cost / base.predicted_cost
    above = base.predicted_cost - span["cheapest"]
    return {
        "metric": metric,
        "rows": rows,
        "seconds": seconds,
        "range": span,
        "saving_largest_vs_zero": saving,
        "saving_of_reducible": (base.predicted_cost - last.predicted_cost) / above if above > 0 else None,
        "largest_possible_saving": 1 - span["cheapest"] / base.predicted_cost,
        "monotone": all(a.predicted_cost >= b.predicted_cost for a, b in zip(result.rows, result.rows[1:])),
        "met": base.lambda_ == 0 and saving >= CHEAPER_TARGET,
        "png": (work / f"sweep-{metric}" / "sweep.png").read_bytes(),
    }


def target_part(plan: Plan, metric: str, work: Path, lambda0_cost: float) -> dict:
    from search.run import run_search

    budget = BUDGET_FRACTION * lambda0_cost
    start = time.perf_counter()
    result = run_search(_settings(plan, metric, target=budget), work / f"target-{metric}", progress=_printer(f"[{metric} target]"))
    ratio = result.predicted_cost / budget
    return {
        "metric": metric,
        "unit": result.unit,
        "budget": budget,
        "lambda0_cost": lambda0_cost,
        "cheapest_possible": cost_range(metric)["cheapest"],
        "feasible": cost_range(metric)["cheapest"] <= budget,
        "predicted": result.predicted_cost,
        "ratio_to_budget": ratio,
        "final_lambda": result.genotype.search.lambda_,
        "budget_swaps": list(result.budget_swaps),
        "warnings": list(result.warnings),
        "seconds": time.perf_counter() - start,
        "met": LANDING[0] <= ratio <= LANDING[1],
    }


def throughput_child(iters: int, batch: int, crop: tuple[int, int], out: Path) -> None:
    """In a fresh process: one search at the given size; prints iterations/s and peak RSS as JSON."""
    import torch

    from search.run import run_search

    stamps: list[tuple[int, float]] = []
    settings = SearchSettings(profile=PROFILE, iters=iters, batch_size=batch, crop=crop, log_every=1, checkpoint_every=iters)
    run_search(settings, out, progress=lambda p: stamps.append((p.iteration, time.perf_counter())))
    (i0, t0), (i1, t1) = stamps[0], stamps[-1]
    print(json.dumps({
        "iterations_timed": i1 - i0,
        "iters_per_second": (i1 - i0) / (t1 - t0),
        "seconds_per_iteration": (t1 - t0) / (i1 - i0),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch,
        "crop": list(crop),
    }))


def throughput_part(plan: Plan, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--throughput-child", str(plan.throughput_iters), str(plan.throughput_batch),
           f"{plan.throughput_crop[0]}x{plan.throughput_crop[1]}", str(work / "throughput")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"The throughput search failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt(value: float, unit: str) -> str:
    return f"{value / 1e9:.3f} G" if unit == "MACs" else f"{value:.2f} {unit}"


def markdown(report: dict) -> str:
    yes = {True: "yes", False: "**no**"}
    p = report["throughput"]
    plan = report["plan"]
    lines = [
        "# CAS search on the CPU" + (" (smoke run, --short)" if report["short"] else ""),
        "",
        f"- machine: CPU {report['hardware']['cpu']['model']}, fingerprint `{report['hardware_digest']}`, "
        f"{report['torch_threads']} torch threads; load average at start {report['load_average']:.2f}",
        f"- profile: `{report['profile']}` (ONNX Runtime, 768x1536); data: synthetic; stage joint, first order, seed 0; "
        f"expected cost `--cost-over {report.get('cost_over', 'all')}`",
        f"- searches: {plan['iters']} iterations, batch {plan['batch_size']}, crop {plan['crop'][0]}x{plan['crop'][1]}",
        "- predicted cost = the profile's prediction for the derived network (`casprof predict`), not a measurement;",
        "  val mIoU = the supernet's on a few search_val batches at the end of the search",
        f"- command: `{report['command']}`; date {report['date']}",
        "",
    ]
    for metric, part in report["metrics"].items():
        s, t = part["sweep"], part["target"]
        unit = t["unit"]
        r = s["range"]
        lines += [
            f"## metric `{metric}`",
            "",
            f"Derivable networks span {_fmt(r['cheapest'], unit)} (cheapest) to {_fmt(r['dearest'], unit)} (dearest); "
            f"the fully connected all-identity probe network (c'_id) is {_fmt(r['baseline'], unit)}.",
            "",
            "| λ | predicted cost | val mIoU (supernet) | final val loss |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for row in s["rows"]:
            miou = "-" if row["val_miou"] is None else f"{100 * row['val_miou']:.1f} %"
            lines.append(f"| {row['lambda']:g} | {_fmt(row['predicted_cost'], unit)} | {miou} | {row['final_val_loss']:.3f} |")
        above = "-" if s["saving_of_reducible"] is None else f"{100 * s['saving_of_reducible']:.1f} %"
        lines += [
            "",
            "| figure | value | target | met |",
            "| --- | ---: | --- | --- |",
            f"| largest λ vs λ 0: predicted cost saved | {100 * s['saving_largest_vs_zero']:.1f} % "
            f"(at most {100 * s['largest_possible_saving']:.1f} % possible) | ≥ {100 * CHEAPER_TARGET:.0f} % | {yes[s['met']]} |",
            f"| the same, of λ 0's cost above the cheapest derivable network | {above} | | |",
            f"| predicted cost falls monotonically with λ | {yes[s['monotone']]} | | |",
            f"| --target {_fmt(t['budget'], unit)} (80 % of λ 0's {_fmt(t['lambda0_cost'], unit)}; "
            f"{'feasible' if t['feasible'] else '**below the cheapest derivable network**'}): predicted {_fmt(t['predicted'], unit)} | "
            f"{100 * t['ratio_to_budget']:.1f} % of budget | {100 * LANDING[0]:.0f}–{100 * LANDING[1]:.0f} % | {yes[t['met']]} |",
            "",
        ]
        if t["warnings"]:
            lines += [f"Target run: {w}" for w in t["warnings"]] + [""]
    lines += [
        "## speed",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| search speed, crop {p['crop'][0]}x{p['crop'][1]}, batch {p['batch_size']} | {p['iters_per_second']:.3f} it/s "
        f"({p['seconds_per_iteration']:.2f} s/it over {p['iterations_timed']} it) |",
        f"| peak resident memory of that search (ru_maxrss) | {p['peak_rss_mib']:.0f} MiB |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="smoke run: a few iterations; writes nothing")
    parser.add_argument("--cost-over", choices=["kept", "derivable", "all"], default="kept",
                        help="support of the expected cost (search --cost-over); a non-default value is in the file names")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep the run folders in this (new) folder")
    parser.add_argument("--throughput-child", nargs=4, metavar=("ITERS", "BATCH", "CROP", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.throughput_child:
        iters, batch, crop, out = args.throughput_child
        h, w = (int(v) for v in crop.split("x"))
        throughput_child(int(iters), int(batch), (h, w), Path(out))
        return

    import torch

    global COST_SUPPORT
    COST_SUPPORT = args.cost_over
    plan = SHORT if args.short else FULL
    load = os.getloadavg()[0]
    if load > 0.5:
        _say(f"Warning: the 1-minute load average is {load:.2f}; other work on this machine slows the search.")
    hw = detect_hardware()
    metrics: dict[str, dict] = {}
    pngs: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for metric in plan.metrics:
            sweep = sweep_part(plan, metric, work)
            pngs[metric] = sweep.pop("png")
            target = target_part(plan, metric, work, sweep["rows"][0]["predicted_cost"])
            metrics[metric] = {"sweep": sweep, "target": target}
        throughput = throughput_part(plan, work)
        if args.keep_runs is not None:
            shutil.copytree(work, args.keep_runs)
    report = {
        "benchmark": "search_cpu",
        "short": args.short,
        "command": "python benchmarks/search_cpu.py" + (" --short" if args.short else "")
        + ("" if args.cost_over == "kept" else f" --cost-over {args.cost_over}"),
        "cost_over": args.cost_over,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "profile": str(PROFILE.relative_to(ROOT)),
        "hardware": hw.to_dict(),
        "hardware_digest": hw.digest(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load,
        "plan": {"metrics": list(plan.metrics), "lambdas": list(plan.lambdas), "iters": plan.iters,
                 "batch_size": plan.batch_size, "crop": list(plan.crop)},
        "metrics": metrics,
        "throughput": throughput,
    }
    md = markdown(report)
    if not args.short:
        RESULTS.mkdir(exist_ok=True)
        suffix = "" if args.cost_over == "kept" else f"_cost-over-{args.cost_over}"
        stem = RESULTS / f"search_cpu_{report['hardware_digest']}{suffix}"
        atomic_write_json(stem.with_suffix(".json"), report)
        atomic_write_text(stem.with_suffix(".md"), md)
        for metric, png in pngs.items():
            atomic_write_bytes(RESULTS / f"search_cpu_{metric}_{report['hardware_digest']}{suffix}.png", png)
    print(md)


if __name__ == "__main__":
    main()
