"""The runner interface every backend implements (Polygraphy-style runners).

A runner owns one network prepared for one backend (a PyTorch module on a device, an ONNX
Runtime session, a TensorRT engine) and one fixed input. It is used as a context manager::

    with make_runner(Backend.ONNXRUNTIME, model, spec) as runner:
        runner.warmup(min_iters=3, min_seconds=0.5)
        ms = runner.time_once()          # one synchronized forward, in milliseconds
        logits = runner.infer(x)         # numpy in, numpy out (parity checks)

``activate`` does everything slow (export, session creation, engine build) so that timing
measures only inference. A runner that cannot run raises :class:`BackendUnavailableError`
with one sentence saying why; nothing falls back to another backend.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from casprof.backends.cpu_memory import CpuAllocator
from casprof.backends.memory_format import LAYOUT_ONLY_TORCH, MemoryFormat, parse_memory_format
from casprof.errors import UserInputError

if TYPE_CHECKING:  # pragma: no cover
    from casprof.build_cache import BuildCache


class Backend(str, enum.Enum):
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"


@dataclass(frozen=True)
class RunnerSpec:
    """What a runner is asked to do: where, in which precision, with which input shape.

    Args:
        input_shape: ``(N, C, H, W)`` of the network input.
        device: ``"cpu"`` or ``"cuda:0"``; passed explicitly, never guessed.
        precision: fp32 or fp16 (fp16 needs a GPU backend).
        threads: CPU threads (torch intra-op threads, ONNX Runtime ``intra_op_num_threads``).
        workdir: folder for exported ONNX files, engines and timing caches.
        seed: seed of the fixed random input.
        cpu_allocator: what the C library does with memory PyTorch frees on the CPU (the torch
            runner on a CPU only; see :mod:`casprof.backends.cpu_memory`).
        memory_format: the torch runner's layout of weights and activations (``contiguous`` or
            ``channels_last``; see :mod:`casprof.backends.memory_format`). The other runners
            refuse anything but ``contiguous``.
        build_cache: where the ONNX Runtime and TensorRT runners find and keep their ONNX exports
            (:mod:`casprof.build_cache`); None exports every time.
    """

    input_shape: tuple[int, int, int, int]
    device: str = "cpu"
    precision: Precision = Precision.FP32
    threads: int = 1
    workdir: Path | None = None
    seed: int = 0
    cpu_allocator: CpuAllocator = CpuAllocator.SYSTEM
    memory_format: MemoryFormat = MemoryFormat.CONTIGUOUS
    build_cache: BuildCache | None = None


@dataclass(frozen=True)
class RunnerInfo:
    """What the runner actually used (recorded in profiles and reports)."""

    backend: str
    backend_version: str
    precision: str
    device: str
    threads: int
    timer: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "backend_version": self.backend_version,
            "precision": self.precision,
            "device": self.device,
            "threads": self.threads,
            "timer": self.timer,
            "details": dict(self.details),
        }


class Runner(ABC):
    """One network on one backend, ready to time. Subclasses implement the ``_``-methods."""

    backend: Backend

    def __init__(self, spec: RunnerSpec) -> None:
        self.spec = spec
        self._active = False

    # --- life cycle -----------------------------------------------------------------------
    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self._active:
            if self.backend is not Backend.TORCH and parse_memory_format(self.spec.memory_format) is not MemoryFormat.CONTIGUOUS:
                raise UserInputError(LAYOUT_ONLY_TORCH)  # never recorded without being applied
            self._activate()
            self._active = True

    def deactivate(self) -> None:
        if self._active:
            self._deactivate()
            self._active = False

    @property
    def active(self) -> bool:
        return self._active

    # --- work -----------------------------------------------------------------------------
    def time_once(self) -> float:
        """Run one forward pass on the prepared input; return its latency in milliseconds."""
        self._require_active()
        return self._time_once()

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the network on ``x`` (float32, NCHW) and return its output as float32 numpy."""
        self._require_active()
        return self._infer(x)

    def warmup(self, min_iters: int = 3, min_seconds: float = 0.0) -> int:
        """Run at least ``min_iters`` forwards and at least ``min_seconds``; return the count."""
        self._require_active()
        start, count = time.perf_counter(), 0
        while count < min_iters or time.perf_counter() - start < min_seconds:
            self._time_once()
            count += 1
        return count

    @abstractmethod
    def info(self) -> RunnerInfo:
        """Backend, version, precision, device, threads and timer actually in use."""

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _time_once(self) -> float: ...

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray: ...

    def _require_active(self) -> None:
        if not self._active:
            raise RuntimeError(f"{type(self).__name__} is not active; use it as a context manager")

    def fixed_input(self) -> np.ndarray:
        """The deterministic random input of ``spec.input_shape`` (float32)."""
        rng = np.random.default_rng(self.spec.seed)
        return rng.standard_normal(self.spec.input_shape, dtype=np.float32)


def split_model_or_path(model_or_path: Any, backend: str) -> tuple[Any, Path | None]:
    """``(module, None)`` for a PyTorch module, ``(None, path)`` for an ONNX file path."""
    import torch.nn as nn

    if isinstance(model_or_path, nn.Module):
        return model_or_path, None
    if isinstance(model_or_path, (str, Path)):
        return None, Path(model_or_path)
    raise UserInputError(f"The {backend} backend needs a PyTorch module or the path of an .onnx file.")
