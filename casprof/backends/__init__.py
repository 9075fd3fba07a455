"""Backends that run and time a network: PyTorch eager, ONNX Runtime, TensorRT.

Importing this package imports none of the runner modules (and so neither onnxruntime nor
tensorrt); :func:`make_runner` imports the one it needs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from casprof.backends.base import Backend, Precision, Runner, RunnerInfo, RunnerSpec
from casprof.errors import UserInputError

__all__ = [
    "Backend",
    "Precision",
    "Runner",
    "RunnerInfo",
    "RunnerSpec",
    "make_runner",
    "parse_backend",
    "runner_class",
]

#: Backend -> (module, class) of its runner, imported on demand.
_RUNNERS: dict[Backend, tuple[str, str]] = {
    Backend.TORCH: ("casprof.backends.torch_runner", "TorchRunner"),
    Backend.ONNXRUNTIME: ("casprof.backends.onnxruntime_runner", "OnnxRuntimeRunner"),
    Backend.TENSORRT: ("casprof.backends.tensorrt_runner", "TensorRTRunner"),
}


def parse_backend(backend: Backend | str) -> Backend:
    """A :class:`Backend` from itself or its name; an unknown name is a user error."""
    if isinstance(backend, Backend):
        return backend
    try:
        return Backend(str(backend).strip().lower())
    except ValueError:
        known = ", ".join(b.value for b in Backend)
        raise UserInputError(f"Unknown backend {backend!r}; the known backends are {known}.") from None


def runner_class(backend: Backend | str) -> type[Runner]:
    """The runner class of a backend (imports its module)."""
    module_name, class_name = _RUNNERS[parse_backend(backend)]
    return getattr(importlib.import_module(module_name), class_name)


def make_runner(backend: Backend | str, model_or_path: Any, spec: RunnerSpec, **kw: Any) -> Runner:
    """A runner for ``backend`` (not yet active: use it as a context manager).

    ``model_or_path`` is a ``torch.nn.Module`` (every backend) or an ``.onnx`` path
    (onnxruntime and tensorrt). Extra keywords go to the runner (e.g. ``exporter=``,
    ``timing_cache=``).
    """
    b = parse_backend(backend)
    if b is Backend.TORCH and isinstance(model_or_path, (str, Path)):
        raise UserInputError("The torch backend needs a PyTorch module, not an ONNX or engine file.")
    return runner_class(b)(model_or_path, spec, **kw)
