"""Benchmark: counting and exporting a profile's networks in worker processes vs one after the other.

A cold ``casprof measure`` counts (fvcore) and exports (ONNX) each of its ~53 probe networks at
full size before any timing. This times both ways of doing that, back to back, without a build
cache: one network after the other in this process with all threads (what ``--build-workers 1``
does), and ``casprof.prebuild`` with ``--workers`` processes sharing the threads (the default of
``casprof measure``: one per thread). The two paths alternate ``--repeats`` times, so a slow
spell of the machine does not favour one of them.

Run: ``python benchmarks/build_workers.py [--resolution 768x1536] [--workers 2] [--repeats 2]``.
Writes ``benchmarks/results/build_workers_<digest>.{json,md}`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import torch

from casprof._io import atomic_write_json, atomic_write_text
from casprof.backends.onnx_export import export_onnx
from casprof.config import DEFAULT_CONFIG, parse_resolution
from casprof.errors import UserInputError
from casprof.hardware import detect_hardware
from casprof.measure import network_counts
from casprof.prebuild import BuildJob, ExportRequest, default_workers, prebuild
from casprof.probes import build_probe, profile_probes

RESULTS = Path(__file__).resolve().parent / "results"


def serial(jobs: list[BuildJob], shape: tuple[int, int, int, int], folder: Path, threads: int) -> float:
    """Count and export every network in this process, one after the other; wall seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        for i, job in enumerate(jobs):
            model = job.build()
            network_counts(model, shape)
            export_onnx(model, shape, folder / f"serial-{i}.onnx", device="cpu")
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", default="768x1536")
    parser.add_argument("--workers", type=int, default=None, help="default: one per thread (casprof measure's default)")
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the two paths")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    hw = detect_hardware()
    threads = hw.cpu.affinity or hw.cpu.logical_cores
    workers = default_workers(threads) if args.workers is None else args.workers
    if workers < 2:
        parser.error(f"--workers must be at least 2 to compare with one process, got {workers}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    try:
        size = parse_resolution(args.resolution, DEFAULT_CONFIG)
    except UserInputError as e:
        parser.error(str(e))
    shape = (1, DEFAULT_CONFIG.in_channels, *size)
    probes = profile_probes(DEFAULT_CONFIG)
    jobs = [BuildJob(p.key, functools.partial(build_probe, DEFAULT_CONFIG, p, 0)) for p in probes]
    runs: dict[str, list[float]] = {"one process": [], f"{workers} processes": []}
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs["one process"].append(serial(jobs, shape, Path(tmp), threads))
            print(f"repeat {r + 1}: one process {runs['one process'][-1]:.1f} s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            got = prebuild(jobs, shape, Path(tmp), export=ExportRequest("torchscript"), workers=workers, threads=threads)
            runs[f"{workers} processes"].append(got.seconds)
            print(f"repeat {r + 1}: {workers} processes {got.seconds:.1f} s", flush=True)
    one, many = statistics.median(runs["one process"]), statistics.median(runs[f"{workers} processes"])
    report = {
        "benchmark": "build_workers",
        "hardware": hw.to_dict(),
        "hardware_digest": hw.digest(),
        "torch": torch.__version__,
        "threads": threads,
        "workers": workers,
        "threads_per_worker": max(1, threads // workers),
        "networks": len(jobs),
        "resolution": list(size),
        "seconds": runs,
        "median_one_process_s": one,
        "median_workers_s": many,
        "saved_s": one - many,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"python benchmarks/build_workers.py --resolution {args.resolution} --workers {workers} --repeats {args.repeats}",
    }
    md = "\n".join([
        "# Counting and exporting a profile's networks: worker processes vs one process",
        "",
        f"- machine: CPU {hw.cpu.model} ({hw.cpu.signature or 'no signature'}, {hw.cpu.vector_isa or '?'}), "
        f"{threads} threads, fingerprint `{hw.digest()}`; torch {torch.__version__}",
        f"- {len(jobs)} probe networks of the default CAS network at {size[0]}x{size[1]}: fvcore counts and a torchscript "
        f"ONNX export each, no build cache; the two paths alternate {args.repeats} time(s)",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        "",
        "| path | wall seconds (each repeat) | median |",
        "| --- | --- | ---: |",
        f"| one process, {threads} threads, one network after the other | {', '.join(f'{s:.1f}' for s in runs['one process'])} | {one:.1f} |",
        f"| {workers} processes of {report['threads_per_worker']} thread(s) (`casprof.prebuild`, spawn included) | "
        f"{', '.join(f'{s:.1f}' for s in runs[f'{workers} processes'])} | {many:.1f} |",
        "",
        f"Saved: {one - many:.1f} s ({(one - many) / one * 100:.0f} %).",
        "",
    ])
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"build_workers_{hw.digest()}{'_' + args.tag if args.tag else ''}"
    atomic_write_json(stem.with_suffix(".json"), report)
    atomic_write_text(stem.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
