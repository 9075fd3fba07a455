"""Comparing and checking profiles: per-operation changes with significance, and sanity checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from casprof.calibration import MAX_BASELINE_DRIFT_PCT, baseline_drift_pct
from casprof.errors import UserInputError
from casprof.hardware import HardwareFingerprint, describe_recorded, same_recorded_hardware
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.profile import Method, Metric, Profile
from casprof.stats import Measurement


def median_difference_ci(a: Measurement, b: Measurement, confidence: float = 0.95, n_resamples: int = 2000,
                         seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of ``median(b) - median(a)`` for two independent samples."""
    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a.samples), np.asarray(b.samples)
    ma = np.median(xa[rng.integers(0, xa.size, (n_resamples, xa.size))], axis=1)
    mb = np.median(xb[rng.integers(0, xb.size, (n_resamples, xb.size))], axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(mb - ma, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class CostChange:
    """How one operation's cost changed from profile A to profile B."""

    cell_type: str
    op: str
    metric: str
    a: float
    b: float
    interval: tuple[float, float] | None
    significant: bool | None

    @property
    def change(self) -> float:
        return self.b - self.a

    @property
    def ratio(self) -> float | None:
        return self.b / self.a if self.a else None


def diff_profiles(a: Profile, b: Profile, metric: str = Metric.LATENCY_MS.value) -> list[CostChange]:
    """Per-operation change of ``metric``; latency changes carry a bootstrap interval of the difference.

    A change is significant when that interval excludes zero; exact counts are significant when
    they differ at all; estimates have no interval (``significant`` is ``None``).
    """
    a.require_network(b.network)
    if metric not in a.metrics or metric not in b.metrics:
        raise UserInputError(f"Both profiles must have the metric {metric!r}.")
    changes = []
    for t in CELL_TYPES:
        for op in candidate_ops(t):
            ca, cb = a.cost(t, op, metric), b.cost(t, op, metric)
            interval: tuple[float, float] | None = None
            significant: bool | None
            if ca.measurement is not None and cb.measurement is not None:
                interval = median_difference_ci(ca.measurement, cb.measurement)
                significant = not (interval[0] <= 0.0 <= interval[1])
            elif ca.source in ("exact", "definition") and cb.source in ("exact", "definition"):
                significant = ca.value != cb.value
            else:
                significant = None
            changes.append(CostChange(t, op, metric, ca.value, cb.value, interval, significant))
    return changes


#: Measurement settings compared by :func:`condition_differences`, with the value a profile that
#: predates a setting was measured under.
COMPARED_SETTINGS: dict[str, object] = {
    "rounds": None, "sweeps": 1, "instances": None, "baseline_instances": None, "warmup_iters": None,
    "warmup_passes": 0, "seed": None, "exporter": None, "ort_shared_pool": False, "cpu_allocator": "system",
    "probes_per_bracket": 1, "ort_shared_arena": False, "memory_format": "contiguous",
}


def condition_differences(a: Profile, b: Profile) -> list[str]:
    """What differs between how ``a`` and ``b`` were made (``"name: A → B"``), beyond the costs:
    device, hardware, method, backend and its version, precision, threads, input size and the
    measurement settings of :data:`COMPARED_SETTINGS`."""
    same = same_recorded_hardware(a.hardware, b.hardware)  # not the digests: older ones miss a CPU's generation
    pairs: list[tuple[str, object, object]] = [
        ("device", a.device, b.device),
        ("hardware", None if same else _hardware_label(a), None if same else _hardware_label(b)),
        ("method", a.method.value, b.method.value),
        ("backend", a.backend.name, b.backend.name),
        ("backend version", a.backend.version, b.backend.version),
        ("precision", a.backend.precision, b.backend.precision),
        ("threads", a.backend.threads, b.backend.threads),
        ("input size", "x".join(map(str, a.input_size)), "x".join(map(str, b.input_size))),
    ]
    pairs += [(k, a.settings.get(k, d), b.settings.get(k, d)) for k, d in COMPARED_SETTINGS.items()]
    return [f"{name}: {va} → {vb}" for name, va, vb in pairs if va != vb]


def _hardware_label(profile: Profile) -> str:
    return f"{profile.hardware.get('digest')} ({describe_recorded(profile.hardware)})"


@dataclass(frozen=True)
class Finding:
    level: str  # "warning" or "info"
    message: str


def check_profile(profile: Profile, present: HardwareFingerprint | None = None) -> list[Finding]:
    """Sanity findings for a profile that already loaded (schema and fingerprints are checked on load)."""
    findings: list[Finding] = []
    if profile.method is Method.ESTIMATED:
        findings.append(Finding("warning", "This profile is an ESTIMATE from spec-sheet figures, not a measurement."))
    lat = Metric.LATENCY_MS.value
    if lat in profile.metrics:
        base = profile.baseline[lat]
        if base.measurement is not None and base.measurement.noise_warning():
            findings.append(Finding("warning", f"baseline c'_id: {base.measurement.noise_warning()}"))
        for t in CELL_TYPES:
            for op in candidate_ops(t):
                cost = profile.cost(t, op, lat)
                if cost.measurement is None:
                    continue
                lo, hi = cost.interval
                if cost.interval_includes_zero:
                    findings.append(Finding(
                        "info", f"{t}/{op}: c_o = {cost.value:.3f} ms, its 95% interval [{lo:.3f}, {hi:.3f}] includes zero."
                    ))
                note = cost.measurement.noise_warning()
                if note:
                    findings.append(Finding("warning", f"{t}/{op}: {note}"))
    if profile.calibration is not None:
        # An offset whose interval includes 0 may move predictions the wrong way (measured on an H100:
        # -0.38 ms, interval [-0.82, +0.00], made the mean error -3.7 % where none gave +0.5 %).
        level = "warning" if profile.calibration.indistinguishable_from_none else "info"
        findings.append(Finding(level, f"calibrated: {profile.calibration.summary()}."))
        drift = calibration_drift_pct(profile)
        if drift is not None and abs(drift) > MAX_BASELINE_DRIFT_PCT:
            findings.append(Finding(
                "warning", f"calibrated while the baseline network ran {drift:+.1f} % from c'_id (beyond "
                           f"{MAX_BASELINE_DRIFT_PCT:g} %): the calibration fits the machine's speed change, not the "
                           "profile's error; calibrate again on a machine as fast as when the profile was made."))
    if present is not None and profile.hardware.get("digest") and not present.recorded_here(profile.hardware):
        findings.append(Finding("info", f"The profile was made on other hardware ({describe_recorded(profile.hardware)}) "
                                        f"than this machine ({present.describe()})."))
    return findings


def calibration_drift_pct(profile: Profile) -> float | None:
    """How far (%) the baseline network ran from c'_id while the profile's calibration was timed, if recorded."""
    cal = profile.calibration
    if cal is None or cal.baseline_now_ms is None:
        return None
    return baseline_drift_pct(profile.baseline[Metric.LATENCY_MS.value].value, cal.baseline_now_ms)
