"""Benchmark: the deploy path on the CPU — PyTorch eager vs ONNX Runtime at 768x1536.

The network is the default CAS skeleton (``casprof.config.NetworkConfig()``) with the genotype
``casprof.genotype.random_genotype(0)`` (the same as ``casprof genotype --random --seed 0``) and
seeded random weights (latency and parity do not depend on training). Both backends run with 2
threads, one after the other, each warmed up for 1 s and then timed for at least 20 runs and at
least 10 s (``cas deploy bench``'s protocol, :mod:`deploy.bench`); ONNX Runtime runs the
dynamo-exported ONNX file (opset 18) on the CPU execution provider.

Targets (issue "deploy"):
- ONNX Runtime at least 2.5x the FPS of PyTorch eager;
- parity of the ONNX Runtime output with PyTorch: relative error < 1e-4 and at least 99.9 % of
  pixels with the same class.

Run: ``python benchmarks/deploy_cpu.py`` (about 2-3 minutes on 2 cores); writes
``benchmarks/results/deploy_cpu_<hardware digest>.{json,md}`` and prints the Markdown.
``python benchmarks/deploy_cpu.py --short`` (CI): at least 3 runs, no minimum time, 0.2 s warm-up;
prints the Markdown and writes nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")  # before torch is imported

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from casprof._io import atomic_write_json, atomic_write_text  # noqa: E402
from casprof.genotype import random_genotype  # noqa: E402
from deploy.bench import BenchSettings, run_bench  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FPS_RATIO_TARGET = 2.5
REL_ERROR_TARGET = 1e-4
AGREEMENT_TARGET = 0.999


def targets(data: dict) -> dict:
    """The two targets of the issue, from a bench report with torch then onnxruntime."""
    torch_row, ort_row = data["results"]
    ratio = ort_row["fps"] / torch_row["fps"]
    parity = ort_row["parity"]
    return {
        "fps_ratio_ort_over_torch": {"value": ratio, "target": FPS_RATIO_TARGET, "met": ratio >= FPS_RATIO_TARGET},
        "parity_max_rel_error": {
            "value": parity["max_rel_error"],
            "target": REL_ERROR_TARGET,
            "met": parity["max_rel_error"] is not None and parity["max_rel_error"] < REL_ERROR_TARGET,
        },
        "parity_argmax_agreement": {
            "value": parity["argmax_agreement"],
            "target": AGREEMENT_TARGET,
            "met": parity["argmax_agreement"] >= AGREEMENT_TARGET,
        },
    }


def targets_markdown(t: dict, command: str) -> str:
    r, e, a = t["fps_ratio_ort_over_torch"], t["parity_max_rel_error"], t["parity_argmax_agreement"]
    yes = {True: "yes", False: "**no**"}
    lines = [
        "",
        f"Command: `{command}`",
        "",
        "| figure | value | target | met |",
        "| --- | ---: | --- | --- |",
        f"| FPS ratio ONNX Runtime / PyTorch | {r['value']:.2f}× | ≥ {r['target']:g}× | {yes[r['met']]} |",
        f"| parity: max relative error | {e['value']:.2e} | < {e['target']:g} | {yes[e['met']]} |",
        f"| parity: pixels with the same class | {a['value']:.4%} | ≥ {a['target']:.1%} | {yes[a['met']]} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI mode: ≥3 runs, no minimum time; writes nothing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolution", default="768x1536")
    args = parser.parse_args()

    settings = BenchSettings(
        backends=("torch", "onnxruntime"),
        precision="fp32",
        resolution=args.resolution,
        threads=args.threads,
        device="cpu",
        min_iters=3 if args.short else 20,
        min_seconds=0.0 if args.short else 10.0,
        warmup_seconds=0.2 if args.short else 1.0,
        exporter="dynamo",
    )
    command = "python benchmarks/deploy_cpu.py" + (" --short" if args.short else "")
    if args.threads != 2 or args.resolution != "768x1536":
        command += f" --threads {args.threads} --resolution {args.resolution}"
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"Warning: the 1-minute load average is {load:.2f}; other work on this machine will slow both backends "
              "and make the figures noisy.", file=sys.stderr, flush=True)
    report = run_bench(genotype=random_genotype(0), settings=settings, progress=lambda s: print(s, file=sys.stderr, flush=True))
    data = dict(report.data)
    data["benchmark"] = "deploy_cpu"
    data["command"] = command
    data["genotype"] = "casprof.genotype.random_genotype(0) on the default network"
    data["targets"] = targets(data)
    md = report.markdown() + targets_markdown(data["targets"], command)
    if not args.short:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / f"deploy_cpu_{data['hardware_digest']}"
        atomic_write_json(stem.with_suffix(".json"), data)
        atomic_write_text(stem.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
