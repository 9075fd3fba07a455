"""Benchmark: time to measure a full CPU profile, and repeatability of two back-to-back profiles.

Targets (issue "casprof"):
- a full CPU profile (normal, reduce, ms; every operation) at 768x1536 with onnxruntime in at
  most 10 minutes on the 2-core machine;
- two profiles made back to back agree on every c_o within the larger of 3% of c'_id and the
  operation's own 95% interval (the larger of the two profiles' half-widths); the worst
  operation is reported.

Run: ``python benchmarks/profile_cpu.py --backend onnxruntime [--keep-dir profiles] [--build-cache]``.
With ``--build-cache`` both profiles use one new, empty build cache (casprof.build_cache), so the
first is a cold start that fills it and the second takes its ONNX exports and counts from it; the
phases of each profile are reported (counting, preparation and warm-up, timed rounds). With a
cache, the cold profile counts and exports its networks in ``--build-workers`` processes first
(casprof.prebuild; default one per thread, as ``casprof measure``; 1: one after the other).
Writes ``benchmarks/results/profile_cpu_<backend>_<digest>.{json,md}`` and prints the Markdown.

On a GPU: ``python benchmarks/profile_cpu.py --device h100 --backend torch [--precision fp16]``
(any registry device present here) measures the same two back-to-back profiles there and writes
``profile_<device>_<backend>[_fp16]_<digest>.{json,md}``; the 10-minute target is the CPU's and is
not applied to other devices (their wall time is reported).
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

from casprof._io import atomic_write_json, atomic_write_text
from casprof.backends.base import Backend, Precision
from casprof.backends.cpu_memory import CpuAllocator
from casprof.backends.memory_format import MemoryFormat
from casprof.build_cache import BuildCache
from casprof.config import DEFAULT_CONFIG, parse_resolution
from casprof.devices import DeviceKind, resolve_device
from casprof.errors import UserInputError
from casprof.hardware import detect_hardware
from casprof.measure import MeasureSettings, iter_costs, run_measurement
from casprof.prebuild import resolve_workers
from casprof.profile import Metric, Profile

RESULTS = Path(__file__).resolve().parent / "results"
TIME_LIMIT_S = 600.0
REL_TOLERANCE = 0.03


def repeatability(a: Profile, b: Profile) -> dict:
    """Per-operation agreement of two profiles' latency c_o."""
    base = a.baseline[Metric.LATENCY_MS.value].value
    rows = []
    for (t, op, ca), (_, _, cb) in zip(iter_costs(a, "latency_ms"), iter_costs(b, "latency_ms")):
        if ca.measurement is None:
            continue
        half_a, half_b = (ca.interval[1] - ca.interval[0]) / 2, (cb.interval[1] - cb.interval[0]) / 2
        tol = max(REL_TOLERANCE * base, half_a, half_b)
        delta = abs(ca.value - cb.value)
        rows.append({"cell_type": t, "op": op, "a_ms": ca.value, "b_ms": cb.value, "abs_diff_ms": delta,
                     "tolerance_ms": tol, "ratio_to_tolerance": delta / tol, "ok": delta <= tol,
                     "p_outside_by_noise": chance_outside(tol, half_a, half_b)})
    worst = max(rows, key=lambda r: r["ratio_to_tolerance"])
    return {"baseline_ms": base, "rows": rows, "worst": worst, "all_ok": all(r["ok"] for r in rows),
            "expected_outside_by_noise": sum(r["p_outside_by_noise"] for r in rows)}


def chance_outside(tol: float, half_a: float, half_b: float) -> float:
    """P(|c_o A - c_o B| > tol) from sampling noise alone: each profile's c_o normal with the
    standard error its 95 % interval implies (half-width / 1.96), the two independent."""
    sd = math.hypot(half_a, half_b) / 1.96
    return math.erfc(tol / (sd * math.sqrt(2))) if sd > 0 else 0.0


