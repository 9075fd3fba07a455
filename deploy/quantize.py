"""A Q/DQ int8 ONNX file from a float32 one (ONNX Runtime static quantization, on the CPU).

TensorRT 10.1+ deprecated, and 11.0 removed, implicit int8 calibration (``BuilderFlag.INT8`` and
calibrators): an int8 engine is built from an ONNX file that carries explicit
``QuantizeLinear``/``DequantizeLinear`` pairs. This module makes one with
``onnxruntime.quantization.quantize_static`` in ``QuantFormat.QDQ``, with the settings TensorRT
expects: signed int8 for activations and weights, symmetric ranges (zero point 0), per-channel
weight scales, MinMax calibration.

The calibration set here is seeded standard-normal inputs, because the project has no image
data set yet; the resulting scales are right for latency, not for accuracy. Calibrating on real
images (or with NVIDIA ModelOpt, ``modelopt.onnx.quantization.quantize``) is the way to a
usable int8 model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from casprof._io import file_sha256, give_usual_permissions
from casprof.errors import MeasurementError

#: Calibration inputs used by default (each is one seeded random input).
DEFAULT_CALIBRATION_SAMPLES = 8


@dataclass(frozen=True)
class QuantizeInfo:
    """What :func:`quantize_qdq` wrote and how."""

    path: Path
    sha256: str
    calibration_samples: int
    seed: int
    qdq_nodes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "format": "QDQ",
            "tool": "onnxruntime.quantization.quantize_static",
            "activation_type": "int8 (symmetric)",
            "weight_type": "int8 (symmetric, per channel)",
            "calibration": {
                "method": "MinMax",
                "samples": self.calibration_samples,
                "data": f"seeded standard-normal inputs (seed {self.seed}), not images",
            },
            "qdq_nodes": self.qdq_nodes,
        }


def calibration_inputs(input_shape: Sequence[int], samples: int, seed: int) -> Iterator[np.ndarray]:
    """``samples`` deterministic standard-normal float32 inputs of ``input_shape``."""
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        yield rng.standard_normal(tuple(int(s) for s in input_shape), dtype=np.float32)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs its "consider pre-processing" advice on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def quantize_qdq(
    onnx_path: Path,
    out_path: Path,
    input_shape: Sequence[int],
    *,
    samples: int = DEFAULT_CALIBRATION_SAMPLES,
    seed: int = 0,
) -> QuantizeInfo:
    """Write a Q/DQ int8 version of ``onnx_path`` to ``out_path`` (atomically).

    Raises:
        MeasurementError: quantization failed or produced no Q/DQ nodes (nothing is left behind).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            self._name = name
            self._it = calibration_inputs(input_shape, samples, seed)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {self._name: x}

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    input_name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp.onnx", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            with _quiet():
                quantize_static(
                    str(onnx_path),
                    str(tmp),
                    _Reader(input_name),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={
                        "ActivationSymmetric": True,
                        "WeightSymmetric": True,
                    },
                )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or ["(no message)"])[0]
            raise MeasurementError(f"int8 quantization with ONNX Runtime failed: {type(exc).__name__}: {first}") from exc
        proto = onnx.load(str(tmp), load_external_data=False)
        qdq = sum(1 for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
        if qdq == 0:
            raise MeasurementError("int8 quantization produced no QuantizeLinear/DequantizeLinear nodes.")
        give_usual_permissions(tmp)
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return QuantizeInfo(path=out_path, sha256=file_sha256(out_path), calibration_samples=samples, seed=seed, qdq_nodes=qdq)
