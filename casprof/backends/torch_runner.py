"""PyTorch eager runner: the module itself on a CPU or a CUDA device.

Timing: on the CPU, ``time.perf_counter_ns`` around one forward under ``inference_mode``, under
the spec's CPU allocator setting (:mod:`casprof.backends.cpu_memory`: with the C library's
defaults, page faults on the large activations are much of an eager forward at 768x1536); on
CUDA, a pair of ``torch.cuda.Event(enable_timing=True)`` recorded on the device's current
stream around the forward, after a synchronize (device time, like trtexec's "GPU Compute").
Weights and input are held in the spec's memory format (:mod:`casprof.backends.memory_format`:
NCHW by default, or ``channels_last``, which spares oneDNN a reorder of every convolution's
activations on a CPU).
"""

from __future__ import annotations

import contextlib
import copy
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from casprof.backends.base import Backend, Precision, Runner, RunnerInfo, RunnerSpec
from casprof.backends.cpu_memory import apply_cpu_allocator, cpu_allocator_state
from casprof.backends.memory_format import MemoryFormat, parse_memory_format
from casprof.errors import BackendUnavailableError, UserInputError

TORCH_FP16_ON_CPU = "fp16 with the torch backend needs a CUDA device; use fp32 on the CPU."


# --------------------------------------------------------------------------------------------
# Device helpers shared by the runners
# --------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``"cpu"`` or ``"cuda:N"`` (``"cuda"`` means ``cuda:0``) as a torch device; nothing else."""
    try:
        dev = torch.device(str(name))
    except (RuntimeError, TypeError):
        raise UserInputError(f"The device {name!r} is not a device name such as cpu or cuda:0.") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        return torch.device("cuda", 0 if dev.index is None else dev.index)
    raise UserInputError(f"The device {name!r} is not supported; use cpu or cuda:N.")


def require_cuda(dev: torch.device) -> None:
    """Raise :class:`BackendUnavailableError` unless the CUDA device ``dev`` is usable by torch."""
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        raise BackendUnavailableError(
            f"The device {dev} was requested but torch sees no CUDA GPU here (torch CUDA version: {build})."
        )
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise BackendUnavailableError(f"The device {dev} was requested but only {count} CUDA device(s) are present.")


