"""ONNX Runtime runner: an ONNX file (exported here from a module, or given) in one session.

The session runs on exactly the provider asked for: ``CPUExecutionProvider`` for ``cpu`` and
``CUDAExecutionProvider`` for ``cuda:N``. ONNX Runtime falls back to the CPU silently when a
provider cannot start, so the provider actually in use is checked after the session is made.

Threads: by default a session has its own intra-op pool (ONNX Runtime's default). Interleaved
measurements (``casprof measure``, ``casprof fidelity``) keep dozens of sessions open and run them
in turn; their pools' idle threads then compete with the running session for the cores (when
spinning) or wake up late (when not, the measurement default). ``shared_pool=True`` (``casprof
measure --ort-shared-pool``) puts every session on one process-wide pool instead: one set of
threads, spinning as ONNX Runtime does by default, like a single deployed session. Measured on
the 2-core CI machine at 768x1536 (four A/B runs of 30-40 interleaved rounds): the all-identity
network's IQR was 9-30 % of its median with per-session pools without spinning and 5-13 % with
the shared pool, and the paired differences scattered less in 3 of 4 pairs. It is opt-in because
ONNX Runtime then refuses every later session of the process that asks for a pool of its own.

Memory: by default a session has its own CPU memory arena (ONNX Runtime's default), which holds
the session's activations for as long as it lives. ``shared_arena=True`` (the default of ``casprof
measure``, ``fidelity`` and ``calibrate`` on a CPU) puts every such session on one arena registered
with the process's ONNX Runtime environment instead, so the memory of closed sessions serves the
next ones. Measured on the 2-core CI machine (a VM) at 768x1536: each network holds ~400 MB of
activations, and with an arena per session every newly opened session paid ~1 s of first-touch
page faults in its first two runs once the process had used ~2 GB (10 sessions: 8.8 s of extra
warm-up time, 4 GiB resident; on the shared arena 0.1 s and 0.6 GiB), while the timed runs were
the same (12 networks, a session of each kind of every one, 12 interleaved runs each: median ratio
of shared to own 1.01, per network 0.95-1.07, within their noise).

Timing: on the CPU, ``time.perf_counter_ns`` around ``session.run`` with the numpy input made
beforehand; on CUDA, ``run_with_iobinding`` on a torch CUDA input tensor bound by pointer, with
``torch.cuda.synchronize`` before and after (end-to-end device latency without transfers).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from casprof._io import file_sha256
from casprof.backends.base import Backend, Precision, Runner, RunnerInfo, RunnerSpec, split_model_or_path
from casprof.backends.onnx_export import ExportInfo, check_exporter, export_onnx, onnx_opset
from casprof.backends.torch_runner import cpu_model_name, cuda_device_details, require_cuda, resolve_device
from casprof.errors import BackendUnavailableError, MeasurementError, UserInputError

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"

ORT_FP16_ON_CPU = "fp16 with the onnxruntime backend needs a CUDA device; use fp32 on the CPU."

#: ``info().details["intra_op_thread_pool"]`` of a session on the shared pool (profiles record it).
SHARED_POOL = "shared by every session of the process"

#: ``info().details["cpu_memory_arena"]`` of a CPU session on the shared arena.
SHARED_ARENA = "shared by every session of the process"

#: Threads of this process's shared intra-op pool once it exists (ONNX Runtime cannot resize it).
_shared_pool_threads: int | None = None

#: Whether this process's ONNX Runtime environment has the shared CPU arena registered.
_shared_arena_registered = False


def ensure_shared_pool(threads: int) -> None:
    """Create this process's shared ONNX Runtime intra-op pool of ``threads`` threads, once.

    Raises:
        BackendUnavailableError: the pool exists with another thread count, or cannot be made.
    """
    global _shared_pool_threads
    if _shared_pool_threads == threads:
        return
    if _shared_pool_threads is not None:
        raise BackendUnavailableError(
            f"This process already runs ONNX Runtime's shared thread pool with {_shared_pool_threads} thread(s) "
            f"and cannot resize it to {threads}; measure with another thread count in a new process."
        )
    from onnxruntime.capi import _pybind_state

    try:
        _pybind_state.set_global_thread_pool_sizes(threads, 1)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["(no message)"])[0]
        raise BackendUnavailableError(f"ONNX Runtime's shared thread pool cannot be made: {first}") from None
    _shared_pool_threads = threads


def ensure_shared_arena() -> None:
    """Register a CPU memory arena with this process's ONNX Runtime environment, once; sessions
    use it when their ``session.use_env_allocators`` entry is ``"1"`` (the others keep their own).

    Raises:
        BackendUnavailableError: ONNX Runtime refuses to register it.
    """
    global _shared_arena_registered
    if _shared_arena_registered:
        return
    import onnxruntime as ort

    try:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))  # ONNX Runtime's arena defaults
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["(no message)"])[0]
        raise BackendUnavailableError(f"ONNX Runtime's shared CPU memory arena cannot be made: {first}") from None
    _shared_arena_registered = True


#: ONNX Runtime's type strings of the tensor types a network input may have.
_ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def provider_request(device: torch.device) -> tuple[str, list[Any]]:
    """The provider name and the ``providers=`` list for a device (pure)."""
    if device.type == "cpu":
        return CPU_PROVIDER, [CPU_PROVIDER]
    return CUDA_PROVIDER, [(CUDA_PROVIDER, {"device_id": int(device.index or 0)})]


def missing_provider_message(wanted: str, available: list[str]) -> str:
    """One sentence for a provider that this ONNX Runtime build lacks (pure)."""
    hint = " (pip install onnxruntime-gpu, in place of onnxruntime)" if wanted == CUDA_PROVIDER else ""
    return (
        f"ONNX Runtime here has no {wanted}; the available providers are {', '.join(available) or 'none'}"
        f"{hint}."
    )


def load_onnx_file(path: Path) -> Any:
    """Read a given ONNX file (without external data), turning problems into one sentence."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"The ONNX file {path} does not exist.")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise UserInputError(f"The ONNX file {path} cannot be read ({type(exc).__name__}); it may be truncated.") from None


