"""Output parity of a deployed network against its PyTorch reference (Polygraphy-style result).

:func:`compare_outputs` compares two logit tensors of shape ``(N, classes, H, W)`` and returns a
:class:`ParityResult`, which is truthy when the candidate passes its thresholds::

    result = compare_outputs(torch_logits, ort_logits, FP32)
    if not result:
        print(result.summary())

Two figures decide (README, "Deploy"):

- ``max_rel_error``: the largest absolute difference divided by the largest absolute reference
  value (a tensor-wide relative error, robust to logits near zero);
- ``argmax_agreement``: the share of pixels whose predicted class (argmax over the class axis)
  is the same in both outputs, the task-level check for segmentation.

Default thresholds, from the project notes (§4 of measuring-and-deploying.md): fp32 relative
error below 1e-4 with at least 99.9 % of pixels in the same class; TF32 (fp32 on a GPU whose
convolutions use TF32, as TensorRT does by default) and fp16 relative error below 1e-2 with at
least 99.5 %. The int8 thresholds are looser and informational only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FP16", "FP32", "INT8", "TF32", "ParityResult", "ParityThresholds", "compare_outputs", "thresholds_for"]


@dataclass(frozen=True)
class ParityThresholds:
    """When a candidate output counts as equal to the reference.

    Attributes:
        name: a label (``fp32``, ``tf32``, ``fp16``, ``int8``).
        max_rel_error: the relative error must be strictly below this.
        min_argmax_agreement: the share of pixels with the same class must be at least this.
    """

    name: str
    max_rel_error: float
    min_argmax_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_rel_error": self.max_rel_error,
            "min_argmax_agreement": self.min_argmax_agreement,
        }


FP32 = ParityThresholds("fp32", 1e-4, 0.999)
TF32 = ParityThresholds("tf32", 1e-2, 0.995)
FP16 = ParityThresholds("fp16", 1e-2, 0.995)
#: Informational only: int8 calibrated on random inputs says little about real images.
INT8 = ParityThresholds("int8", 1e-1, 0.98)


def thresholds_for(precision: str, device: str = "cpu") -> ParityThresholds:
    """The thresholds of a precision on a device (fp32 on a CUDA device means TF32 tolerances)."""
    p = str(precision).lower()
    if p == "fp16":
        return FP16
    if p == "int8":
        return INT8
    if p != "fp32":
        raise ValueError(f"no parity thresholds for precision {precision!r}")
    return TF32 if str(device).startswith("cuda") else FP32


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class ParityResult:
    """The comparison of one candidate output with the reference.

    Truthy when it passed: ``max_rel_error < thresholds.max_rel_error`` and
    ``argmax_agreement >= thresholds.min_argmax_agreement``. Non-finite candidate values make
    every error infinite.
    """

    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    argmax_agreement: float
    reference_max_abs: float
    shape: tuple[int, ...]
    thresholds: ParityThresholds

    @property
    def passed(self) -> bool:
        return (
            self.max_rel_error < self.thresholds.max_rel_error
            and self.argmax_agreement >= self.thresholds.min_argmax_agreement
        )

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[str]:
        """What failed, as short phrases (empty when it passed)."""
        out = []
        t = self.thresholds
        if not self.max_rel_error < t.max_rel_error:
            out.append(f"relative error {self.max_rel_error:.3g} is not below {t.max_rel_error:g}")
        if not self.argmax_agreement >= t.min_argmax_agreement:
            out.append(
                f"only {self.argmax_agreement:.4%} of pixels have the same class (at least {t.min_argmax_agreement:.2%} needed)"
            )
        return out

    def summary(self) -> str:
        """One line: the figures and the verdict."""
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.failures())
        return (
            f"max rel error {self.max_rel_error:.2e}, max abs error {self.max_abs_error:.2e}, "
            f"same class {self.argmax_agreement:.4%} ({self.thresholds.name} thresholds: "
            f"< {self.thresholds.max_rel_error:g}, ≥ {self.thresholds.min_argmax_agreement:.2%}) — {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "max_abs_error": _json_float(self.max_abs_error),
            "max_rel_error": _json_float(self.max_rel_error),
            "mean_abs_error": _json_float(self.mean_abs_error),
            "argmax_agreement": self.argmax_agreement,
            "reference_max_abs": _json_float(self.reference_max_abs),
            "shape": list(self.shape),
            "thresholds": self.thresholds.to_dict(),
        }


def compare_outputs(reference: Any, candidate: Any, thresholds: ParityThresholds = FP32) -> ParityResult:
    """Compare ``candidate`` logits with ``reference`` logits (``(N, classes, ...)``).

    Raises:
        ValueError: the shapes differ or the arrays have fewer than two dimensions.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"the outputs have different shapes: {tuple(cand.shape)} vs the reference's {tuple(ref.shape)}")
    if ref.ndim < 2 or ref.size == 0:
        raise ValueError(f"logits of shape (N, classes, ...) are expected, got {tuple(ref.shape)}")
    ref_max = float(np.max(np.abs(ref)))
    if np.all(np.isfinite(cand)) and np.all(np.isfinite(ref)):
        diff = np.abs(cand - ref)
        max_abs = float(diff.max())
        mean_abs = float(diff.mean())
        if ref_max > 0.0:
            max_rel = max_abs / ref_max
        else:
            max_rel = 0.0 if max_abs == 0.0 else math.inf
    else:
        max_abs = mean_abs = max_rel = math.inf
    agreement = float(np.mean(np.argmax(ref, axis=1) == np.argmax(cand, axis=1)))
    return ParityResult(
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        mean_abs_error=mean_abs,
        argmax_agreement=agreement,
        reference_max_abs=ref_max,
        shape=tuple(int(s) for s in ref.shape),
        thresholds=thresholds,
    )
