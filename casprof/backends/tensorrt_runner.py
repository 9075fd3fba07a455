"""TensorRT runner (TensorRT 10.12+ and 11.x, strongly typed networks only).

``tensorrt`` is imported inside functions only, so this module imports on any machine. The
build follows the current API: a ``STRONGLY_TYPED`` network (a no-op flag on 11.x, required
for the same behaviour on 10.12+), no ``BuilderFlag.FP16/INT8``; fp16 comes from the ONNX file
itself (the module is exported in half precision), so an engine can never silently be fp32 when
fp16 was asked for. Buffers are torch CUDA tensors, I/O is name-based
(``set_tensor_address`` + ``execute_async_v3``) on a dedicated non-default stream, timed with
CUDA events on that stream.

Pure logic (dtype mapping, cache keys, metadata, error messages, precision of an ONNX file) is
in plain functions that are tested without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from casprof._io import atomic_write_bytes, file_sha256
from casprof.backends.base import Backend, Precision, Runner, RunnerInfo, RunnerSpec, split_model_or_path
from casprof.backends.onnx_export import ExportInfo, check_exporter, export_onnx
from casprof.backends.torch_runner import cuda_device_details, resolve_device
from casprof.errors import BackendUnavailableError, MeasurementError, UserInputError

TRT_NOT_INSTALLED = (
    "TensorRT is not installed; install the 'tensorrt' extra (pip install 'cas-toolkit[tensorrt]') "
    "on a machine with an NVIDIA GPU."
)
TRT_NO_GPU = "TensorRT needs an NVIDIA GPU, but torch sees no CUDA device here."

#: Default builder workspace (``MemoryPoolType.WORKSPACE``).
DEFAULT_WORKSPACE_BYTES = 1 << 30

#: TensorRT ``DataType`` names and the torch dtypes of their buffers.
_TRT_TO_TORCH: dict[str, torch.dtype] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "FP8": torch.float8_e4m3fn,
}

#: ONNX ``TensorProto`` element type of float16, and of the other float types (float, double, bfloat16).
_ONNX_FLOAT16 = 10
_ONNX_OTHER_FLOATS = (1, 11, 16)


# --------------------------------------------------------------------------------------------
# Pure functions (tested without TensorRT)
# --------------------------------------------------------------------------------------------


def trt_dtype_to_torch(name: str) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` given by name (``"HALF"``, ``"DataType.FLOAT"``)."""
    key = str(name).rsplit(".", 1)[-1].upper()
    try:
        return _TRT_TO_TORCH[key]
    except KeyError:
        known = ", ".join(_TRT_TO_TORCH)
        raise MeasurementError(f"The TensorRT data type {name!r} has no torch buffer type here (known: {known}).") from None


def format_parser_errors(onnx_path: Path | str, errors: Sequence[str]) -> str:
    """One message for all the errors of ``OnnxParser`` on a file."""
    cleaned = [" ".join(str(e).split()) for e in errors if str(e).strip()]
    if not cleaned:
        return f"TensorRT could not parse {onnx_path} (the parser gave no reason)."
    return f"TensorRT could not parse {onnx_path}: " + "; ".join(cleaned) + "."


def format_build_errors(errors: Sequence[str]) -> str:
    """One message for a failed ``build_serialized_network``."""
    cleaned = [" ".join(str(e).split()) for e in errors if str(e).strip()]
    reason = "; ".join(cleaned[-3:]) if cleaned else "the builder gave no reason"
    return f"TensorRT failed to build the engine: {reason}."


