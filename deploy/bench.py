"""``cas deploy bench``: frames per second and latency percentiles of a network on each backend.

Per backend, one after another (never two at once, so that one backend's idle threads cannot
steal cores from the other's timed runs): the runner is prepared (export, session or engine,
untimed), warmed up for at least ``warmup_seconds`` (and at least one run), then timed for at
least ``min_iters`` runs **and** at least ``min_seconds``. Each run is timed by the runner itself
(:meth:`casprof.backends.base.Runner.time_once`): ``perf_counter_ns`` around one inference on the
CPU, CUDA events on a GPU. The headline is ``fps = 1000 / median latency``; the report keeps the
raw samples with their median, p90, p99 (numpy's linear interpolation), mean, std, min, max and
a bootstrap 95 % interval of the median.

When a genotype is given, each backend's output on the fixed seeded input is also compared with
PyTorch's fp32 CPU output (:mod:`deploy.parity`), and the network's parameters and MACs are
counted (:mod:`casprof.complexity`).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from casprof import __version__
from casprof._io import atomic_write_json, atomic_write_text, ensure_parent_exists, file_sha256
from casprof.backends import Backend, Precision, RunnerSpec, make_runner, parse_backend
from casprof.backends.cpu_memory import KEEP_ONLY_TORCH_ON_CPU, CpuAllocator, parse_cpu_allocator
from casprof.backends.memory_format import LAYOUT_ONLY_TORCH, MemoryFormat, parse_memory_format
from casprof.backends.onnx_export import check_exporter
from casprof.config import DEFAULT_CONFIG, DEFAULT_RESOLUTION, NetworkConfig, parse_resolution
from casprof.errors import UserInputError
from casprof.genotype import Genotype
from casprof.stats import Measurement
from deploy.build import BuiltNetwork, build_network, load_genotype
from deploy.export import check_export_sha, default_threads, load_export_metadata, onnx_input_shape, seeded_input, torch_reference, utc_now
from deploy.parity import compare_outputs, thresholds_for

REPORT_SCHEMA_VERSION = 1
#: Columns of the CSV report (one row per backend).
CSV_COLUMNS = (
    "backend",
    "backend_version",
    "device",
    "precision",
    "resolution",
    "threads",
    "fps",
    "fps_ratio_to_first",
    "latency_median_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "latency_std_ms",
    "latency_min_ms",
    "latency_max_ms",
    "iterations",
    "parity_max_rel_error",
    "parity_argmax_agreement",
    "parity_passed",
    "hardware_digest",
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchSettings:
    """How to benchmark; ``None`` fields are decided from the source (see :func:`run_bench`)."""

    backends: tuple[str, ...] | None = None
    precision: str = "fp32"
    resolution: str | tuple[int, int] | None = None
    threads: int | None = None
    device: str | None = None
    min_iters: int = 20
    min_seconds: float = 5.0
    warmup_seconds: float = 1.0
    exporter: str = "dynamo"
    seed: int = 0
    cpu_allocator: str = "system"
    memory_format: str = "contiguous"

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_iters": self.min_iters,
            "min_seconds": self.min_seconds,
            "warmup_seconds": self.warmup_seconds,
            "warmup_min_iters": 1,
            "exporter": self.exporter,
            "seed": self.seed,
            "cpu_allocator": self.cpu_allocator,
            "memory_format": self.memory_format,
            "order": "backends timed one after another, each after its own warm-up",
            "percentiles": "numpy linear interpolation over the raw per-run samples",
        }


@dataclass(frozen=True)
class BenchReport:
    """A finished benchmark: ``data`` is the JSON report; Markdown and CSV are views of it."""

    data: dict[str, Any] = field(hash=False)

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.data["results"]

    def markdown(self) -> str:
        return report_markdown(self.data)

    def csv(self) -> str:
        return report_csv(self.data)

    def write(self, path: Path) -> list[Path]:
        """Write ``path`` (JSON) and the same name with ``.md`` and ``.csv``, each atomically."""
        json_path, md_path, csv_path = report_paths(path)
        atomic_write_json(json_path, self.data)
        atomic_write_text(md_path, self.markdown())
        atomic_write_text(csv_path, self.csv())
        return [json_path, md_path, csv_path]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def report_paths(path: Path) -> tuple[Path, Path, Path]:
    """The JSON, Markdown and CSV paths of ``--report PATH`` (PATH is the JSON file)."""
    path = Path(path)
    if path.suffix.lower() in (".md", ".csv"):
        raise UserInputError(f"--report names the JSON file (e.g. report.json); {path.name} would clash with the {path.suffix} view.")
    return path, path.with_suffix(".md"), path.with_suffix(".csv")


def _precision(value: str) -> Precision:
    try:
        return Precision(str(value).lower())
    except ValueError:
        known = ", ".join(p.value for p in Precision)
        raise UserInputError(f"Unknown precision {value!r}; use one of {known}.") from None


def _check_numbers(settings: BenchSettings) -> None:
    if settings.min_iters < 1:
        raise UserInputError(f"--min-iters must be at least 1, got {settings.min_iters}.")
    for flag, value in (("--min-seconds", settings.min_seconds), ("--warmup-seconds", settings.warmup_seconds)):
        if not math.isfinite(value) or value < 0:
            raise UserInputError(f"{flag} must be a finite number of seconds, at least 0; got {value}.")
    check_exporter(settings.exporter)
    parse_cpu_allocator(settings.cpu_allocator)
    parse_memory_format(settings.memory_format)
    if settings.threads is not None and settings.threads < 1:
        raise UserInputError(f"The thread count must be at least 1, got {settings.threads}.")


def _size(text: str | tuple[int, int], config: NetworkConfig) -> tuple[int, int]:
    if isinstance(text, str):
        return parse_resolution(text, config)
    return config.check_resolution(int(text[0]), int(text[1]))


@dataclass(frozen=True)
class _Source:
    kind: str  # genotype | onnx | engine
    description: str
    backends: tuple[Backend, ...]
    size: tuple[int, int]
    channels: int
    built: BuiltNetwork | None = None
    path: Path | None = None
    engine_meta: dict[str, Any] | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def _backends(requested: Sequence[str] | None, default: tuple[Backend, ...]) -> tuple[Backend, ...]:
    if not requested:
        return default
    out: list[Backend] = []
    for name in requested:
        b = parse_backend(name)
        if b not in out:
            out.append(b)
    return tuple(out)


def _resolve_source(
    genotype: Path | Genotype | None,
    onnx: Path | None,
    engine: Path | None,
    weights: Path | None,
    settings: BenchSettings,
) -> _Source:
    given = [name for name, value in (("--genotype", genotype), ("--onnx", onnx), ("--engine", engine)) if value is not None]
    if len(given) != 1:
        raise UserInputError("Give exactly one of --genotype, --onnx and --engine" + (f" (got {', '.join(given)})." if given else "."))
    if weights is not None and genotype is None:
        raise UserInputError("--weights goes with --genotype; an ONNX file or an engine carries its own weights.")

    if genotype is not None:
        backends = _backends(settings.backends, (Backend.TORCH, Backend.ONNXRUNTIME))
        if isinstance(genotype, Genotype):
            g, g_path = genotype, None
        else:
            g_path = Path(genotype)
            g = load_genotype(g_path)
        size = _size(settings.resolution or DEFAULT_RESOLUTION, g.network)
        if weights is not None and not Path(weights).is_file():
            raise UserInputError(f"The weights file {weights} does not exist.")
        built = build_network(g, weights, seed=settings.seed, genotype_path=g_path)
        name = str(g_path) if g_path is not None else f"genotype ({g.search.method}, seed {g.search.seed})"
        return _Source("genotype", name, backends, size, g.network.in_channels, built=built, facts=built.provenance())

    if onnx is not None:
        from casprof.backends.onnxruntime_runner import load_onnx_file

        path = Path(onnx)
        load_onnx_file(path)  # a missing or unreadable file is a user error
        backends = _backends(settings.backends, (Backend.ONNXRUNTIME,))
        if Backend.TORCH in backends:
            raise UserInputError("The torch backend needs a genotype (--genotype); an ONNX file has no PyTorch module.")
        meta = load_export_metadata(path)
        sha = file_sha256(path)
        if meta is not None:
            check_export_sha(path, meta, sha)
        config = NetworkConfig.from_dict(meta["network"]) if meta and isinstance(meta.get("network"), dict) else DEFAULT_CONFIG
        dims = onnx_input_shape(path)
        if len(dims) != 4:
            raise UserInputError(f"The ONNX file {path} takes a {len(dims)}-dimensional input; (N, C, H, W) is expected.")
        static = isinstance(dims[2], int) and isinstance(dims[3], int)
        if settings.resolution is None:
            size = (int(dims[2]), int(dims[3])) if static else DEFAULT_RESOLUTION
        else:
            size = _size(settings.resolution, config)
            if static and size != (dims[2], dims[3]):
                raise UserInputError(f"The ONNX file {path} takes {dims[2]}x{dims[3]} inputs, not {size[0]}x{size[1]}.")
        channels = int(dims[1]) if isinstance(dims[1], int) else config.in_channels
        facts = {"onnx": {"path": str(path), "sha256": sha, "input_shape": dims}, "export_metadata": meta}
        return _Source("onnx", str(path), backends, size, channels, path=path, facts=facts)

    from deploy.engine import check_engine, read_engine_metadata

    assert engine is not None
    path = Path(engine)
    meta = read_engine_metadata(path)
    backends = _backends(settings.backends, (Backend.TENSORRT,))
    if backends != (Backend.TENSORRT,):
        raise UserInputError("A TensorRT engine runs only on the tensorrt backend.")
    check_engine(path, settings.device or "cuda:0")
    shape = meta.get("input_shape") or []
    if len(shape) != 4:
        raise UserInputError(f"The engine metadata of {path} has no 4-dimensional input_shape.")
    size = (int(shape[2]), int(shape[3]))
    if settings.resolution is not None and _size(settings.resolution, DEFAULT_CONFIG) != size:
        raise UserInputError(f"The engine {path} was built for {size[0]}x{size[1]} inputs.")
    return _Source("engine", str(path), backends, size, int(shape[1]), path=path, engine_meta=meta,
                   facts={"engine": {"path": str(path), "sha256": file_sha256(path), "metadata": meta}})


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def _load_average() -> list[float] | None:
    """The host's 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def latency_block(m: Measurement) -> dict[str, Any]:
    """The ``latency_ms`` block of a result: statistics and the raw samples."""
    d = m.to_dict()
    return {
        "median": m.median,
        "p90": m.percentile(90),
        "p99": m.percentile(99),
        "mean": m.mean,
        "std": m.std,
        "min": m.min,
        "max": m.max,
        "iqr": m.iqr,
        "mad": m.mad,
        "ci95_median": d["ci95"],
        "cov": m.cov if math.isfinite(m.cov) else None,
        "n": m.n,
        "noise_warning": d["noise_warning"],
        "samples": list(m.samples),
    }