def markdown(report: dict) -> str:
    hw = report["hardware"]
    rep = report["repeatability"]
    w = rep["worst"]
    precision = report.get("precision", "fp32")
    gpus = "".join(f"; GPU {g['name']} (driver {g.get('driver')}, CUDA {g.get('cuda_runtime')})" for g in hw.get("gpus") or [])
    limited = report.get("device", "cpu") == "cpu" and report["backend"] == Backend.ONNXRUNTIME.value
    lines = [
        f"# casprof profile benchmark ({report.get('device', 'cpu')}, {report['backend']}, {precision})",
        "",
        f"- machine: CPU {hw['cpu']['model']}, {hw['cpu']['logical_cores']} logical cores{gpus}, fingerprint `{report['hardware_digest']}`",
        f"- backend: {report['backend']} {report['backend_version']}, {precision} on {report.get('torch_device', 'cpu')}, "
        f"timer {report.get('timer', 'perf_counter')}, {report['threads']} threads, "
        f"{report['rounds']} rounds, resolution {report['resolution'][0]}x{report['resolution'][1]}; "
        f"{report.get('instances', 2)} instances of every probe, {report.get('baseline_instances', 2)} of the baseline "
        f"(rotated bracket by bracket, opened {'once per sweep' if 'probes_per_bracket' in report else 'per block'}); "
        f"{report.get('probes_per_bracket', 1)} probe(s) per bracket; {report.get('warmup_passes', 0)} untimed interleaved warm-up pass(es); "
        f"rounds spread over {report.get('sweeps', 1)} sweep(s) of all blocks; "
        f"intra-op thread pool: {report.get('thread_pool', 'per session, no spinning')}"
        + (f"; CPU memory arena: {report['memory_arena']}" if report.get("backend") == "onnxruntime" else "")
        + (f"; CPU allocator: {report['cpu_allocator']}" if report.get("backend") == "torch" and "cpu_allocator" in report else "")
        + (f"; memory format: {report['memory_format']}" if report.get("backend") == "torch" and "memory_format" in report else ""),
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        "",
        "| figure | value | target | met |",
        "| --- | --- | --- | --- |",
    ]
    cached = report.get("build_cache") or [None] * len(report["seconds"])
    phases = report.get("phase_seconds") or [None] * len(report["seconds"])
    for i, (s, got, phase) in enumerate(zip(report["seconds"], cached, phases)):
        how = ""
        if got:
            how = " (" + ", ".join(f"{k}: {v['cached']} from the build cache, {v['built']} built" for k, v in sorted(got.items())) + ")"
        if phase:
            how += " [" + ", ".join(f"{k} {v:.0f} s" for k, v in phase.items()) + "]"
        if limited:
            lines.append(f"| wall time of profile {i + 1}{how} | {s:.0f} s | ≤ {TIME_LIMIT_S:.0f} s (onnxruntime) | "
                         f"{'yes' if s <= TIME_LIMIT_S else 'no'} |")
        else:
            lines.append(f"| wall time of profile {i + 1}{how} | {s:.0f} s | (the 10-minute target is onnxruntime's on the CPU) | |")
    lines += [
        f"| baseline c'_id | {rep['baseline_ms']:.2f} ms | | |",
        f"| worst operation | {w['cell_type']}/{w['op']}: {w['a_ms']:.2f} vs {w['b_ms']:.2f} ms, |Δ| {w['abs_diff_ms']:.2f} ms "
        f"= {w['ratio_to_tolerance']:.2f}× tolerance ({w['tolerance_ms']:.2f} ms) | ≤ 1× | {'yes' if w['ok'] else 'no'} |",
        f"| operations within tolerance | {sum(r['ok'] for r in rep['rows'])}/{len(rep['rows'])} | all | "
        f"{'yes' if rep['all_ok'] else 'no'} |",
        f"| operations expected outside from sampling noise alone | {rep['expected_outside_by_noise']:.1f} "
        "(each c_o normal with the standard error of its 95 % interval) | | |",
        "",
        "| cell | operation | c_o A (ms) | c_o B (ms) | abs diff | tolerance | ok |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rep["rows"]:
        lines.append(f"| {r['cell_type']} | {r['op']} | {r['a_ms']:.3f} | {r['b_ms']:.3f} | {r['abs_diff_ms']:.3f} | "
                     f"{r['tolerance_ms']:.3f} | {'yes' if r['ok'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="a registry device present here (casprof devices), e.g. cpu, h100")
    parser.add_argument("--backend", default="onnxruntime", choices=[b.value for b in Backend if b is not Backend.TENSORRT])
    parser.add_argument("--precision", default="fp32", choices=[p.value for p in Precision])
    parser.add_argument("--rounds", type=int, default=MeasureSettings.rounds)
    parser.add_argument("--ort-shared-pool", action="store_true", help="casprof measure --ort-shared-pool")
    parser.add_argument("--ort-arena-per-session", action="store_true", help="casprof measure --ort-arena-per-session")
    parser.add_argument("--sweeps", type=int, default=MeasureSettings.sweeps, help="casprof measure --sweeps")
    parser.add_argument("--instances", type=int, default=MeasureSettings.instances, help="casprof measure --instances")
    parser.add_argument("--probes-per-bracket", type=int, default=MeasureSettings.probes_per_bracket,
                        help="casprof measure --probes-per-bracket")
    parser.add_argument("--tag", default="", help="suffix of the result files (keeps earlier results)")
    parser.add_argument("--keep-dir", type=Path, default=None,
                        help="copy the first profile here (e.g. profiles/; made if missing), and the second beside it as *-repeat.json")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the result files")
    parser.add_argument("--resolution", default="768x1536", help="input HxW (the targets are for 768x1536)")
    parser.add_argument("--build-cache", action="store_true",
                        help="one new build cache for both profiles: the first fills it, the second reuses its exports and counts")
    parser.add_argument("--build-workers", type=int, default=None,
                        help="casprof measure --build-workers (with --build-cache; default: one per thread)")
    parser.add_argument("--cpu-allocator", default=CpuAllocator.SYSTEM.value, choices=[a.value for a in CpuAllocator],
                        help="casprof measure --cpu-allocator (torch on a CPU)")
    parser.add_argument("--memory-format", default=MemoryFormat.CONTIGUOUS.value, choices=[m.value for m in MemoryFormat],
                        help="casprof measure --memory-format (torch)")
    args = parser.parse_args()
    if args.keep_dir is not None:  # made now, not after the first profile's ten minutes
        if args.keep_dir.exists() and not args.keep_dir.is_dir():
            parser.error(f"--keep-dir {args.keep_dir} is a file, not a folder.")
        args.keep_dir.mkdir(parents=True, exist_ok=True)

    hw = detect_hardware()
    try:  # bad settings: one sentence and status 2 before anything is measured
        device = resolve_device(args.device, hw)
        if device.kind is DeviceKind.CPU and args.precision != Precision.FP32.value:
            parser.error("fp16 is measured only on a CUDA GPU")
        settings = MeasureSettings(backend=args.backend, precision=args.precision,
                                   resolution=parse_resolution(args.resolution, DEFAULT_CONFIG),
                                   threads=hw.cpu.affinity or hw.cpu.logical_cores, rounds=args.rounds,
                                   ort_shared_pool=args.ort_shared_pool, ort_shared_arena=not args.ort_arena_per_session,
                                   sweeps=args.sweeps, instances=args.instances,
                                   cpu_allocator=args.cpu_allocator, probes_per_bracket=args.probes_per_bracket,
                                   memory_format=args.memory_format)
        workers = resolve_workers(args.build_workers, settings.threads)
    except UserInputError as e:
        parser.error(str(e))
    keep = settings.file_tag
    label = "cpu" if device.kind is DeviceKind.CPU else device.spec.name
    profiles, seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = BuildCache(Path(tmp) / "build-cache") if args.build_cache else None
        for i in range(2):
            out = Path(tmp) / f"profile{i}.json"
            start = time.perf_counter()
            profiles.append(run_measurement(DEFAULT_CONFIG, settings, device, hw, out=out, build_cache=cache,
                                             build_workers=workers))
            seconds.append(time.perf_counter() - start)
            print(f"profile {i + 1}: {seconds[-1]:.0f} s", flush=True)
            if args.keep_dir is not None:
                h, w = settings.resolution
                name = f"{label}-{hw.digest()[:8]}-{args.backend}{keep}-{args.precision}-{h}x{w}{'' if i == 0 else '-repeat'}.json"
                shutil.copy(out, args.keep_dir / name)
    report = {
        "benchmark": "profile_cpu",
        "device": label,
        "torch_device": device.torch_device,
        "precision": args.precision,
        "timer": profiles[0].backend.timer,
        "backend": args.backend,
        "backend_version": profiles[0].backend.version,
        "threads": settings.threads,
        "rounds": settings.rounds,
        "instances": settings.instances,
        "baseline_instances": settings.baseline_instances,
        "probes_per_bracket": settings.probes_per_bracket,
        "warmup_passes": settings.warmup_passes,
        "sweeps": settings.sweeps,
        "cpu_allocator": settings.cpu_allocator.value,
        "memory_format": settings.memory_format.value,
        "thread_pool": profiles[0].backend.details.get("intra_op_thread_pool", "per session"),
        "memory_arena": profiles[0].backend.details.get("cpu_memory_arena", "per session"),
        "resolution": list(settings.resolution),
        "hardware": hw.to_dict(),
        "hardware_digest": hw.digest(),
        "date": profiles[0].created,
        "command": f"python benchmarks/profile_cpu.py --device {args.device} --backend {args.backend} --precision {args.precision} --resolution {args.resolution} --rounds {args.rounds} --sweeps {args.sweeps} "
                   f"--instances {args.instances} --probes-per-bracket {args.probes_per_bracket}"
                   + (" --ort-shared-pool" if args.ort_shared_pool else "")
                   + (" --ort-arena-per-session" if args.ort_arena_per_session else "")
                   + (f" --cpu-allocator {args.cpu_allocator}" if settings.cpu_allocator.file_tag else "")
                   + (f" --memory-format {args.memory_format}" if settings.memory_format.file_tag else "")
                   + (f" --build-cache --build-workers {workers}" if args.build_cache else ""),
        "seconds": seconds,
        "phase_seconds": [p.settings.get("phase_seconds") for p in profiles],
        "build_cache": [p.settings.get("build_cache") for p in profiles],
        "repeatability": repeatability(*profiles),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    fp16 = "" if args.precision == Precision.FP32.value else f"_{args.precision}"
    stem = args.results / f"profile_{label}_{args.backend}{keep}{fp16}_{hw.digest()}{'_' + args.tag if args.tag else ''}"
    atomic_write_json(stem.with_suffix(".json"), report)
    md = markdown(report)
    atomic_write_text(stem.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
