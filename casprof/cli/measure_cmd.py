"""``casprof measure``: measure a cost profile on the hardware that is here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from casprof.backends.base import Backend, Precision
from casprof.cli._app import err_console, out_console
from casprof.cli._options import BackendOpt, DeviceOpt, NetworkOpt, OutOpt, PrecisionOpt, ResolutionOpt, SeedOpt
from casprof.cli.common import load_network_config
from casprof.config import parse_resolution
from casprof.devices import DeviceKind, resolve_device
from casprof.display import profile_table
from casprof.errors import BackendUnavailableError
from casprof.hardware import detect_hardware
from casprof.measure import MeasureSettings, Progress as ProgressEvent, checkpoint_path, run_measurement


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
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted measurement of the same --out.")] = False,
    rounds: Annotated[int, typer.Option("--rounds", help="Measurement rounds per cell type.")] = 12,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: all cores this process may use).", show_default=False)] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs of each network before the first round.")] = 2,
    instances: Annotated[int, typer.Option("--instances", help="Independent instances (sessions) of every network, used in turn by the rounds.")] = 2,
    exporter: Annotated[str, typer.Option("--exporter", help="ONNX exporter: torchscript (fast) or dynamo.")] = "torchscript",
    network: NetworkOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Measure c_o = c'_o - c'_id for every operation and cell type into a profile.

    The probe networks are timed in interleaved rounds, each run bracketed by runs of the
    all-identity baseline; the profile keeps every raw sample. Refuses a device that is not present.
    """
    config = load_network_config(network)
    size = parse_resolution(resolution, config)
    if exporter not in ("torchscript", "dynamo"):
        raise BackendUnavailableError(f"Unknown exporter {exporter!r}; use torchscript or dynamo.")
    hardware = detect_hardware()
    resolved = resolve_device(device, hardware)
    if resolved.kind is DeviceKind.CPU and backend is Backend.TENSORRT:
        raise BackendUnavailableError("TensorRT runs only on a CUDA GPU; use --backend onnxruntime or torch on the CPU.")
    if resolved.kind is DeviceKind.CPU and precision is Precision.FP16:
        raise BackendUnavailableError("fp16 is measured only on a CUDA GPU; use --precision fp32 on the CPU.")
    settings = MeasureSettings(
        backend=backend,
        precision=precision,
        resolution=size,
        threads=threads if threads is not None else _default_threads(),
        rounds=rounds,
        warmup_iters=warmup,
        seed=seed,
        exporter=exporter,
        instances=instances,
    )
    h, w = size
    if out is None:
        out = Path("profiles") / f"{resolved.spec.name}-{backend.value}-{precision.value}-{h}x{w}.json"
        out.parent.mkdir(exist_ok=True)
    err_console.print(
        f"Measuring [bold]{resolved.spec.name}[/] ({resolved.matched_name}) with {backend.value}/{precision.value} "
        f"at {h}x{w}, {settings.threads} thread(s), {rounds} rounds → {out}",
        highlight=False,
    )
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"), console=err_console, transient=False,
    ) as bar:
        tasks: dict[str, int] = {}

        def on_progress(event: ProgressEvent) -> None:
            if event.stage not in tasks:
                tasks[event.stage] = bar.add_task(event.stage, total=event.total, detail="")
            bar.update(tasks[event.stage], completed=event.done, total=event.total, detail=event.detail)

        try:
            profile = run_measurement(config, settings, resolved, hardware, out=out, resume=resume, progress=on_progress)
        except KeyboardInterrupt:
            err_console.print(f"Interrupted; finished rounds are kept in {checkpoint_path(out)}. Resume with --resume.")
            raise typer.Exit(130) from None
    out_console.print(profile_table(profile))
    err_console.print(f"Wrote {out}")


def register(app: typer.Typer) -> None:
    app.command()(measure)