def engine_cache_key(
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    onnx_sha256: str,
    input_shape: Sequence[int],
    precision: str,
) -> str:
    """A short key naming an engine: engines depend on all of these (notes, §1)."""
    payload = json.dumps(
        {
            "trt": trt_version,
            "gpu": gpu_name,
            "cc": compute_capability,
            "onnx": onnx_sha256,
            "shape": [int(s) for s in input_shape],
            "precision": precision,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def timing_cache_name(*, trt_version: str, gpu_name: str, compute_capability: str) -> str:
    """A file name for a timing cache valid for one TensorRT version on one GPU model."""
    gpu = "".join(c if c.isalnum() else "-" for c in gpu_name).strip("-").lower() or "gpu"
    return f"trt-{trt_version}-sm{compute_capability.replace('.', '')}-{gpu}.timing-cache"


def timing_cache_file(path: Path, *, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """The timing-cache file to use for ``path``: inside an existing folder, a file named for this
    TensorRT version and GPU (:func:`timing_cache_name`); otherwise ``path`` itself."""
    path = Path(path)
    if path.is_dir():
        return path / timing_cache_name(trt_version=trt_version, gpu_name=gpu_name, compute_capability=compute_capability)
    return path


def input_needs_shape(what: str, engine_shape: Sequence[int], requested: Sequence[int]) -> bool:
    """Whether an input of ``engine_shape`` (``-1`` for a dynamic dimension) must be given
    ``requested`` at run time; refuses shapes that cannot take it.

    Raises:
        UserInputError: another rank, or a fixed dimension that differs.
    """
    engine_shape, requested = tuple(int(d) for d in engine_shape), tuple(int(d) for d in requested)
    if len(engine_shape) != len(requested) or any(e != -1 and e != r for e, r in zip(engine_shape, requested)):
        shown = "x".join("?" if d == -1 else str(d) for d in engine_shape)
        raise UserInputError(f"{what} takes inputs of shape {shown}, not {'x'.join(map(str, requested))}.")
    return -1 in engine_shape


def engine_metadata(
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    onnx_sha256: str,
    precision: str,
    input_shape: Sequence[int] | None = None,
    exporter: str | None = None,
    opset: int | None = None,
    workspace_bytes: int | None = DEFAULT_WORKSPACE_BYTES,
    tf32: bool | None = None,
    timing_cache_sha256: str | None = None,
    io: Mapping[str, Any] | None = None,
    engine_sha256: str | None = None,
) -> dict[str, Any]:
    """What the deploy stage writes beside an engine (an engine only runs on the same GPU
    model with the same TensorRT version, and is a trust boundary: it runs native code)."""
    meta: dict[str, Any] = {
        "tensorrt_version": trt_version,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "strongly_typed": True,
        "input_shape": [int(s) for s in input_shape] if input_shape is not None else None,
        "exporter": exporter,
        "opset": opset,
        "workspace_bytes": workspace_bytes,
        "tf32": tf32,
        "timing_cache_sha256": timing_cache_sha256,
        "io": dict(io) if io is not None else None,
        "engine_sha256": engine_sha256,
    }
    if input_shape is not None:
        meta["cache_key"] = engine_cache_key(
            trt_version=trt_version,
            gpu_name=gpu_name,
            compute_capability=compute_capability,
            onnx_sha256=onnx_sha256,
            input_shape=input_shape,
            precision=precision,
        )
    return meta


def onnx_precision(model_proto: Any) -> str:
    """``"fp16"`` when an ONNX model's weights are mostly float16, else ``"fp32"``.

    A strongly typed engine runs in the ONNX file's own types, so this is the precision an
    engine built from it will have. Weights decide (more float16 than float32/bfloat16/double
    values among the initializers and ``Constant`` tensors): a float32 model with a single
    float16 ``Cast`` somewhere is not an fp16 engine. A model without float weights is fp16
    when its inputs, outputs or casts are.
    """
    graph = model_proto.graph
    tensors = list(graph.initializer) + [
        a.t for node in graph.node if node.op_type == "Constant" for a in node.attribute if a.name == "value"
    ]
    half = sum(math.prod(t.dims) for t in tensors if t.data_type == _ONNX_FLOAT16)
    other = sum(math.prod(t.dims) for t in tensors if t.data_type in _ONNX_OTHER_FLOATS)
    if half or other:
        return "fp16" if half > other else "fp32"
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type == _ONNX_FLOAT16:
            return "fp16"
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == _ONNX_FLOAT16 for a in node.attribute):
            return "fp16"
    return "fp32"


def precision_mismatch_message(onnx_path: Path | str, asked: str, carried: str) -> str | None:
    """The sentence refusing an ONNX file whose precision is not the one asked for, or None."""
    if asked == carried:
        return None
    if asked == "fp16":
        return (
            f"The ONNX file {onnx_path} has no float16 tensors, so a strongly typed TensorRT engine would be fp32; "
            "export it in fp16 first (e.g. ModelOpt AutoCast) or ask for fp32."
        )
    return f"The ONNX file {onnx_path} carries float16 tensors, so its TensorRT engine would not be fp32; ask for fp16."


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------


def tensorrt_unavailable_reason() -> str | None:
    """One sentence saying why TensorRT cannot run here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return TRT_NOT_INSTALLED
    except Exception as exc:  # a broken install (missing libnvinfer, CUDA mismatch)
        return f"TensorRT is installed but cannot be imported ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})."
    if not torch.cuda.is_available():
        return TRT_NO_GPU
    return None


def tensorrt_version() -> str | None:
    try:
        import tensorrt as trt
    except Exception:
        return None
    return str(trt.__version__)


# --------------------------------------------------------------------------------------------
# Build (needs TensorRT and a GPU)
# --------------------------------------------------------------------------------------------


def make_trt_logger(trt: Any) -> Any:
    class _CollectingLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(msg)

    return _CollectingLogger()


def build_serialized_engine(
    onnx_path: Path,
    *,
    input_shape: Sequence[int] | None = None,
    timing_cache: Path | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    logger: Any = None,
) -> tuple[bytes, dict[str, Any]]:
    """Parse an ONNX file into a strongly typed network and build a serialized engine.

    An input with dynamic dimensions gets an optimization profile fixed at ``input_shape``
    (min = opt = max: the engine is built for the one size it will run at). Reads the timing
    cache from ``timing_cache`` when it exists (refusing one TensorRT cannot use, rather than
    building without it) and writes the updated cache back atomically. Returns the plan bytes
    and build facts (TF32 flag, cache digest).

    Raises:
        UserInputError: a dynamic input and no ``input_shape``, a shape the input cannot take,
            or an unusable timing cache.
        MeasurementError: the parser or the builder failed (with TensorRT's own errors).
    """
    import tensorrt as trt

    logger = logger or make_trt_logger(trt)
    errors: list[str] = getattr(logger, "errors", [])
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        parse_errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise MeasurementError(format_parser_errors(onnx_path, parse_errors or errors))

    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if -1 not in tuple(tensor.shape):
            continue
        if input_shape is None:
            raise UserInputError(f"The ONNX model {onnx_path} has a dynamic input {tensor.name!r}; give the input shape to build for.")
        input_needs_shape(f"The ONNX model {onnx_path}", tuple(tensor.shape), input_shape)
        if profile is None:
            profile = builder.create_optimization_profile()
        shape = tuple(int(d) for d in input_shape)
        profile.set_shape(tensor.name, shape, shape, shape)
    if profile is not None and config.add_optimization_profile(profile) < 0:
        raise MeasurementError(format_build_errors(["the optimization profile was refused"] + errors))

    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    seen = len(errors)
    cache = config.create_timing_cache(cache_bytes)
    if cache is None or len(errors) > seen or not config.set_timing_cache(cache, ignore_mismatch=False):
        reason = " ".join(str(errors[-1]).split()) if len(errors) > seen else "it was made on another GPU"
        raise UserInputError(
            f"The timing cache {timing_cache} cannot be used here ({reason.rstrip('.')}); delete it or pass another path."
        )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise MeasurementError(format_build_errors(errors))
    plan_bytes = bytes(memoryview(plan))
    facts: dict[str, Any] = {"tf32": bool(config.get_flag(trt.BuilderFlag.TF32)), "timing_cache_sha256": None}
    new_cache = bytes(memoryview(config.get_timing_cache().serialize()))
    facts["timing_cache_sha256"] = hashlib.sha256(new_cache).hexdigest()
    if timing_cache is not None:
        atomic_write_bytes(Path(timing_cache), new_cache)
    return plan_bytes, facts


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


class TensorRTRunner(Runner):
    """An engine built from a module (exported to ONNX here) or from an ONNX file.

    Args:
        model_or_onnx_path: a PyTorch module or the path of an ``.onnx`` file.
        spec: a ``cuda:N`` device; fp16 means the ONNX itself is fp16 (the module is exported
            in half precision; a given file must already carry float16).
        exporter: ``"dynamo"`` (default) or ``"torchscript"``.
        timing_cache: a timing-cache file read before and written after the build.
        workspace_bytes: the builder's workspace pool limit.
    """

    backend = Backend.TENSORRT

    def __init__(
        self,
        model_or_onnx_path: nn.Module | str | Path,
        spec: RunnerSpec,
        exporter: str = "dynamo",
        timing_cache: Path | None = None,
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
        opset: int | None = None,
    ) -> None:
        super().__init__(spec)
        self._module: nn.Module | None
        self._given_path: Path | None
        self._module, self._given_path = split_model_or_path(model_or_onnx_path, "tensorrt")
        self.exporter = check_exporter(exporter) if self._module is not None else None
        self.opset = opset
        self.timing_cache = Path(timing_cache) if timing_cache is not None else None
        self.workspace_bytes = int(workspace_bytes)
        self.export_info: ExportInfo | None = None
        self.onnx_path: Path | None = None
        self.onnx_sha256: str | None = None
        self.onnx_opset: int | None = None
        self.plan: bytes | None = None
        self._build_facts: dict[str, Any] = {}
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._device: torch.device | None = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: torch.cuda.Stream | None = None
        self._buffers: dict[str, torch.Tensor] = {}
        self._input_name = ""
        self._output_name = ""
        self._io: dict[str, dict[str, Any]] = {}

    # --- life cycle -----------------------------------------------------------------------
    def _activate(self) -> None:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(reason)
        dev = resolve_device(self.spec.device)
        if dev.type != "cuda":
            raise BackendUnavailableError(f"TensorRT runs on a CUDA device; use cuda:N, not {self.spec.device}.")
        if dev.index >= torch.cuda.device_count():
            raise BackendUnavailableError(
                f"The device {dev} was requested but only {torch.cuda.device_count()} CUDA device(s) are present."
            )
        self._device = dev
        try:
            with torch.cuda.device(dev):
                self._prepare_onnx(dev)
                self._build_and_load()
        except BaseException:
            self._release()
            raise

    def _prepare_onnx(self, dev: torch.device) -> None:
        import onnx

        precision = Precision(self.spec.precision).value
        if self._module is not None:
            if self.spec.workdir is not None:
                folder = Path(self.spec.workdir)
                if not folder.is_dir():
                    raise UserInputError(f"The work folder {folder} does not exist.")
            else:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="casprof-trt-")
                folder = Path(self._tmpdir.name)
            assert self.exporter is not None
            name = f"{type(self._module).__name__}-{self.exporter}-{precision}-{uuid.uuid4().hex[:8]}.onnx"
            info = export_onnx(
                self._module,
                self.spec.input_shape,
                folder / name,
                exporter=self.exporter,
                opset=self.opset,
                half=precision == "fp16",
                device=dev if precision == "fp16" else "cpu",
                cache=self.spec.build_cache,
            )
            self.export_info = info
            self.onnx_path, self.onnx_sha256, self.onnx_opset = info.path, info.sha256, info.opset
            proto = onnx.load(str(info.path), load_external_data=False)
        else:
            from casprof.backends.onnx_export import onnx_opset
            from casprof.backends.onnxruntime_runner import load_onnx_file

            assert self._given_path is not None
            proto = load_onnx_file(self._given_path)
            self.onnx_path = self._given_path
            self.onnx_sha256 = file_sha256(self._given_path)
            self.onnx_opset = onnx_opset(proto)
        message = precision_mismatch_message(self.onnx_path, precision, onnx_precision(proto))
        if message is not None:
            raise UserInputError(message)

    def _build_and_load(self) -> None:
        import tensorrt as trt

        assert self.onnx_path is not None and self._device is not None
        logger = make_trt_logger(trt)
        cache = None
        if self.timing_cache is not None:
            gpu = cuda_device_details(self._device)
            cache = timing_cache_file(
                self.timing_cache,
                trt_version=tensorrt_version() or "unknown",
                gpu_name=gpu["device_name"],
                compute_capability=gpu["compute_capability"],
            )
        self.plan, self._build_facts = build_serialized_engine(
            self.onnx_path,
            input_shape=self.spec.input_shape,
            timing_cache=cache,
            workspace_bytes=self.workspace_bytes,
            logger=logger,
        )
        self._build_facts["timing_cache"] = str(cache) if cache is not None else None
        self._load_plan(trt, logger, f"The ONNX model {self.onnx_path}")

    def _load_plan(self, trt: Any, logger: Any, what: str) -> None:
        """Deserialize ``self.plan``, create the context and bind torch CUDA buffers to every I/O tensor."""
        engine = trt.Runtime(logger).deserialize_cuda_engine(self.plan)
        if engine is None:
            raise MeasurementError(format_build_errors(["the serialized engine could not be deserialized"] + logger.errors))
        context = engine.create_execution_context()
        if context is None:
            raise MeasurementError(format_build_errors(["no execution context could be created"] + logger.errors))
        self._engine, self._context = engine, context
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            (inputs if mode == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or not outputs:
            raise UserInputError(f"{what} must have one input and an output, found {len(inputs)} inputs.")
        self._input_name, self._output_name = inputs[0], outputs[0]
        if input_needs_shape(what, tuple(engine.get_tensor_shape(self._input_name)), self.spec.input_shape):
            if not context.set_input_shape(self._input_name, tuple(self.spec.input_shape)):
                raise MeasurementError(format_build_errors([f"the input shape {tuple(self.spec.input_shape)} was refused"] + logger.errors))
        dev = self._device
        for name in inputs + outputs:
            dtype_name = engine.get_tensor_dtype(name).name
            shape = tuple(context.get_tensor_shape(name))
            buf = torch.empty(shape, dtype=trt_dtype_to_torch(dtype_name), device=dev)
            self._buffers[name] = buf
            self._io[name] = {"mode": "input" if name in inputs else "output", "dtype": dtype_name, "shape": list(shape)}
            if not context.set_tensor_address(name, buf.data_ptr()):
                raise MeasurementError(f"TensorRT refused the buffer address of tensor {name!r}.")
        x = torch.from_numpy(self.fixed_input())
        self._buffers[self._input_name].copy_(x.to(dev).to(self._buffers[self._input_name].dtype))
        self._stream = torch.cuda.Stream(device=dev)
        torch.cuda.synchronize(dev)

    def _deactivate(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._context = None
        self._engine = None
        self._stream = None
        self._buffers = {}
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    # --- work -----------------------------------------------------------------------------
    def _execute(self) -> None:
        assert self._stream is not None
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise MeasurementError("TensorRT execute_async_v3 failed.")

    def _time_once(self) -> float:
        stream = self._stream
        assert stream is not None
        with torch.cuda.device(self._device):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            stream.synchronize()
            start.record(stream)
            self._execute()
            end.record(stream)
            end.synchronize()
            return float(start.elapsed_time(end))

    def _infer(self, x: np.ndarray) -> np.ndarray:
        assert self._stream is not None and self._device is not None
        buf = self._buffers[self._input_name]
        with torch.cuda.device(self._device):
            current = torch.cuda.current_stream(self._device)
            buf.copy_(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self._device).to(buf.dtype))
            self._stream.wait_stream(current)
            self._execute()
            self._stream.synchronize()
            return self._buffers[self._output_name].float().cpu().numpy()

    # --- record ---------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """:func:`engine_metadata` of the engine this runner built (after activation)."""
        if self.plan is None or self._device is None or self.onnx_sha256 is None:
            raise RuntimeError("TensorRTRunner.metadata() needs an activated runner")
        gpu = cuda_device_details(self._device)
        return engine_metadata(
            trt_version=tensorrt_version() or "unknown",
            gpu_name=gpu["device_name"],
            compute_capability=gpu["compute_capability"],
            onnx_sha256=self.onnx_sha256,
            precision=Precision(self.spec.precision).value,
            input_shape=self.spec.input_shape,
            exporter=self.exporter,
            opset=self.onnx_opset,
            workspace_bytes=self.workspace_bytes,
            tf32=self._build_facts.get("tf32"),
            timing_cache_sha256=self._build_facts.get("timing_cache_sha256"),
            io=self._io,
            engine_sha256=hashlib.sha256(self.plan).hexdigest(),
        )

    def save_engine(self, path: Path) -> Path:
        """Write the serialized engine atomically, with ``<path>.json`` metadata beside it (which
        records the engine's sha256, so an engine torn from its metadata is refused on loading)."""
        meta = self.metadata()
        assert self.plan is not None
        path = Path(path)
        atomic_write_bytes(path, self.plan)
        atomic_write_bytes(path.with_name(path.name + ".json"), (json.dumps(meta, indent=2) + "\n").encode())
        return path

    def info(self) -> RunnerInfo:
        dev = self._device or resolve_device(self.spec.device)
        details: dict[str, Any] = {
            "exporter": self.exporter,
            "opset": self.onnx_opset,
            "onnx_sha256": self.onnx_sha256,
            "onnx_path": str(self.onnx_path) if self.onnx_path is not None else None,
            "export_cached": self.export_info.cached if self.export_info is not None else None,
            "strongly_typed": True,
            "workspace_bytes": self.workspace_bytes,
            "timing_cache": str(self.timing_cache) if self.timing_cache is not None else None,
            "plan_bytes": len(self.plan) if self.plan is not None else None,
            "stream": "dedicated non-default torch.cuda.Stream",
            **self._build_facts,
        }
        if dev.type == "cuda" and torch.cuda.is_available():
            details.update(cuda_device_details(dev))
        return RunnerInfo(
            backend=self.backend.value,
            backend_version=tensorrt_version() or "not installed",
            precision=Precision(self.spec.precision).value,
            device=str(dev),
            threads=self.spec.threads,
            timer="cuda-event",
            details=details,
        )
