"""``casprof measure``: measure a cost profile on the hardware that is here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from casprof._io import ensure_parent_exists, make_output_folder
from casprof.backends.base import Backend, Precision
from casprof.backends.cpu_memory import KEEP_ONLY_TORCH_ON_CPU, CpuAllocator
from casprof.backends.memory_format import MemoryFormat
from casprof.cli._app import err_console, out_console
from casprof.cli._options import BackendOpt, BuildCacheOpt, BuildWorkersOpt, CpuAllocatorOpt, DeviceOpt, MemoryFormatOpt, NetworkOpt, OutOpt, PrecisionOpt, ResolutionOpt, ResumeOpt, SeedOpt
from casprof.cli._progress import stage_progress
from casprof.cli.common import build_cache_for, build_cache_line, load_network_config, resumable
from casprof.config import NetworkConfig, parse_resolution
from casprof.devices import DeviceKind, get_device, resolve_device
from casprof.display import profile_table
from casprof.errors import BackendUnavailableError, UserInputError
from casprof.estimate import EstimateRequest, Roofline, calibrate_cpu, estimate_profile
from casprof.hardware import detect_hardware
from casprof.measure import MeasureSettings, checkpoint_path, run_measurement
from casprof.prebuild import resolve_workers

def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def measure(
    device: DeviceOpt,
    backend: BackendOpt = Backend.ONNXRUNTIME,
    precision: PrecisionOpt = Precision.FP32,
    resolution: ResolutionOpt = "768x1536",
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rounds: Annotated[int, typer.Option("--rounds", help="Measurement rounds per cell type.")] = 18,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: all cores this process may use).", show_default=False)] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs of each network before the first round.")] = 2,
    sweeps: Annotated[int, typer.Option("--sweeps", help="Passes over all blocks, each running its share of every block's rounds, so each cost spans the whole run.")] = 2,
    warmup_passes: Annotated[int, typer.Option("--warmup-passes", help="Untimed passes over every network instance of a block, in turn, before the first round.")] = 1,
    instances: Annotated[int, typer.Option("--instances", help="Independent instances (sessions) of every probe open at once, used in turn by the rounds; each sweep opens new ones.")] = 1,
    baseline_instances: Annotated[int, typer.Option("--baseline-instances", help="Instances of the all-identity network, rotated bracket by bracket.")] = 6,
    probes_per_bracket: Annotated[int, typer.Option("--probes-per-bracket", help="Probes run between two baseline runs (B p1 p2 B ... for 2); each is paired with the mean of its bracket's two runs.")] = 2,
    ort_shared_pool: Annotated[bool, typer.Option("--ort-shared-pool", help="ONNX Runtime: all sessions on one process-wide, spinning intra-op pool (default: a pool per session, no spinning).")] = False,
    ort_shared_arena: Annotated[bool, typer.Option("--ort-shared-arena/--ort-arena-per-session", help="ONNX Runtime on a CPU: the sessions' activations in one process-wide memory arena, reused block after block (default), or an arena per session (ONNX Runtime's default; every new session's first runs then fault in fresh memory).")] = True,
    exporter: Annotated[str, typer.Option("--exporter", help="ONNX exporter: torchscript (fast) or dynamo.")] = "torchscript",
    cpu_allocator: CpuAllocatorOpt = CpuAllocator.SYSTEM,
    memory_format: MemoryFormatOpt = MemoryFormat.CONTIGUOUS,
    network: NetworkOpt = None,
    seed: SeedOpt = 0,
    build_cache: BuildCacheOpt = True,
    build_workers: BuildWorkersOpt = None,
    estimate: Annotated[bool, typer.Option("--estimate", help="Do not measure: estimate from the registry's spec-sheet figures (a roofline per kernel); the device need not be present. --device cpu calibrates this CPU's peak rate and bandwidth instead.")] = False,
) -> None:
    """Measure c_o = c'_o - c'_id for every operation and cell type into a profile.

    The probe networks are timed in interleaved rounds, --probes-per-bracket at a time between
    runs of the all-identity baseline; the profile keeps every raw sample. Refuses a device that is not present.
    """
    config = load_network_config(network)
    size = parse_resolution(resolution, config)
    if estimate:
        _estimate(device, config, size, precision, out, threads)
        return
    if exporter not in ("torchscript", "dynamo"):
        raise BackendUnavailableError(f"Unknown exporter {exporter!r}; use torchscript or dynamo.")
    hardware = detect_hardware()
    resolved = resolve_device(device, hardware)
    if resolved.kind is DeviceKind.CPU and backend is Backend.TENSORRT:
        raise BackendUnavailableError("TensorRT runs only on a CUDA GPU; use --backend onnxruntime or torch on the CPU.")
    if resolved.kind is DeviceKind.CPU and precision is Precision.FP16:
        raise BackendUnavailableError("fp16 is measured only on a CUDA GPU; use --precision fp32 on the CPU.")
    if ort_shared_pool and backend is not Backend.ONNXRUNTIME:
        raise UserInputError("--ort-shared-pool applies to the onnxruntime backend only.")
    if cpu_allocator is CpuAllocator.KEEP and resolved.kind is not DeviceKind.CPU:
        raise UserInputError(KEEP_ONLY_TORCH_ON_CPU)
    settings = MeasureSettings(
        backend=backend,
        precision=precision,
        resolution=size,
        threads=threads if threads is not None else _default_threads(),
        rounds=rounds,
        warmup_iters=warmup,
        warmup_passes=warmup_passes,
        sweeps=sweeps,
        seed=seed,
        exporter=exporter,
        instances=instances,
        baseline_instances=baseline_instances,
        probes_per_bracket=probes_per_bracket,
        ort_shared_pool=ort_shared_pool,
        ort_shared_arena=ort_shared_arena,
        cpu_allocator=cpu_allocator,
        memory_format=memory_format,
    )
    cache = build_cache_for(build_cache)
    workers = resolve_workers(build_workers, settings.threads)
    h, w = size
    if out is None:
        out = Path("profiles") / f"{resolved.spec.name}-{backend.value}{settings.file_tag}-{precision.value}-{h}x{w}.json"
        make_output_folder(out.parent)
    ensure_parent_exists(out)
    err_console.print(
        f"Measuring [bold]{resolved.spec.name}[/] ({resolved.matched_name}) with {backend.value}/{precision.value} "
        f"at {h}x{w}, {settings.threads} thread(s), {rounds} rounds → {out}",
        highlight=False,
    )
    with resumable(checkpoint_path(out), "rounds", resume), stage_progress() as on_progress:
        profile = run_measurement(config, settings, resolved, hardware, out=out, resume=resume, progress=on_progress,
                                  build_cache=cache, build_workers=workers)
    out_console.print(profile_table(profile))
    line = build_cache_line(profile.settings, cache)
    if line:
        err_console.print(line, highlight=False)
    err_console.print(f"Wrote {out}")


def _estimate(device: str, config: NetworkConfig, size: tuple[int, int], precision: Precision, out: Optional[Path],
              threads: Optional[int]) -> None:
    """``measure --estimate``: a roofline estimate from spec-sheet (or calibrated) figures."""
    spec = get_device(device)
    if spec.is_generic and spec.kind is DeviceKind.CPU:
        if precision is Precision.FP16:
            raise UserInputError("fp16 is estimated only for GPUs; use --precision fp32 for the CPU.")
        err_console.print("Calibrating this CPU's fp32 rate and memory bandwidth (a few seconds)…")
        roofline = calibrate_cpu(threads if threads is not None else _default_threads())
    else:
        roofline = Roofline.from_device(spec, precision)
    h, w = size
    if out is None:
        out = Path("profiles") / f"{spec.name}-estimated-{precision.value}-{h}x{w}.json"
        make_output_folder(out.parent)
    ensure_parent_exists(out)
    err_console.print(
        f"[bold red]ESTIMATING[/] (not measuring) [bold]{spec.name}[/] at {h}x{w} {precision.value}: "
        f"{roofline.peak_flops / 1e12:.3g} TFLOP/s, {roofline.bandwidth / 1e9:.4g} GB/s, "
        f"{roofline.launch_overhead_s * 1e6:g} us per kernel → {out}",
        highlight=False,
    )
    request = EstimateRequest(device=spec, roofline=roofline, precision=precision, resolution=size)
    with stage_progress() as on_progress:
        profile = estimate_profile(config, request, progress=on_progress)
    profile.save(out)
    out_console.print(profile_table(profile))
    err_console.print(f"Wrote {out} (an ESTIMATE, not a measurement)")


def register(app: typer.Typer) -> None:
    app.command()(measure)