def time_runner(runner: Any, settings: BenchSettings) -> tuple[Measurement, int, float]:
    """Warm up, then time at least ``min_iters`` runs and ``min_seconds``; return samples, warm-up count, seconds."""
    warm = runner.warmup(min_iters=1, min_seconds=settings.warmup_seconds)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < settings.min_iters or time.perf_counter() - start < settings.min_seconds:
        samples.append(runner.time_once())
    return Measurement(samples=tuple(samples), unit="ms"), warm, time.perf_counter() - start


def _make(backend: Backend, source: _Source, spec: RunnerSpec, settings: BenchSettings) -> Any:
    if backend is not Backend.TORCH:  # the memory format is the torch runner's alone
        spec = dataclasses.replace(spec, memory_format=MemoryFormat.CONTIGUOUS)
    if source.kind == "engine":
        from deploy.engine import EngineRunner

        assert source.path is not None and source.engine_meta is not None
        return EngineRunner(source.path, spec, source.engine_meta)
    if source.kind == "onnx":
        return make_runner(backend, source.path, spec)
    assert source.built is not None
    model = copy.deepcopy(source.built.model)  # a runner may move or cast its module
    if backend is Backend.TORCH:
        return make_runner(backend, model, spec)
    return make_runner(backend, model, spec, exporter=settings.exporter)


