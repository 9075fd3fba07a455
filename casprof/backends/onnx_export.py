"""ONNX export of a PyTorch module: one self-contained, checked file, written atomically.

Two exporters (see the notes, §4):

- ``"torchscript"``: ``torch.onnx.export(..., dynamo=False, opset_version=17)``, the legacy
  tracer; about 3x faster to export, which matters when dozens of probe networks are exported.
- ``"dynamo"``: ``torch.onnx.export(..., dynamo=True, opset_version=18, external_data=False,
  optimize=True)``, the ``torch.export``-based exporter (opset 18 is its floor).

The file is exported under a temporary name in the target folder and renamed into place only
after ``onnx.checker`` accepted it, so a failed export leaves nothing behind. The exporters'
chatter (progress lines, deprecation and tracer warnings, "torchvision is not installed") is
silenced; their failures never are: every export error becomes a :class:`MeasurementError`
that names the exporter.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from casprof._io import ensure_parent_exists, file_sha256, give_usual_permissions
from casprof.build_cache import BuildCache
from casprof.errors import BackendUnavailableError, MeasurementError, UserInputError
from casprof.trace_layout import channels_last_weights, trace_input

#: The exporters and the opset each uses by default.
EXPORTERS: dict[str, int] = {"torchscript": 17, "dynamo": 18}

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

#: Loggers of the dynamo exporter that warn about things irrelevant here (e.g. torchvision).
_NOISY_LOGGERS = ("torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export", "torch._export")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportInfo:
    """What an export produced (recorded in profiles, reports and engine metadata)."""

    path: Path
    exporter: str
    opset: int
    sha256: str
    seconds: float
    precision: str = "fp32"
    #: taken from the build cache (a verified copy of an earlier identical export; ``seconds`` is the copy's)
    cached: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "exporter": self.exporter,
            "opset": self.opset,
            "sha256": self.sha256,
            "seconds": self.seconds,
            "precision": self.precision,
            "cached": self.cached,
        }


# --------------------------------------------------------------------------------------------
# Small helpers (also used by the runners for ONNX files they did not export)
# --------------------------------------------------------------------------------------------


def onnx_opset(model_proto: object) -> int:
    """The default-domain opset an ONNX model imports (0 when it imports none)."""
    for entry in getattr(model_proto, "opset_import", ()):
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def uses_external_data(model_proto: object) -> bool:
    """Whether any initializer of the model keeps its bytes in a sidecar file."""
    import onnx

    graph = model_proto.graph  # type: ignore[attr-defined]
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)


def check_exporter(exporter: str) -> str:
    if exporter not in EXPORTERS:
        raise UserInputError(f"Unknown ONNX exporter {exporter!r}; use one of: {', '.join(EXPORTERS)}.")
    return exporter


@contextlib.contextmanager
def quiet_exporter() -> Iterator[io.StringIO]:
    """Swallow the exporters' warnings, progress prints and log warnings (not their errors)."""
    saved = {}
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.ERROR)
    buffer = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _export_device(model: nn.Module, half: bool, device: str | torch.device | None) -> torch.device:
    if device is None:
        first = next(iter(model.parameters()), None)
        dev = first.device if first is not None else torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise UserInputError(f"The device {device!r} is not a valid torch device name such as cpu or cuda:0.") from None
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", 0)
    if half:
        if dev.type != "cuda":
            raise BackendUnavailableError(
                f"fp16 ONNX export needs a CUDA device (the model is cast to half on it), got {dev}."
            )
        if not torch.cuda.is_available() or dev.index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"fp16 ONNX export needs the CUDA device {dev}, which is not present here.")
    return dev


def _cleanup(tmp: Path) -> None:
    for leftover in (tmp, tmp.with_name(tmp.name + ".data")):
        with contextlib.suppress(OSError):
            leftover.unlink()


