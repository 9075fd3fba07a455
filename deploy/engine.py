"""Serialized TensorRT engines: their metadata, the check against what is here, and a runner.

An engine runs only on the GPU model and TensorRT version it was built with, and loading one
runs native code (TensorRT calls deserialization a trust boundary): load only engines you built.
``cas deploy export --trt`` writes ``<engine>.json`` beside every engine
(:func:`casprof.backends.tensorrt_runner.engine_metadata`, with the engine's sha256);
:func:`check_engine` refuses an engine without it, another engine than the one it describes, or
one made for another TensorRT version or GPU, before anything is deserialized.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from casprof._io import file_sha256, read_json_file
from casprof.backends.base import RunnerInfo, RunnerSpec
from casprof.backends.tensorrt_runner import (
    TensorRTRunner,
    make_trt_logger,
    tensorrt_unavailable_reason,
    tensorrt_version,
)
from casprof.backends.torch_runner import cuda_device_details
from casprof.errors import BackendUnavailableError, UserInputError


def engine_metadata_path(engine_path: Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_engine_metadata(engine_path: Path) -> dict[str, Any]:
    """The metadata written beside an engine (a missing or bad file is a user error)."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise UserInputError(f"The engine file {engine_path} does not exist.")
    meta_path = engine_metadata_path(engine_path)
    if not meta_path.is_file():
        raise UserInputError(
            f"The engine {engine_path} has no metadata file {meta_path.name} beside it, so its TensorRT version and GPU "
            "cannot be checked; rebuild it with `cas deploy export --trt`."
        )
    meta = read_json_file(meta_path, "engine metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("tensorrt_version"), str) or not meta.get("gpu_name"):
        raise UserInputError(f"The engine metadata {meta_path} lacks tensorrt_version or gpu_name.")
    recorded = meta.get("engine_sha256")
    if recorded is not None and recorded != file_sha256(engine_path):
        raise UserInputError(
            f"The engine {engine_path} is not the one its metadata {meta_path.name} describes (another sha256: "
            "replaced or torn apart from it); rebuild it with `cas deploy export --trt`."
        )
    return meta


def engine_mismatch(meta: dict[str, Any], *, trt_version: str, gpu_name: str, compute_capability: str) -> str | None:
    """The sentence refusing an engine built for another TensorRT version or GPU, or None (pure)."""
    built_trt = str(meta.get("tensorrt_version"))
    if built_trt != trt_version:
        return f"The engine was built with TensorRT {built_trt} but TensorRT {trt_version} is installed here; rebuild it."
    built_gpu, built_cc = str(meta.get("gpu_name")), str(meta.get("compute_capability"))
    if built_gpu != gpu_name or (meta.get("compute_capability") is not None and built_cc != compute_capability):
        return (
            f"The engine was built for {built_gpu} (compute capability {built_cc}) but this GPU is {gpu_name} "
            f"(compute capability {compute_capability}); rebuild it here."
        )
    return None


def check_engine(engine_path: Path, device: str = "cuda:0") -> dict[str, Any]:
    """Read an engine's metadata and refuse it unless TensorRT and the same GPU are here."""
    meta = read_engine_metadata(engine_path)
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(reason)
    dev = torch.device(device)
    if dev.type != "cuda":
        raise BackendUnavailableError(f"A TensorRT engine runs on a CUDA device; use cuda:N, not {device}.")
    gpu = cuda_device_details(dev)
    problem = engine_mismatch(
        meta,
        trt_version=tensorrt_version() or "unknown",
        gpu_name=gpu["device_name"],
        compute_capability=gpu["compute_capability"],
    )
    if problem is not None:
        raise UserInputError(problem)
    return meta


class EngineRunner(TensorRTRunner):
    """A serialized engine file, deserialized (not rebuilt) and timed like :class:`TensorRTRunner`.

    Call :func:`check_engine` first: this runner trusts the file it is given.
    """

    def __init__(self, engine_path: Path, spec: RunnerSpec, metadata: dict[str, Any]) -> None:
        super().__init__(Path(engine_path), spec)
        self.engine_path = Path(engine_path)
        self.engine_meta = dict(metadata)

    def info(self) -> RunnerInfo:
        """As :class:`TensorRTRunner`, with the engine's own precision (which may be int8)."""
        base = super().info()
        details = {**base.details, "engine_path": str(self.engine_path), "built_with": self.engine_meta}
        return replace(base, precision=str(self.engine_meta.get("precision") or base.precision), details=details)

    def _prepare_onnx(self, dev: torch.device) -> None:
        # Nothing to export or parse: the engine already exists.
        self.onnx_path = None
        self.onnx_sha256 = self.engine_meta.get("onnx_sha256")
        self.onnx_opset = self.engine_meta.get("opset")

    def _build_and_load(self) -> None:
        import tensorrt as trt

        assert self._device is not None
        logger = make_trt_logger(trt)
        self.plan = self.engine_path.read_bytes()
        self._build_facts = {"engine_sha256": file_sha256(self.engine_path), "tf32": self.engine_meta.get("tf32")}
        self._load_plan(trt, logger, f"The engine {self.engine_path}")