def run_bench(
    *,
    genotype: Path | Genotype | None = None,
    onnx: Path | None = None,
    engine: Path | None = None,
    weights: Path | None = None,
    settings: BenchSettings = BenchSettings(),
    report: Path | None = None,
    progress: Progress | None = None,
) -> BenchReport:
    """Benchmark one network (a genotype, an ONNX file or an engine) on one or more backends.

    Defaults: backends ``torch`` and ``onnxruntime`` for a genotype, ``onnxruntime`` for an ONNX
    file, ``tensorrt`` for an engine; device ``cuda:0`` when a backend is ``tensorrt``, else
    ``cpu``; resolution 768x1536 (an ONNX file or engine with a fixed input size: that size);
    threads: all CPUs of this process. With ``report``, the JSON, Markdown and CSV are written.

    Raises:
        UserInputError: bad source, option, resolution or combination; a backend that cannot run
            here (:class:`~casprof.errors.BackendUnavailableError`) — exit 2.
        MeasurementError: the work itself failed (exit 1).
    """
    from casprof.hardware import detect_hardware

    _check_numbers(settings)
    precision = _precision(settings.precision)
    if report is not None:
        for p in report_paths(report):
            ensure_parent_exists(p)
    source = _resolve_source(genotype, onnx, engine, weights, settings)
    layout = parse_memory_format(settings.memory_format)
    if layout is not MemoryFormat.CONTIGUOUS and Backend.TORCH not in source.backends:
        raise UserInputError(LAYOUT_ONLY_TORCH)
    allocator = parse_cpu_allocator(settings.cpu_allocator)
    if allocator is CpuAllocator.KEEP and Backend.TORCH not in source.backends:
        raise UserInputError(KEEP_ONLY_TORCH_ON_CPU)  # the other runners would report it without applying it
    device = settings.device or ("cuda:0" if Backend.TENSORRT in source.backends else "cpu")
    threads = settings.threads or default_threads()
    h, w = source.size
    shape = (1, source.channels, h, w)
    spec = RunnerSpec(input_shape=shape, device=device, precision=precision, threads=threads, seed=settings.seed,
                      cpu_allocator=allocator, memory_format=layout)
    x = seeded_input(shape, settings.seed)
    reference = torch_reference(source.built.model, x) if source.built is not None else None

    hardware = detect_hardware()
    load_before = _load_average()
    digest = hardware.digest()
    software = dataclasses.asdict(hardware.software) if hardware.software is not None else None
    results: list[dict[str, Any]] = []
    for backend in source.backends:
        if progress is not None:
            progress(f"Preparing {backend.value} ({precision.value}, {device}, {threads} thread(s)) at {h}x{w}…")
        runner = _make(backend, source, spec, settings)
        with runner:
            if progress is not None:
                progress(f"Timing {backend.value}: warm-up ≥ {settings.warmup_seconds:g} s, then ≥ {settings.min_iters} runs and ≥ {settings.min_seconds:g} s…")
            m, warm, seconds = time_runner(runner, settings)
            info = runner.info()
            output = runner.infer(x) if reference is not None else None
        parity = None
        if reference is not None and output is not None:
            p = compare_outputs(reference, output, thresholds_for(info.precision, info.device))
            parity = p.to_dict()
        row = {
            "backend": info.backend,
            "backend_version": info.backend_version,
            "precision": info.precision,
            "resolution": [h, w],
            "input_shape": list(shape),
            "threads": info.threads,
            "device": info.device,
            "timer": info.timer,
            "fps": 1000.0 / m.median,
            "fps_ratio_to_first": None,
            "latency_ms": latency_block(m),
            "iterations": m.n,
            "warmup_iterations": warm,
            "timed_seconds": seconds,
            "parity": parity,
            "details": info.details,
            "hardware_digest": digest,
            "software": software,
        }
        results.append(row)
        if progress is not None:
            progress(f"{backend.value}: {row['fps']:.2f} FPS (median {m.median:.2f} ms over {m.n} runs)")
    load_after = _load_average()
    first = results[0]["fps"]
    for row in results:
        row["fps_ratio_to_first"] = row["fps"] / first

    network = None
    if source.built is not None:
        from casprof.complexity import count_macs, count_params

        macs = count_macs(source.built.model, shape)
        network = {
            "params": count_params(source.built.model),
            "macs": macs.total,
            "conv_macs": macs.conv_macs,
            "macs_note": "macs: convolution MACs plus one operation per element of the other work (casprof.complexity)",
            "config": source.built.genotype.network.network_block(input_size=(h, w)),
        }
    data = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": "cas deploy bench",
        "tool_version": __version__,
        "created": utc_now(),
        "source": {"kind": source.kind, "name": source.description, **source.facts},
        "network": network,
        "resolution": [h, w],
        "precision": precision.value,
        "device": device,
        "threads": threads,
        "settings": settings.to_dict(),
        "hardware": hardware.to_dict(),
        "hardware_digest": digest,
        "hardware_description": hardware.describe(),
        "host_load_average": {"before": load_before, "after": load_after, "note": "1, 5 and 15 min; other work on the machine shows here"},
        "results": results,
    }
    out = BenchReport(data)
    if report is not None:
        out.write(report)
    return out


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------