# --------------------------------------------------------------------------------------------
# The export
# --------------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: Path,
    *,
    exporter: str = "torchscript",
    opset: int | None = None,
    half: bool = False,
    device: str | torch.device | None = None,
    cache: BuildCache | None = None,
) -> ExportInfo:
    """Export ``model`` (in eval mode) to a single self-contained ONNX file at ``path``.

    Args:
        model: the network; its training flag is restored afterwards, its weights untouched.
        input_shape: ``(N, C, H, W)`` of the (static) input, named ``"input"``; the output is
            named ``"logits"``.
        path: the target file; its folder must exist. Written atomically.
        exporter: ``"torchscript"`` (opset 17 by default) or ``"dynamo"`` (opset 18).
        opset: override of the default opset.
        half: export a half-precision copy of the model with a half input (the ONNX then carries
            fp16 itself, as TensorRT's strongly typed networks need). Needs a CUDA ``device``.
        device: where to trace the model (default: where its parameters are).
        cache: a :class:`~casprof.build_cache.BuildCache`: an identical earlier export (same
            module and weights, shape, exporter, opset, precision, code and software) is copied
            from it instead of tracing again (``ExportInfo.cached``), a new one is stored in it.

    Raises:
        UserInputError: unknown exporter, bad opset or missing output folder.
        BackendUnavailableError: ``half=True`` without a CUDA device.
        MeasurementError: the export or the ONNX check failed (nothing is left on disk).
    """
    check_exporter(exporter)
    if opset is None:
        opset = EXPORTERS[exporter]
    if exporter == "dynamo" and opset < 18:
        raise UserInputError(f"The dynamo exporter needs opset 18 or newer, got {opset}.")
    if opset < 11:
        raise UserInputError(f"ONNX opset {opset} is too old; use 17 or newer.")
    path = Path(path)
    ensure_parent_exists(path)
    dev = _export_device(model, half, device)
    dtype = torch.float16 if half else torch.float32

    key = None
    if cache is not None:
        key = export_cache_key(cache, model, input_shape, exporter=exporter, opset=opset, half=half, device=dev)
        start = time.perf_counter()
        sha256 = cache.fetch_onnx(key, path) if key is not None else None
        if sha256 is not None:
            try:
                cached_opset = check_onnx_file(path, exporter)
            except MeasurementError:
                path.unlink(missing_ok=True)
            else:
                return ExportInfo(path=path, exporter=exporter, opset=cached_opset, sha256=sha256,
                                  seconds=time.perf_counter() - start, precision="fp16" if half else "fp32", cached=True)

    was_training = model.training
    work = model
    if half or any(p.device != dev for p in model.parameters()):
        work = copy.deepcopy(model).to(device=dev, dtype=dtype)
    work.eval()

    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    give_usual_permissions(tmp)
    start = time.perf_counter()
    try:
        try:
            # the legacy tracer's full-size forward runs faster in NHWC; the file is the same
            layout = channels_last_weights(work) if exporter == "torchscript" else contextlib.nullcontext(False)
            with quiet_exporter() as chatter, layout as converted:
                dummy = trace_input(tuple(int(s) for s in input_shape), bool(converted), dtype=dtype, device=dev)
                _run_exporter(work, dummy, tmp, opset, exporter)
            if chatter.getvalue():
                _log.debug("%s exporter output:\n%s", exporter, chatter.getvalue())
        except Exception as exc:
            raise MeasurementError(
                f"ONNX export with the {exporter} exporter failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        seconds = time.perf_counter() - start
        actual_opset = check_onnx_file(tmp, exporter)
        os.replace(tmp, path)
    except BaseException:
        _cleanup(tmp)
        raise
    finally:
        model.train(was_training)
    info = ExportInfo(
        path=path,
        exporter=exporter,
        opset=actual_opset,
        sha256=file_sha256(path),
        seconds=seconds,
        precision="fp16" if half else "fp32",
    )
    if cache is not None and key is not None:
        cache.store_onnx(key, path, info.sha256)
    return info


def export_cache_key(cache: BuildCache, model: nn.Module, input_shape: Sequence[int], *, exporter: str = "torchscript",
                     opset: int | None = None, half: bool = False, device: str | torch.device = "cpu") -> str | None:
    """The build-cache key of :func:`export_onnx` with these arguments (None: not cacheable)."""
    request = {"input_shape": [int(x) for x in input_shape], "exporter": exporter,
               "opset": EXPORTERS[exporter] if opset is None else opset, "half": half, "device": torch.device(device).type}
    return cache.onnx_key(model, request)


def _run_exporter(model: nn.Module, dummy: torch.Tensor, path: Path, opset: int, exporter: str) -> None:
    """One ``torch.onnx.export`` call with the toolkit's input and output names: the legacy tracer
    (``torchscript``, constant folding) or ``dynamo`` (one file, no external data, optimised)."""
    if exporter == "torchscript":
        options: dict[str, object] = {"dynamo": False, "do_constant_folding": True}
        # the same file without autograd's bookkeeping in the tracer's full-size forward pass:
        # 50 probes at 768x1536 in 48.5 s instead of 55.3 s
        context: contextlib.AbstractContextManager[object] = torch.no_grad()
    else:
        options = {"dynamo": True, "external_data": False, "optimize": True}
        context = contextlib.nullcontext()
    with context:
        torch.onnx.export(model, (dummy,), str(path), opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], verbose=False, **options)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "(no message)"


def check_onnx_file(tmp: Path, exporter: str) -> int:
    """Load and check the exported file; return its opset."""
    import onnx

    try:
        proto = onnx.load(str(tmp), load_external_data=False)
    except Exception as exc:
        raise MeasurementError(f"The {exporter} exporter wrote an unreadable ONNX file ({_first_line(exc)}).") from exc
    if uses_external_data(proto) or tmp.with_name(tmp.name + ".data").exists():
        raise MeasurementError(f"The {exporter} exporter wrote external weight data; a self-contained file was expected.")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise MeasurementError(f"The ONNX file from the {exporter} exporter fails onnx.checker: {_first_line(exc)}") from exc
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs[:1] != [INPUT_NAME] or outputs[:1] != [OUTPUT_NAME]:
        raise MeasurementError(
            f"The {exporter} exporter named the graph's input/output {inputs}/{outputs}, not {INPUT_NAME!r}/{OUTPUT_NAME!r}."
        )
    return onnx_opset(proto)