def cpu_model_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where readable)."""
    try:
        from casprof.hardware import parse_cpu_model

        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        name = parse_cpu_model(text)
        if name:
            return name
    except (OSError, ImportError):
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def tf32_settings() -> dict[str, Any]:
    """The TF32 switches of torch (the 2.9+ ``fp32_precision`` API, else the ``allow_tf32`` flags)."""
    out: dict[str, Any] = {}
    for label, getter in (
        ("cudnn_conv_fp32_precision", lambda: torch.backends.cudnn.conv.fp32_precision),
        ("cuda_matmul_fp32_precision", lambda: torch.backends.cuda.matmul.fp32_precision),
    ):
        try:
            out[label] = str(getter())
        except Exception:
            pass
    if not out:
        out["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
        out["cuda_matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return out


def cuda_device_details(dev: torch.device) -> dict[str, Any]:
    """Name, capability and library versions of a CUDA device (for ``RunnerInfo.details``)."""
    props = torch.cuda.get_device_properties(dev)
    return {
        "device_name": torch.cuda.get_device_name(dev),
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version(),
    }


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


class TorchRunner(Runner):
    """A PyTorch module run eagerly on ``spec.device`` in ``spec.precision``.

    The module is moved to the device in place for fp32 in the ``contiguous`` layout; for fp16
    (CUDA only) or ``channels_last`` a copy is made, so that the caller's module stays as it was
    (fp32 for parity checks, NCHW for exports and counts).
    """

    backend = Backend.TORCH

    def __init__(self, model: nn.Module, spec: RunnerSpec) -> None:
        super().__init__(spec)
        if not isinstance(model, nn.Module):
            raise UserInputError("The torch backend needs a PyTorch module, not an ONNX or engine file.")
        self._source = model
        self._model: nn.Module | None = None
        self._device: torch.device | None = None
        self._dtype = torch.float32
        self._x: torch.Tensor | None = None
        self._prev_threads: int | None = None
        self._prev_benchmark: bool | None = None
        self._allocator: dict[str, Any] | None = None
        self._layout = parse_memory_format(spec.memory_format)

    # --- life cycle -----------------------------------------------------------------------
    def _activate(self) -> None:
        dev = resolve_device(self.spec.device)
        fp16 = Precision(self.spec.precision) is Precision.FP16
        if dev.type == "cpu" and fp16:
            raise BackendUnavailableError(TORCH_FP16_ON_CPU)
        if dev.type == "cuda":
            require_cuda(dev)
        if self.spec.threads < 1:
            raise UserInputError(f"The thread count must be at least 1, got {self.spec.threads}.")
        if dev.type == "cpu":
            self._allocator = apply_cpu_allocator(self.spec.cpu_allocator)
        self._device = dev
        self._dtype = torch.float16 if fp16 else torch.float32
        self._prev_threads = torch.get_num_threads()
        torch.set_num_threads(self.spec.threads)
        try:
            if dev.type == "cuda":
                self._prev_benchmark = torch.backends.cudnn.benchmark
                torch.backends.cudnn.benchmark = True
            layout = self._layout is not MemoryFormat.CONTIGUOUS
            model = copy.deepcopy(self._source) if fp16 or layout else self._source
            model = model.to(device=dev, dtype=self._dtype)
            self._model = (model.to(memory_format=self._layout.torch_format) if layout else model).eval()
            self._x = self._input(self.fixed_input())
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        except BaseException:
            self._restore()
            raise

    def _deactivate(self) -> None:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        self._restore()

    def _restore(self) -> None:
        if self._prev_threads is not None:
            torch.set_num_threads(self._prev_threads)
            self._prev_threads = None
        if self._prev_benchmark is not None:
            torch.backends.cudnn.benchmark = self._prev_benchmark
            self._prev_benchmark = None
        self._model = None
        self._x = None

    # --- work -----------------------------------------------------------------------------
    def _time_once(self) -> float:
        assert self._model is not None and self._x is not None and self._device is not None
        if torch.get_num_threads() != self.spec.threads:  # another runner changed it
            torch.set_num_threads(self.spec.threads)
        model, x = self._model, self._x
        if self._device.type == "cuda":
            with torch.cuda.device(self._device), torch.inference_mode():
                stream = torch.cuda.current_stream(self._device)
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize(self._device)
                start.record(stream)
                model(x)
                end.record(stream)
                end.synchronize()
                return float(start.elapsed_time(end))
        with torch.inference_mode():
            t0 = time.perf_counter_ns()
            model(x)
            t1 = time.perf_counter_ns()
        return (t1 - t0) / 1e6

    def _infer(self, x: np.ndarray) -> np.ndarray:
        assert self._model is not None and self._device is not None
        t = self._input(x)
        ctx = torch.cuda.device(self._device) if self._device.type == "cuda" else contextlib.nullcontext()
        with ctx, torch.inference_mode():
            out = self._model(t)
        return out.float().cpu().contiguous().numpy()

    def _input(self, x: np.ndarray) -> torch.Tensor:
        """``x`` (float32, NCHW) on the device in the runner's precision and memory layout."""
        assert self._device is not None
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device=self._device, dtype=self._dtype)
        return t.contiguous(memory_format=self._layout.torch_format) if t.dim() == 4 else t

    # --- record ---------------------------------------------------------------------------
    def info(self) -> RunnerInfo:
        dev = self._device or resolve_device(self.spec.device)
        details: dict[str, Any] = {"interop_threads": torch.get_num_interop_threads(), "memory_format": self._layout.value}
        if dev.type == "cuda" and torch.cuda.is_available():
            details.update(cuda_device_details(dev))
            details["cudnn_benchmark"] = True if self.active else bool(torch.backends.cudnn.benchmark)
            details["cudnn_deterministic"] = bool(torch.backends.cudnn.deterministic)
            details.update(tf32_settings())
            timer = "cuda-event"
        else:
            details["device_name"] = cpu_model_name()
            details["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
            details.update(self._allocator or cpu_allocator_state())
            timer = "perf_counter"
        return RunnerInfo(
            backend=self.backend.value,
            backend_version=torch.__version__,
            precision=Precision(self.spec.precision).value,
            device=str(dev),
            threads=self.spec.threads,
            timer=timer,
            details=details,
        )