def _parity_cell(parity: dict[str, Any] | None) -> str:
    if parity is None:
        return "–"
    rel = parity["max_rel_error"]
    verdict = "ok" if parity["passed"] else "**FAIL**"
    rel_text = "inf" if rel is None else f"{rel:.1e}"
    return f"{verdict}: rel {rel_text}, {parity['argmax_agreement']:.3%} same class"


def _weights_note(source: dict[str, Any]) -> str | None:
    weights = source.get("weights")
    if not isinstance(weights, dict):
        return None
    if weights.get("source") == "random init":
        return f"random init (seed {weights.get('seed')}): latency and parity only, no accuracy"
    return f"{weights.get('path')} (sha256 {str(weights.get('sha256'))[:12]}…)"


def report_markdown(data: dict[str, Any]) -> str:
    """The report as a Markdown header and one comparison table (one row per backend)."""
    h, w = data["resolution"]
    src = data["source"]
    s = data["settings"]
    lines = [f"# cas deploy bench: {src['kind']} {src['name']} at {h}x{w}", ""]
    lines.append(f"- machine: {data['hardware_description']}, fingerprint `{data['hardware_digest']}`")
    if data.get("network"):
        n = data["network"]
        lines.append(
            f"- network: fingerprint `{n['config']['fingerprint']}`, {n['params'] / 1e6:.3f} M parameters, "
            f"{n['conv_macs'] / 1e9:.2f} G conv MACs ({n['macs'] / 1e9:.2f} G with element-wise work)"
        )
    note = _weights_note(src)
    if note:
        lines.append(f"- weights: {note}")
    lines.append(
        f"- settings: {data['precision']}, device {data['device']}, {data['threads']} thread(s); warm-up ≥ {s['warmup_seconds']:g} s, "
        f"then ≥ {s['min_iters']} runs and ≥ {s['min_seconds']:g} s per backend, backends one after another"
        + (f"; PyTorch CPU allocator: {s['cpu_allocator']}" if "cpu_allocator" in s else "")
        + (f"; PyTorch memory format: {s['memory_format']}" if "memory_format" in s else "")
    )
    load = data.get("host_load_average") or {}
    if load.get("before") and load.get("after"):
        lines.append(
            f"- host load average (1 min) before {load['before'][0]:.2f}, after {load['after'][0]:.2f} "
            "(well above 0 before the run means other work shared the CPU)"
        )
    lines.append(f"- date: {data['created']}, cas {data['tool_version']}")
    lines += [
        "",
        "| backend | version | device | precision | threads | FPS | × first | median ms | p90 ms | p99 ms | mean ± std ms | min ms | runs | parity vs PyTorch |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in data["results"]:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['backend']} | {r['backend_version']} | {r['device']} | {r['precision']} | {r['threads']} | "
            f"{r['fps']:.2f} | {r['fps_ratio_to_first']:.2f} | {lat['median']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | "
            f"{lat['mean']:.2f} ± {lat['std']:.2f} | {lat['min']:.2f} | {lat['n']} | {_parity_cell(r['parity'])} |"
        )
    warnings = [f"{r['backend']}: {r['latency_ms']['noise_warning']}" for r in data["results"] if r["latency_ms"]["noise_warning"]]
    if warnings:
        lines += ["", *(f"- note: {w}" for w in warnings)]
    return "\n".join(lines) + "\n"