class OnnxRuntimeRunner(Runner):
    """An ONNX model in an ONNX Runtime session.

    Args:
        model_or_onnx_path: a PyTorch module (exported on activation into ``spec.workdir``, or
            into a temporary folder removed on deactivation) or the path of an ``.onnx`` file.
        spec: device ``cpu`` or ``cuda:N``, precision, threads, input shape.
        exporter: ``"torchscript"`` or ``"dynamo"`` (for a module).
        opset: opset override for the export.
        spinning: whether idle intra-op threads spin-wait (ONNX Runtime's default: yes). When
            several sessions are timed in turn, spinning threads of the session that just ran
            compete with the next one for the cores, so interleaved measurements turn it off.
            ``None`` keeps ONNX Runtime's default.
        shared_pool: run on this process's shared intra-op pool of ``spec.threads`` threads
            (see the module docstring) instead of a pool of the session's own; excludes
            ``spinning`` (the shared pool spins, ONNX Runtime's default). Once the shared pool
            exists, ONNX Runtime refuses sessions with a pool of their own, so every later
            session of the process runs on it (``info()`` says so; another thread count is
            refused).
        shared_arena: on a CPU, keep the session's activations in the process's shared CPU
            memory arena (see the module docstring) instead of an arena of its own; ignored on
            CUDA (``info()`` says which one a session used).
    """

    backend = Backend.ONNXRUNTIME

    def __init__(
        self,
        model_or_onnx_path: nn.Module | str | Path,
        spec: RunnerSpec,
        exporter: str = "torchscript",
        opset: int | None = None,
        spinning: bool | None = None,
        shared_pool: bool = False,
        shared_arena: bool = False,
    ) -> None:
        super().__init__(spec)
        if shared_pool and spinning is not None:
            raise ValueError("spinning is a per-session setting; the shared pool keeps ONNX Runtime's default")
        self.spinning = spinning
        self.shared_pool = shared_pool
        self.shared_arena = shared_arena
        self._arena_shared = False  # whether the session in use runs on the shared arena
        self._module: nn.Module | None
        self._given_path: Path | None
        self._module, self._given_path = split_model_or_path(model_or_onnx_path, "onnxruntime")
        self.exporter = check_exporter(exporter) if self._module is not None else None
        self.opset = opset
        self.export_info: ExportInfo | None = None
        self.onnx_path: Path | None = None
        self.onnx_sha256: str | None = None
        self.onnx_opset: int | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._sess: Any = None
        self._provider: str | None = None
        self._device: torch.device | None = None
        self._in_name = self._out_name = ""
        self._in_dtype: Any = np.float32
        self._feed: dict[str, np.ndarray] = {}
        self._binding: Any = None
        self._x_gpu: torch.Tensor | None = None
        self._y_gpu: torch.Tensor | None = None

    # --- life cycle -----------------------------------------------------------------------
    def _activate(self) -> None:
        import onnxruntime as ort

        dev = resolve_device(self.spec.device)
        fp16 = Precision(self.spec.precision) is Precision.FP16
        if dev.type == "cpu" and fp16:
            raise BackendUnavailableError(ORT_FP16_ON_CPU)
        wanted, providers = provider_request(dev)
        available = list(ort.get_available_providers())
        if wanted not in available:
            raise BackendUnavailableError(missing_provider_message(wanted, available))
        if dev.type == "cuda":
            require_cuda(dev)  # the IOBinding input lives in a torch CUDA tensor
        if self.spec.threads < 1:
            raise UserInputError(f"The thread count must be at least 1, got {self.spec.threads}.")
        self._device = dev
        try:
            self._prepare_onnx(dev, fp16)
            self._make_session(ort, wanted, providers, fp16)
        except BaseException:
            self._release()
            raise

    def _prepare_onnx(self, dev: torch.device, fp16: bool) -> None:
        if self._module is not None:
            if self.spec.workdir is not None:
                folder = Path(self.spec.workdir)
                if not folder.is_dir():
                    raise UserInputError(f"The work folder {folder} does not exist.")
            else:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="casprof-ort-")
                folder = Path(self._tmpdir.name)
            precision = "fp16" if fp16 else "fp32"
            name = f"{type(self._module).__name__}-{self.exporter}-{precision}-{uuid.uuid4().hex[:8]}.onnx"
            assert self.exporter is not None
            info = export_onnx(
                self._module,
                self.spec.input_shape,
                folder / name,
                exporter=self.exporter,
                opset=self.opset,
                half=fp16,
                device=dev if fp16 else "cpu",
                cache=self.spec.build_cache,
            )
            self.export_info = info
            self.onnx_path, self.onnx_sha256, self.onnx_opset = info.path, info.sha256, info.opset
        else:
            assert self._given_path is not None
            proto = load_onnx_file(self._given_path)
            self.onnx_path = self._given_path
            self.onnx_sha256 = file_sha256(self._given_path)
            self.onnx_opset = onnx_opset(proto)

    def _make_session(self, ort: Any, wanted: str, providers: list[Any], fp16: bool) -> None:
        so = ort.SessionOptions()
        if _shared_pool_threads is not None and not self.shared_pool:
            # ONNX Runtime refuses sessions with their own pool once the shared one exists
            self.shared_pool, self.spinning = True, None
        if self.shared_pool:
            ensure_shared_pool(self.spec.threads)
            so.use_per_session_threads = False
        else:
            so.intra_op_num_threads = self.spec.threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # errors only; failures still raise
        if self.spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        self._arena_shared = self.shared_arena and wanted == CPU_PROVIDER
        if self._arena_shared:
            ensure_shared_arena()  # after the shared pool: that must exist before ONNX Runtime's environment
            so.add_session_config_entry("session.use_env_allocators", "1")
        try:
            sess = ort.InferenceSession(str(self.onnx_path), sess_options=so, providers=providers)
        except Exception as exc:
            cls = UserInputError if self._module is None else MeasurementError
            first = (str(exc).strip().splitlines() or ["(no message)"])[0]
            raise cls(f"ONNX Runtime cannot load {self.onnx_path}: {first}") from None
        in_use = sess.get_providers()
        if not in_use or in_use[0] != wanted:
            raise BackendUnavailableError(
                f"ONNX Runtime was asked for {wanted} but runs on {in_use[0] if in_use else 'nothing'}; "
                "it could not start the requested provider."
            )
        self._sess, self._provider = sess, wanted
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise UserInputError(f"The ONNX model {self.onnx_path} must have one input and an output, found {len(inputs)} inputs.")
        self._in_name, self._out_name = inputs[0].name, outputs[0].name
        in_type = inputs[0].type
        if in_type not in _ORT_TO_NUMPY:
            raise UserInputError(f"The ONNX model's input has type {in_type}; a floating-point input is expected.")
        self._in_dtype = _ORT_TO_NUMPY[in_type]
        if (self._in_dtype == np.float16) != fp16:
            asked = "fp16" if fp16 else "fp32"
            raise UserInputError(f"The ONNX model's input is {in_type} but {asked} was requested.")
        static = [d if isinstance(d, int) else None for d in inputs[0].shape]
        if None not in static and tuple(static) != tuple(self.spec.input_shape):
            raise UserInputError(
                f"The ONNX model takes inputs of shape {tuple(static)}, not {tuple(self.spec.input_shape)}."
            )
        x = self.fixed_input().astype(self._in_dtype)
        assert self._device is not None
        if self._device.type == "cpu":
            self._feed = {self._in_name: x}
            return
        dev = self._device
        self._x_gpu = torch.from_numpy(x).to(dev)
        binding = sess.io_binding()
        binding.bind_input(
            name=self._in_name,
            device_type="cuda",
            device_id=int(dev.index or 0),
            element_type=self._in_dtype,
            shape=tuple(self._x_gpu.shape),
            buffer_ptr=self._x_gpu.data_ptr(),
        )
        out_shape = outputs[0].shape
        out_dtype = _ORT_TO_NUMPY.get(outputs[0].type)
        if out_dtype is not None and all(isinstance(d, int) for d in out_shape):
            torch_dtype = torch.from_numpy(np.zeros(0, dtype=out_dtype)).dtype
            self._y_gpu = torch.empty(tuple(out_shape), dtype=torch_dtype, device=dev)
            binding.bind_output(
                name=self._out_name,
                device_type="cuda",
                device_id=int(dev.index or 0),
                element_type=out_dtype,
                shape=tuple(out_shape),
                buffer_ptr=self._y_gpu.data_ptr(),
            )
        else:
            binding.bind_output(self._out_name, "cuda", int(dev.index or 0))
        torch.cuda.synchronize(dev)
        self._binding = binding

    def _deactivate(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._device is not None and self._device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.synchronize(self._device)
        self._binding = None
        self._sess = None
        self._feed = {}
        self._x_gpu = self._y_gpu = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    # --- work -----------------------------------------------------------------------------
    def _time_once(self) -> float:
        sess = self._sess
        if self._binding is None:
            feed, out = self._feed, [self._out_name]
            t0 = time.perf_counter_ns()
            sess.run(out, feed)
            t1 = time.perf_counter_ns()
        else:
            dev, binding = self._device, self._binding
            torch.cuda.synchronize(dev)
            t0 = time.perf_counter_ns()
            sess.run_with_iobinding(binding)
            torch.cuda.synchronize(dev)
            t1 = time.perf_counter_ns()
        return (t1 - t0) / 1e6

    def _infer(self, x: np.ndarray) -> np.ndarray:
        feed = {self._in_name: np.ascontiguousarray(x).astype(self._in_dtype, copy=False)}
        (out,) = self._sess.run([self._out_name], feed)
        return np.asarray(out, dtype=np.float32)

    # --- record ---------------------------------------------------------------------------
    def info(self) -> RunnerInfo:
        import onnxruntime as ort

        dev = self._device or resolve_device(self.spec.device)
        details: dict[str, Any] = {
            "provider": self._provider,
            "providers_in_session": list(self._sess.get_providers()) if self._sess is not None else None,
            "inter_op_threads": 1,
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "execution_mode": "ORT_SEQUENTIAL",
            "intra_op_thread_pool": SHARED_POOL if self.shared_pool else "per session",
            "intra_op_spinning": "onnxruntime default (on)" if self.spinning is None else self.spinning,
            "cpu_memory_arena": SHARED_ARENA if self._arena_shared else "per session",
            "exporter": self.exporter,
            "opset": self.onnx_opset,
            "onnx_sha256": self.onnx_sha256,
            "onnx_path": str(self.onnx_path) if self.onnx_path is not None else None,
            "export_seconds": self.export_info.seconds if self.export_info is not None else None,
            "export_cached": self.export_info.cached if self.export_info is not None else None,
        }
        if dev.type == "cuda" and torch.cuda.is_available():
            details.update(cuda_device_details(dev))
            details["io_binding"] = True
            timer = "perf_counter+cuda-sync"
        else:
            details["device_name"] = cpu_model_name()
            timer = "perf_counter"
        return RunnerInfo(
            backend=self.backend.value,
            backend_version=ort.__version__,
            precision=Precision(self.spec.precision).value,
            device=str(dev),
            threads=self.spec.threads,
            timer=timer,
            details=details,
        )
