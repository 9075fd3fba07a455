"""How well one set of numbers predicts another: error, band shares, rank correlation, linear fits.

Pure functions on plain sequences (numpy and scipy only), used by ``casprof fidelity`` and the
estimator benchmark. A *proxy* (MACs, parameter count) has no unit of time, so before it is
compared with measured latencies it is fitted to them by least squares (``a * x + b``); the
comparison is then as fair to the proxy as it can be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Agreement:
    """Agreement of predictions with measurements (errors relative to the measurement).

    Attributes:
        mape: mean absolute percentage error, in percent.
        worst: the largest absolute percentage error, in percent.
        within_5: share (0..1) of predictions within +-5% of the measurement.
        within_10: share within +-10%.
        kendall_tau, spearman_rho: rank correlations (``None`` with fewer than 2 distinct values).
        n: number of pairs.
        bias: the mean signed percentage error (a level shift: all predictions too high or too low).
        spread: the standard deviation of the signed percentage errors around ``bias`` (the
            scatter, which is what reorders networks; MAPE mixes both).
    """

    mape: float
    worst: float
    within_5: float
    within_10: float
    kendall_tau: float | None
    spearman_rho: float | None
    n: int
    bias: float = 0.0
    spread: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arrays(predicted: Sequence[float], measured: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != m.shape or p.ndim != 1 or p.size < 2:
        raise ValueError("predicted and measured must be two 1-D sequences of the same length (at least 2)")
    if np.any(m <= 0):
        raise ValueError("measurements must be positive to compute relative errors")
    return p, m


def percentage_errors(predicted: Sequence[float], measured: Sequence[float]) -> np.ndarray:
    """Signed errors ``100 * (predicted - measured) / measured``."""
    p, m = _arrays(predicted, measured)
    return 100.0 * (p - m) / m


def _correlation(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def agreement(predicted: Sequence[float], measured: Sequence[float]) -> Agreement:
    """MAPE, worst error, shares within +-5% / +-10%, Kendall tau and Spearman rho."""
    p, m = _arrays(predicted, measured)
    signed = 100.0 * (p - m) / m
    err = np.abs(signed)
    constant = np.ptp(p) == 0 or np.ptp(m) == 0
    tau = None if constant else _correlation(stats.kendalltau(p, m).statistic)
    rho = None if constant else _correlation(stats.spearmanr(p, m).statistic)
    return Agreement(
        mape=float(err.mean()),
        worst=float(err.max()),
        within_5=float(np.mean(err <= 5.0)),
        within_10=float(np.mean(err <= 10.0)),
        kendall_tau=tau,
        spearman_rho=rho,
        n=int(p.size),
        bias=float(signed.mean()),
        spread=float(signed.std()),
    )


@dataclass(frozen=True)
class LinearFit:
    """``y ~ slope * x + intercept`` by least squares."""

    slope: float
    intercept: float

    def __call__(self, x: Sequence[float]) -> np.ndarray:
        return self.slope * np.asarray(x, dtype=float) + self.intercept

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Least-squares line through ``(x, y)``; a constant ``x`` gets slope 0 and the mean of ``y``."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1 or xa.size < 2:
        raise ValueError("x and y must be two 1-D sequences of the same length (at least 2)")
    if np.ptp(xa) == 0:
        return LinearFit(0.0, float(ya.mean()))
    slope, intercept = np.polyfit(xa, ya, 1)
    return LinearFit(float(slope), float(intercept))


def proxy_agreement(proxy: Sequence[float], measured: Sequence[float]) -> tuple[Agreement, LinearFit]:
    """Agreement of a unit-less proxy (MACs, parameters) after fitting it linearly to the measurements."""
    fit = linear_fit(proxy, measured)
    return agreement(fit(proxy), measured), fit


def retest_error(first: Sequence[float], second: Sequence[float]) -> float:
    """The measurement's own noise: mean over networks of ``|m1 - m2| / mean(m1, m2)``, in percent."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 1:
        raise ValueError("first and second must be two 1-D sequences of the same length")
    return float(np.mean(np.abs(a - b) / ((a + b) / 2.0)) * 100.0)


def retest_kendall_tau(first: Sequence[float], second: Sequence[float]) -> float | None:
    """How well the measurement ranks the networks against itself: Kendall tau of m1 against m2.

    A profile cannot be expected to rank the networks much better than two independent
    measurements of them agree with each other, so this is the yardstick beside the profile's own
    tau. Each of m1 and m2 holds half the runs; the full measurement is less noisy, so a perfect
    predictor would usually score a little above it. ``None`` with fewer than 2 networks or a
    constant side.
    """
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("first and second must be two 1-D sequences of the same length")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return _correlation(stats.kendalltau(a, b).statistic)