def report_csv(data: dict[str, Any]) -> str:
    """The report as CSV, one row per backend (:data:`CSV_COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in data["results"]:
        lat, parity = r["latency_ms"], r["parity"] or {}
        writer.writerow(
            {
                "backend": r["backend"],
                "backend_version": r["backend_version"],
                "device": r["device"],
                "precision": r["precision"],
                "resolution": f"{r['resolution'][0]}x{r['resolution'][1]}",
                "threads": r["threads"],
                "fps": f"{r['fps']:.4f}",
                "fps_ratio_to_first": f"{r['fps_ratio_to_first']:.4f}",
                "latency_median_ms": f"{lat['median']:.4f}",
                "latency_p90_ms": f"{lat['p90']:.4f}",
                "latency_p99_ms": f"{lat['p99']:.4f}",
                "latency_mean_ms": f"{lat['mean']:.4f}",
                "latency_std_ms": f"{lat['std']:.4f}",
                "latency_min_ms": f"{lat['min']:.4f}",
                "latency_max_ms": f"{lat['max']:.4f}",
                "iterations": lat["n"],
                "parity_max_rel_error": "" if parity.get("max_rel_error") is None else f"{parity['max_rel_error']:.3e}",
                "parity_argmax_agreement": "" if "argmax_agreement" not in parity else f"{parity['argmax_agreement']:.6f}",
                "parity_passed": "" if "passed" not in parity else parity["passed"],
                "hardware_digest": r["hardware_digest"],
            }
        )
    return buffer.getvalue()


__all__ = ["BenchReport", "BenchSettings", "CSV_COLUMNS", "latency_block", "report_csv", "report_markdown", "report_paths", "run_bench", "time_runner"]
