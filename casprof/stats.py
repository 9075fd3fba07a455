"""One immutable measurement: raw samples plus the statistics derived from them.

In the spirit of ``torch.utils.benchmark.Measurement``: the raw samples (for example
per-round latencies in milliseconds, in the order measured) are the source of truth; the
median, spread, bootstrap confidence interval of the median and a noise warning are derived
from them. A cost ``c_o = c'_o - c'_id`` is built with :func:`paired_difference`, pairing
each round's probe sample with the same round's baseline sample; its values may be negative
and are never clamped.

Only numpy is needed; nothing happens at import time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "NOISE_THRESHOLD",
    "MIN_SAMPLES",
    "Measurement",
    "paired_difference",
    "merge",
]

#: A measurement whose IQR exceeds this fraction of its median gets a noise warning
#: (the same rule as ``torch.utils.benchmark``).
NOISE_THRESHOLD: float = 0.10

#: Fewer samples than this always get a "too few samples" warning.
MIN_SAMPLES: int = 5

#: Two-mode check (:meth:`Measurement.modes`): at least this many samples, each cluster at least
#: this share of them, and a gap between the clusters of at least this fraction of ``|median|``
#: and at least twice the wider cluster's range. Seen with eager PyTorch on a 2-vCPU VM: a
#: probe's rounds at 188-230 ms and at 396-447 ms, the median describing only the larger cluster.
MODES_MIN_SAMPLES: int = 10
MODES_MIN_SHARE: float = 0.2
MODES_MIN_GAP: float = 0.25

# norm.ppf(0.75): dividing the raw MAD by it makes the MAD a consistent estimator of the
# standard deviation of a normal distribution (scipy's ``scale="normal"``).
_NORMAL_MAD_SCALE: float = 0.6744897501960817

# Upper bound on the number of elements materialised at once while bootstrapping.
_BOOTSTRAP_CHUNK_ELEMENTS: int = 4_000_000


def _to_float_tuple(samples: Any) -> tuple[float, ...]:
    """Turn a sequence / numpy array of numbers into a validated tuple of python floats."""
    if isinstance(samples, (str, bytes)):
        raise ValueError("samples must be a sequence of numbers, not a string")
    if isinstance(samples, Iterable) and not isinstance(samples, (np.ndarray, list, tuple)):
        samples = list(samples)  # generators, ranges, deques, ...
    try:
        arr = np.asarray(samples, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"samples must be numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"samples must be one-dimensional, got shape {arr.shape}")
    if arr.size < 1:
        raise ValueError("a measurement needs at least one sample")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"samples must all be finite; {bad} of {arr.size} are NaN or infinite")
    return tuple(float(v) for v in arr)


def _ratio(num: float, den: float) -> float:
    """``num / |den|`` without warnings: inf if den == 0 < num, 0 if both are 0."""
    den = abs(den)
    if den == 0.0:
        return math.inf if num > 0.0 else 0.0
    return num / den


def _json_float(x: float) -> float | None:
    """A float for strict JSON: non-finite values become ``None``."""
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True, repr=False)
class Measurement:
    """Raw samples of one quantity (in ``unit``) and the statistics derived from them."""

    samples: tuple[float, ...]
    unit: str = "ms"

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", _to_float_tuple(self.samples))
        if not isinstance(self.unit, str):
            raise ValueError(f"unit must be a string, got {type(self.unit).__name__}")
        # Private cache; not a dataclass field, so it takes no part in ==, hash or replace().
        object.__setattr__(self, "_cache", {})

    # ------------------------------------------------------------------ internals
    def _get(self, key: str, compute: Any) -> Any:
        cache: dict[str, Any] = self._cache  # type: ignore[attr-defined]
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    @property
    def _array(self) -> np.ndarray:
        """The samples as a read-only float64 array."""

        def make() -> np.ndarray:
            arr = np.array(self.samples, dtype=float)
            arr.setflags(write=False)
            return arr

        return self._get("array", make)

    # ------------------------------------------------------------------ statistics
    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.samples)

    @property
    def median(self) -> float:
        """Median of the samples."""
        return self._get("median", lambda: float(np.median(self._array)))

    @property
    def mean(self) -> float:
        """Arithmetic mean of the samples."""
        return self._get("mean", lambda: float(np.mean(self._array)))

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); 0 for a single sample."""
        return self._get(
            "std", lambda: float(np.std(self._array, ddof=1)) if self.n > 1 else 0.0
        )

    @property
    def min(self) -> float:
        """Smallest sample."""
        return min(self.samples)

    @property
    def max(self) -> float:
        """Largest sample."""
        return max(self.samples)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0..100, linear interpolation like ``numpy.percentile``)."""
        p = float(p)
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be within [0, 100], got {p}")
        return float(np.percentile(self._array, p))

    @property
    def q1(self) -> float:
        """First quartile (25th percentile)."""
        return self._get("q1", lambda: self.percentile(25.0))

    @property
    def q3(self) -> float:
        """Third quartile (75th percentile)."""
        return self._get("q3", lambda: self.percentile(75.0))

    @property
    def iqr(self) -> float:
        """Interquartile range ``q3 - q1``."""
        return self.q3 - self.q1

    @property
    def mad(self) -> float:
        """Median absolute deviation scaled to a normal's std (scipy ``scale="normal"``)."""

        def compute() -> float:
            x = self._array
            return float(np.median(np.abs(x - np.median(x)))) / _NORMAL_MAD_SCALE

        return self._get("mad", compute)

    @property
    def cov(self) -> float:
        """Coefficient of variation ``std / |mean|`` (inf if mean == 0 < std, 0 if both 0)."""
        return _ratio(self.std, self.mean)

    @property
    def relative_spread(self) -> float:
        """``iqr / |median|`` (inf if median == 0 < iqr, 0 if both are 0)."""
        return _ratio(self.iqr, self.median)

    # ------------------------------------------------------------------ confidence interval
    def ci(
        self, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
    ) -> tuple[float, float]:
        """Bootstrap (percentile method) confidence interval of the median.

        Deterministic for a given ``seed``. A single sample gives ``(x, x)``.
        """
        confidence = float(confidence)
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be within (0, 1), got {confidence}")
        n_resamples = int(n_resamples)
        if n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
        x = self._array
        n = x.size
        if n == 1:
            return (float(x[0]), float(x[0]))
        rng = np.random.default_rng(seed)
        medians = np.empty(n_resamples, dtype=float)
        rows = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
        for start in range(0, n_resamples, rows):
            stop = min(n_resamples, start + rows)
            idx = rng.integers(0, n, size=(stop - start, n))
            medians[start:stop] = np.median(x[idx], axis=1)
        alpha = 1.0 - confidence
        lo, hi = np.percentile(medians, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
        return (float(lo), float(hi))

    @property
    def ci95(self) -> tuple[float, float]:
        """``ci()`` with the defaults (95 %, 2000 resamples, seed 0), cached."""
        return self._get("ci95", self.ci)

    @property
    def interval_includes_zero(self) -> bool:
        """True when the 95 % interval of the median contains zero."""
        lo, hi = self.ci95
        return lo <= 0.0 <= hi

    # ------------------------------------------------------------------ noise
    def modes(self) -> tuple[tuple[int, float], tuple[int, float]] | None:
        """Two well separated clusters of samples, as ``((count, median), (count, median))`` from
        the lower to the higher, or None (see ``MODES_MIN_SAMPLES`` and the two thresholds)."""
        if self.n < MODES_MIN_SAMPLES:
            return None
        x = np.sort(self._array)
        gaps = np.diff(x)
        k = int(np.argmax(gaps))  # the widest gap splits x[: k + 1] from x[k + 1 :]
        low, high = x[: k + 1], x[k + 1 :]
        if min(low.size, high.size) < MODES_MIN_SHARE * self.n:
            return None
        widest = max(low[-1] - low[0], high[-1] - high[0])
        if not (gaps[k] >= MODES_MIN_GAP * abs(self.median) and gaps[k] >= 2 * widest):
            return None
        return (int(low.size), float(np.median(low))), (int(high.size), float(np.median(high)))

    def noise_warning(self, threshold: float = NOISE_THRESHOLD) -> str | None:
        """One sentence warning of too few samples, too much noise or two modes, else ``None``."""
        problems: list[str] = []
        if self.n < MIN_SAMPLES:
            problems.append(f"too few samples (n={self.n}, fewer than {MIN_SAMPLES})")
        spread = self.relative_spread
        if spread > threshold:
            pct = "infinite" if math.isinf(spread) else f"{spread:.1%}"
            problems.append(
                f"high noise (IQR is {pct} of the median, above the {threshold:.0%} threshold)"
            )
        two = self.modes()
        if two is not None:
            (n_lo, m_lo), (n_hi, m_hi) = two
            problems.append(
                f"two modes ({n_lo} samples around {m_lo:.4g} {self.unit}, {n_hi} around {m_hi:.4g} {self.unit}; "
                "the median describes one of them)"
            )
        if not problems:
            return None
        text = " and ".join(problems)
        return f"Unreliable measurement: {text}."

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (strict JSON: non-finite derived values become ``None``)."""
        lo, hi = self.ci95
        return {
            "unit": self.unit,
            "n": self.n,
            "median": _json_float(self.median),
            "mean": _json_float(self.mean),
            "std": _json_float(self.std),
            "iqr": _json_float(self.iqr),
            "mad": _json_float(self.mad),
            "min": _json_float(self.min),
            "max": _json_float(self.max),
            "ci95": [_json_float(lo), _json_float(hi)],
            "relative_spread": _json_float(self.relative_spread),
            "noise_warning": self.noise_warning(),
            "samples": list(self.samples),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        """Rebuild from ``d["samples"]`` and ``d["unit"]`` (default "ms"); the rest is ignored."""
        if "samples" not in d:
            raise ValueError("measurement dict has no 'samples'")
        return cls(samples=d["samples"], unit=d.get("unit", "ms"))

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        return f"Measurement(median={self.median:.4g} {self.unit}, IQR={self.iqr:.3g}, n={self.n})"

    __str__ = __repr__


def paired_difference(a: Measurement, b: Measurement) -> Measurement:
    """Element-wise ``a_i - b_i`` of two same-length, same-unit measurements.

    Used for ``c_o = c'_o - c'_id`` per measurement round (same-round pairing cancels slow
    drift). Negative values are kept, never clamped.
    """
    if a.unit != b.unit:
        raise ValueError(f"cannot pair measurements in different units: {a.unit!r} vs {b.unit!r}")
    if a.n != b.n:
        raise ValueError(f"cannot pair measurements of different lengths: {a.n} vs {b.n}")
    return Measurement(samples=tuple(x - y for x, y in zip(a.samples, b.samples)), unit=a.unit)


def merge(*ms: Measurement) -> Measurement:
    """Concatenate the samples of one or more same-unit measurements, in order."""
    if not ms:
        raise ValueError("merge needs at least one measurement")
    unit = ms[0].unit
    for m in ms[1:]:
        if m.unit != unit:
            raise ValueError(f"cannot merge measurements in different units: {unit!r} vs {m.unit!r}")
    return Measurement(samples=tuple(v for m in ms for v in m.samples), unit=unit)
