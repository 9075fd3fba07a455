"""``cas deploy export`` and ``cas deploy bench``: thin commands over :mod:`deploy.export` and :mod:`deploy.bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from casprof.backends.base import Backend, Precision
from casprof.backends.cpu_memory import CpuAllocator
from casprof.backends.memory_format import MemoryFormat
from casprof.cli._app import err_console, make_app
from casprof.cli._options import CpuAllocatorOpt, GenotypeOpt, JsonFlag, MemoryFormatOpt, PrecisionOpt, ResolutionOpt
from casprof.errors import UserInputError
from deploy.export import TrtPrecision


app = make_app("deploy", "Export a genotype's network to ONNX / TensorRT and benchmark it.")

OptionalGenotypeOpt = Annotated[
    Optional[Path], typer.Option("--genotype", "-g", help="A genotype file (JSON).", show_default=False)
]
WeightsOpt = Annotated[
    Optional[Path],
    typer.Option("--weights", "-w", help="A state_dict file (torch.save(model.state_dict())); default: seeded random init.", show_default=False),
]
ThreadsOpt = Annotated[
    Optional[int], typer.Option("--threads", help="CPU threads (default: all CPUs this process may use).", show_default=False)
]
ExporterOpt = Annotated[str, typer.Option("--exporter", help="ONNX exporter: dynamo (opset 18) or torchscript (opset 17).")]


def _progress(text: str) -> None:
    err_console.print(text, highlight=False, markup=False)


def export(
    genotype: GenotypeOpt,
    weights: WeightsOpt = None,
    onnx: Annotated[
        Optional[Path], typer.Option("--onnx", help="Output ONNX file (default: beside the genotype).", show_default=False)
    ] = None,
    trt: Annotated[
        Optional[TrtPrecision],
        typer.Option("--trt", help="Also build a TensorRT engine in this precision (needs TensorRT and a GPU).", show_default=False),
    ] = None,
    resolution: ResolutionOpt = "768x1536",
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic height and width (dynamo exporter).")] = False,
    exporter: ExporterOpt = "dynamo",
    engine: Annotated[
        Optional[Path], typer.Option("--engine", help="Output engine file for --trt (default: beside the ONNX file).", show_default=False)
    ] = None,
    timing_cache: Annotated[
        Optional[Path],
        typer.Option(
            "--timing-cache",
            help="TensorRT timing cache for --trt: a file, or a folder that keeps one per TensorRT version and GPU; "
            "read before the build and updated after it (rebuilds go faster).",
            show_default=False,
        ),
    ] = None,
    threads: ThreadsOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Export a genotype's network to one ONNX file, verified against PyTorch in ONNX Runtime.

    Writes the ONNX file and <onnx>.json metadata only when parity holds (exit 1 otherwise).
    With --trt, then builds a TensorRT engine; where TensorRT or a GPU is missing that step
    exits 2 after the ONNX file was written.
    """
    from deploy.export import build_trt_engine, describe, export_genotype

    if trt is not None and dynamic:
        raise UserInputError("--trt builds an engine for one input size (--resolution); drop --dynamic.")
    if engine is not None and trt is None:
        raise UserInputError("--engine names the engine that --trt builds; add --trt fp32, fp16 or int8.")
    if timing_cache is not None:
        if trt is None:
            raise UserInputError("--timing-cache goes with --trt (it is the TensorRT builder's cache).")
        if not timing_cache.is_dir() and not timing_cache.parent.is_dir():
            raise UserInputError(f"The folder of the timing cache {timing_cache} does not exist.")
    result = export_genotype(
        genotype,
        weights=weights,
        onnx_path=onnx,
        resolution=resolution,
        dynamic=dynamic,
        exporter=exporter,
        int8=trt is TrtPrecision.INT8,
        threads=threads,
        progress=_progress,
    )
    if json_out:
        typer.echo(json.dumps(result.metadata, indent=2))
    else:
        typer.echo(describe(result))
    if trt is not None:
        path = build_trt_engine(result, trt, engine_path=engine, timing_cache=timing_cache, progress=_progress)
        typer.echo(f"Wrote {path} and {path.name}.json")


def bench(
    genotype: OptionalGenotypeOpt = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="An ONNX file to benchmark.", show_default=False)] = None,
    engine: Annotated[
        Optional[Path], typer.Option("--engine", help="A TensorRT engine built by `cas deploy export --trt`.", show_default=False)
    ] = None,
    weights: WeightsOpt = None,
    backend: Annotated[
        Optional[list[Backend]],
        typer.Option("--backend", "-b", help="Backend to time (repeatable; default: torch and onnxruntime for a genotype).", show_default=False),
    ] = None,
    precision: PrecisionOpt = Precision.FP32,
    resolution: Annotated[
        Optional[str], typer.Option("--resolution", "-r", help="Input size HxW (default 768x1536, or the file's fixed size).", show_default=False)
    ] = None,
    threads: ThreadsOpt = None,
    device: Annotated[
        Optional[str], typer.Option("--device", help="cpu or cuda:N (default: cuda:0 for tensorrt, else cpu).", show_default=False)
    ] = None,
    min_iters: Annotated[int, typer.Option("--min-iters", help="Timed runs per backend, at least.")] = 20,
    min_seconds: Annotated[float, typer.Option("--min-seconds", help="Timed seconds per backend, at least.")] = 5.0,
    warmup_seconds: Annotated[float, typer.Option("--warmup-seconds", help="Warm-up seconds per backend, at least.")] = 1.0,
    exporter: ExporterOpt = "dynamo",
    cpu_allocator: CpuAllocatorOpt = CpuAllocator.SYSTEM,
    memory_format: MemoryFormatOpt = MemoryFormat.CONTIGUOUS,
    report: Annotated[
        Optional[Path],
        typer.Option("--report", help="Write PATH (JSON) and the same name with .md and .csv.", show_default=False),
    ] = None,
) -> None:
    """Frames per second and latency percentiles on each backend, as one comparison table.

    The Markdown table is always printed; --report also writes JSON, Markdown and CSV.
    """
    from deploy.bench import BenchSettings, run_bench

    settings = BenchSettings(
        backends=tuple(b.value for b in backend) if backend else None,
        precision=precision.value,
        resolution=resolution,
        threads=threads,
        device=device,
        min_iters=min_iters,
        min_seconds=min_seconds,
        warmup_seconds=warmup_seconds,
        exporter=exporter,
        cpu_allocator=cpu_allocator.value,
        memory_format=memory_format.value,
    )
    result = run_bench(genotype=genotype, onnx=onnx, engine=engine, weights=weights, settings=settings, report=report, progress=_progress)
    typer.echo(result.markdown(), nl=False)
    if report is not None:
        _progress(f"Wrote {report} and its .md and .csv views")


app.command()(export)
app.command()(bench)
