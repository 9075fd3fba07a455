"""A profile's latency calibrated on real derived networks: an offset, or an offset and a factor.

The per-edge model (:mod:`casprof.edge_model`) predicts a derived network as c'_id plus its
operations' part (its edges' costs minus the structure a derived cell lacks), from probe networks
alone. Two things drift between the probes and a real network:

* the level: measured on the 2-core CI machine with ONNX Runtime, the fidelity checks of one
  profile were off by the same -3.3 to -4.2 % in three checks over 2.5 hours, while another
  profile of the same machine was off by -0.2 to +0.2 %;
* the scale: a torch CPU profile checked three hours after it was made ran its operations about
  18 % faster than measured, which one offset in ms cannot follow (it moved the all-cheapest
  network, whose operations' part is negative, to -35 %).

``casprof calibrate`` times random derived networks exactly as ``casprof fidelity`` does (blocks,
sweeps, two instances, runs bracketed by the baseline network, anchored at c'_id) and fits

* ``affine`` (``--form affine``, schema 4): measured - c'_id = offset + factor * operations' part, a
  least-absolute-deviations line (the median's counterpart for a line: one bad network cannot
  drag it). Random networks span too little of the operations' range to pin a slope, so the
  calibration adds ``LEVERAGE_NETWORKS`` networks drawn from the cheapest and from the costliest
  quarter of each cell type's operations (by the profile's own costs). Intervals come from a
  bootstrap over the networks, resampled within their kind.
* ``offset`` (the default, as in schema 3): the median over the networks of (measured - prediction), its interval
  from the residuals.

``casprof predict`` then adds ``offset + (factor - 1) * operations' part`` to every latency
prediction, and says so. Genotype seeds are ``CALIBRATION_SEED_BASE + 1000 * seed + k``, never
those of a fidelity check (the check refuses an overlap). The fit is a few numbers from a few
networks: it moves the level and the scale; the scatter (what reorders networks) stays the
profile's own. Exact metrics (parameters, MACs) are never calibrated.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from casprof.errors import MeasurementError, UserInputError
from casprof.genotype import Genotype, random_genotype
from casprof.measure import Progress, ProgressCallback
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.stats import Measurement
from casprof.sweeps import NETWORK_SWEEPS, sweep_rounds

if TYPE_CHECKING:  # pragma: no cover
    from casprof.build_cache import BuildCache
    from casprof.hardware import HardwareFingerprint
    from casprof.profile import Profile

#: Calibration genotypes use seeds from here on, far from a fidelity check's ``1000 * seed + k``.
CALIBRATION_SEED_BASE = 1_000_000_000

#: The fewest random networks a calibration accepts (a median of fewer is one network's noise).
MIN_NETWORKS = 3

#: The most random networks (the leverage networks take seeds ``1000 * seed + 999`` downwards).
MAX_NETWORKS = 990

#: Networks an affine calibration adds to pin the factor: half from the cheapest, half from the
#: costliest share of each cell type's operations.
LEVERAGE_NETWORKS = 4
LEVERAGE_SHARE = 0.25

#: How far (in %) the baseline network's time during a calibration may stray from the profile's c'_id
#: before the calibration is refused. Beyond it the machine itself runs at another speed than when the
#: profile was made, and the residuals fit that change, not the profile's error: on a lent H100 (27 Nov)
#: a calibration timed while the baseline ran 42 % slower than c'_id (8.29 vs 5.81 ms) stored +2.94 ms,
#: and the fidelity check minutes later (baseline back at 5.22 ms) found MAPE 27 % with it and 3.9 %
#: without. The CPU calibrations that helped were timed at -0.1 to +17.2 %.
MAX_BASELINE_DRIFT_PCT = 20.0

#: Bootstrap resamples for the affine fit's intervals (seeded: the same networks give the same file).
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


class CalibrationForm(str, enum.Enum):
    """What a calibration fits: an offset, or an offset and a factor on the operations' part."""

    AFFINE = "affine"
    OFFSET = "offset"


class NetworkKind(str, enum.Enum):
    """Where a calibration network's operations come from."""

    RANDOM = "random"
    CHEAPEST = "cheapest-quarter"
    COSTLIEST = "costliest-quarter"


@dataclass(frozen=True)
class CalibrationSettings:
    """How many derived networks calibrate the latency, what is fitted, and how they are timed.

    Args:
        networks: random derived networks to time (an affine fit adds ``LEVERAGE_NETWORKS``).
        seed: random network ``k`` uses genotype seed ``CALIBRATION_SEED_BASE + 1000 * seed + k``.
        form: affine (offset and factor) or offset only.
        rounds, sweeps, block_size, baseline_instances: as in :class:`casprof.fidelity.FidelitySettings`.
        max_drift_pct: the calibration is refused when the baseline network's median time during it
            differs from the profile's c'_id by more than this (%): see ``MAX_BASELINE_DRIFT_PCT``.
    """

    networks: int = 8
    seed: int = 0
    form: CalibrationForm = CalibrationForm.OFFSET
    rounds: int = 24
    sweeps: int = NETWORK_SWEEPS
    block_size: int = 8
    baseline_instances: int = 4
    max_drift_pct: float = MAX_BASELINE_DRIFT_PCT

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_drift_pct) and self.max_drift_pct > 0):
            raise UserInputError("The largest baseline drift allowed must be a positive number of percent, "
                                 f"got {self.max_drift_pct}.")
        if self.networks < MIN_NETWORKS:
            raise UserInputError(f"A calibration needs at least {MIN_NETWORKS} networks, got {self.networks}.")
        if not 0 <= self.seed < 1_000_000:
            raise UserInputError(f"The calibration seed must be between 0 and 999999, got {self.seed}.")
        if self.networks > MAX_NETWORKS:
            raise UserInputError(f"A calibration takes at most {MAX_NETWORKS} networks, got {self.networks}.")
        from casprof.fidelity import check_timing_plan  # fidelity imports scipy: on use

        check_timing_plan(self)

    @property
    def leverage_networks(self) -> int:
        return LEVERAGE_NETWORKS if self.form is CalibrationForm.AFFINE else 0

    def genotype_seed(self, k: int) -> int:
        return CALIBRATION_SEED_BASE + 1000 * self.seed + k

    def leverage_seed(self, k: int) -> int:
        return CALIBRATION_SEED_BASE + 1000 * self.seed + 999 - k

    def sweep_rounds(self, sweep: int) -> range:
        return sweep_rounds(self.rounds, self.sweeps, sweep)

    def to_dict(self) -> dict[str, Any]:
        from casprof.fidelity import BLOCK_TIMING  # the timing of time_blocks; fidelity imports this module

        return {"networks": self.networks, "leverage_networks": self.leverage_networks, "seed": self.seed,
                "form": self.form.value, "rounds": self.rounds, "sweeps": self.sweeps, "block_size": self.block_size,
                "baseline_instances": self.baseline_instances, "max_drift_pct": self.max_drift_pct, **BLOCK_TIMING,
                "genotype_seeds": f"{CALIBRATION_SEED_BASE} + 1000 * seed + k (random), + 999 - k (leverage)"}


@dataclass(frozen=True)
class CalibrationNetwork:
    """One calibration network: seed, kind, prediction without calibration, anchored measurement.

    ``operations_ms`` is the prediction's operations' part (prediction - c'_id); files of schema 3
    did not record it.
    """

    seed: int
    predicted_ms: float
    measured_ms: float
    kind: NetworkKind = NetworkKind.RANDOM
    operations_ms: float | None = None

    @property
    def residual_ms(self) -> float:
        return self.measured_ms - self.predicted_ms

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "kind": self.kind.value, "predicted_ms": self.predicted_ms,
                "operations_ms": self.operations_ms, "measured_ms": self.measured_ms, "residual_ms": self.residual_ms}

    @classmethod
    def from_dict(cls, n: Any) -> CalibrationNetwork:
        ops = n.get("operations_ms")
        net = cls(int(n["seed"]), float(n["predicted_ms"]), float(n["measured_ms"]),
                  NetworkKind(n.get("kind", NetworkKind.RANDOM.value)), None if ops is None else float(ops))
        if "residual_ms" in n and not math.isclose(float(n["residual_ms"]), net.residual_ms, rel_tol=1e-9, abs_tol=1e-9):
            raise UserInputError(f"The profile's calibration network {net.seed}: its residual_ms is not measured_ms - predicted_ms.")
        return net


# --- fitting ------------------------------------------------------------------------------------


def lad_line(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The least-absolute-deviations line ``y = a + b x`` as ``(a, b)``.

    Exact: some optimal line passes through two of the points, so every pair is tried (n <= a few
    dozen here). Ties go to the first pair in order.

    Raises:
        ValueError: fewer than two distinct x.
    """
    a, b = _lad_lines(np.asarray(x, float)[None, :], np.asarray(y, float)[None, :])
    if not (math.isfinite(a[0]) and math.isfinite(b[0])):
        raise ValueError("a line needs at least two points with different x")
    return float(a[0]), float(b[0])


def _lad_lines(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise :func:`lad_line` of ``(R, n)`` arrays; NaN where a row has a single x."""
    i, j = np.triu_indices(x.shape[1], k=1)
    dx = x[:, j] - x[:, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(dx != 0, (y[:, j] - y[:, i]) / dx, np.nan)
        # the intercept in a form symmetric in the two points (y_i - b x_i is not): a resample that holds
        # the same pair in the other order gets the same bits, so the point estimate never falls an ulp
        # outside its own bootstrap interval
        a = np.where(dx != 0, (y[:, i] * x[:, j] - y[:, j] * x[:, i]) / dx, np.nan)
    cost = np.abs(y[:, None, :] - a[:, :, None] - b[:, :, None] * x[:, None, :]).sum(axis=2)
    cost = np.where(np.isnan(cost), np.inf, cost)
    best = cost.argmin(axis=1)
    rows = np.arange(x.shape[0])
    ok = np.isfinite(cost[rows, best])
    return np.where(ok, a[rows, best], np.nan), np.where(ok, b[rows, best], np.nan)


def bootstrap_lad(x: np.ndarray, y: np.ndarray, strata: Sequence[str], resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> tuple[tuple[float, float], tuple[float, float]]:
    """95 % percentile intervals of the LAD line's ``a`` and ``b``, resampling points within their stratum."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(np.asarray(strata) == s) for s in dict.fromkeys(strata)]
    idx = np.concatenate([g[rng.integers(0, len(g), size=(resamples, len(g)))] for g in groups], axis=1)
    a_all, b_all = [], []
    for chunk in np.array_split(idx, max(1, resamples // 200)):
        a, b = _lad_lines(x[chunk], y[chunk])
        a_all.append(a)
        b_all.append(b)
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return ((float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))),
            (float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))))


def _affine_points(networks: Sequence[CalibrationNetwork]) -> tuple[np.ndarray, np.ndarray]:
    """The affine fit's points: x = operations' part, y = measured - c'_id (= residual + x)."""
    x = np.array([n.operations_ms for n in networks], float)
    return x, np.array([n.residual_ms for n in networks], float) + x


def _fit_point(form: CalibrationForm, networks: Sequence[CalibrationNetwork]) -> tuple[float, float]:
    """The (offset, factor) a calibration of ``form`` fits to ``networks``."""
    if form is CalibrationForm.OFFSET:
        return float(np.median([n.residual_ms for n in networks])), 1.0
    return lad_line(*_affine_points(networks))


# --- the calibration value ----------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A profile's latency calibration: ``offset + (factor - 1) * operations' part`` is added to a prediction.

    For the offset form the factor is 1 and its interval (1, 1).
    """

    form: CalibrationForm
    offset: float
    factor: float
    offset_ci95: tuple[float, float]
    factor_ci95: tuple[float, float]
    networks: tuple[CalibrationNetwork, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    baseline_now_ms: float | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @classmethod
    def fit(cls, form: CalibrationForm, networks: Sequence[CalibrationNetwork], settings: Mapping[str, Any] | None = None,
            baseline_now_ms: float | None = None) -> Calibration:
        """Fit ``form`` to measured networks (affine: every network must carry its operations' part)."""
        networks = tuple(networks)
        offset, factor = _fit_point(form, networks)
        if form is CalibrationForm.OFFSET:
            offset_ci, factor_ci = Measurement(tuple(n.residual_ms for n in networks)).ci95, (1.0, 1.0)
        else:
            offset_ci, factor_ci = bootstrap_lad(*_affine_points(networks), [n.kind.value for n in networks])
        return cls(form, offset, factor, offset_ci, factor_ci, networks, dict(settings or {}), baseline_now_ms)

    @property
    def seeds(self) -> frozenset[int]:
        return frozenset(n.seed for n in self.networks)

    def adjustment(self, operations_ms: float) -> float:
        """What the calibration adds to a latency prediction whose operations' part is ``operations_ms``."""
        return self.offset + (self.factor - 1.0) * operations_ms

    @property
    def offset_includes_zero(self) -> bool:
        return self.offset_ci95[0] <= 0.0 <= self.offset_ci95[1]

    @property
    def factor_includes_one(self) -> bool:
        return self.factor_ci95[0] <= 1.0 <= self.factor_ci95[1]

    @property
    def indistinguishable_from_none(self) -> bool:
        """Both intervals include 'no calibration' (offset 0, factor 1)."""
        return self.offset_includes_zero and self.factor_includes_one

    def summary(self) -> str:
        """One line for people: what is added, where it comes from, its intervals and date."""
        lo, hi = self.offset_ci95
        doubt = ("; the intervals include no calibration at all, so it is not distinguishable from none"
                 if self.indistinguishable_from_none else "")
        if self.form is CalibrationForm.OFFSET:
            return (f"{self.offset:+.3f} ms added to every latency prediction (median residual of "
                    f"{len(self.networks)} measured derived networks, 95% interval [{lo:+.3f}, {hi:+.3f}], "
                    f"{self.created}){doubt}")
        flo, fhi = self.factor_ci95
        leverage = sum(n.kind is not NetworkKind.RANDOM for n in self.networks)
        return (f"affine: prediction = c'_id {self.offset:+.3f} ms + {self.factor:.4f} x the operations' part (least-absolute-"
                f"deviations line through {len(self.networks)} measured derived networks, {leverage} of them from "
                f"the cheapest or costliest quarter of operations; 95% intervals [{lo:+.3f}, {hi:+.3f}] ms and "
                f"[{flo:.4f}, {fhi:.4f}], {self.created}){doubt}")

    def to_dict(self) -> dict[str, Any]:
        how = ("measured - c'_id = offset + factor * (prediction without calibration - c'_id), least absolute "
               "deviations; intervals: percentile bootstrap over the networks within their kind "
               f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})"
               if self.form is CalibrationForm.AFFINE else
               "offset = median over the networks of (anchored measurement - prediction without calibration); "
               "interval: the residuals' 95 % interval of the median")
        return {
            "metric": "latency_ms",
            "form": self.form.value,
            "offset": {"value": self.offset, "ci95": list(self.offset_ci95)},
            "factor": {"value": self.factor, "ci95": list(self.factor_ci95)},
            "added_to_a_prediction": "offset + (factor - 1) * (prediction without calibration - c'_id)",
            "how": how,
            "networks": [n.to_dict() for n in self.networks],
            "settings": dict(self.settings),
            "baseline_now_ms": self.baseline_now_ms,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Calibration:
        """Read a calibration block: schema 4 (``form``), or schema 3's offset with its residual samples."""
        if not isinstance(d, Mapping) or not isinstance(d.get("networks"), list) or "offset" not in d:
            raise UserInputError("The profile's calibration block needs an offset and a list of networks.")
        try:
            networks = tuple(CalibrationNetwork.from_dict(n) for n in d["networks"])
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise UserInputError("The profile's calibration networks need a seed, predicted_ms and measured_ms each "
                                 "(and a known kind).") from None
        if len(networks) < MIN_NETWORKS:
            raise UserInputError(f"The profile's calibration needs the residuals of at least {MIN_NETWORKS} networks.")
        baseline_now, settings = d.get("baseline_now_ms"), d.get("settings") or {}
        try:
            if not isinstance(settings, Mapping):
                raise TypeError("settings")
            rest = (dict(settings), None if baseline_now is None else float(baseline_now), str(d.get("created", "")))
        except (TypeError, ValueError):
            raise UserInputError("The profile's calibration block needs its settings as an object and baseline_now_ms "
                                 "as a number.") from None
        if "form" not in d:
            return cls._from_schema_3(d, networks, rest)
        try:
            form = CalibrationForm(d["form"])
            offset, factor = float(d["offset"]["value"]), float(d["factor"]["value"])
            offset_ci = _interval(d["offset"]["ci95"])
            factor_ci = _interval(d["factor"]["ci95"])
        except (KeyError, TypeError, ValueError):
            raise UserInputError("The profile's calibration block needs a known form and an offset and a factor, "
                                 "each with a value and a ci95 pair.") from None
        if form is CalibrationForm.AFFINE and any(n.operations_ms is None for n in networks):
            raise UserInputError("The profile's affine calibration needs every network's operations_ms.")
        try:
            expected = _fit_point(form, networks)
        except ValueError:
            raise UserInputError("The profile's affine calibration networks do not span two different operations' parts.") from None
        if not np.allclose((offset, factor), expected, rtol=1e-6, atol=1e-6):
            raise UserInputError("The profile's calibration does not come from its networks: refitting them gives "
                                 f"offset {expected[0]:+.3f} ms and factor {expected[1]:.4f}.")
        return cls(form, offset, factor, offset_ci, factor_ci, networks, *rest)

    @classmethod
    def _from_schema_3(cls, d: Mapping[str, Any], networks: tuple[CalibrationNetwork, ...],
                       rest: tuple[dict[str, Any], float | None, str]) -> Calibration:
        from casprof.profile import CostValue

        offset = CostValue.from_dict(d["offset"], "calibration.offset")
        if offset.measurement is None:
            raise UserInputError(f"The profile's calibration offset needs the residuals of at least {MIN_NETWORKS} networks.")
        samples = sorted(offset.measurement.samples)
        if len(samples) != len(networks) or not np.allclose(samples, sorted(n.residual_ms for n in networks)):
            raise UserInputError("The profile's calibration offset does not come from its networks' residuals.")
        return cls(CalibrationForm.OFFSET, offset.value, 1.0, offset.measurement.ci95, (1.0, 1.0), networks, *rest)


def _interval(pair: Any) -> tuple[float, float]:
    lo, hi = (float(v) for v in pair)
    if not lo <= hi:
        raise ValueError("interval")
    return lo, hi


# --- measuring ----------------------------------------------------------------------------------


def leverage_ops(profile: Profile, kind: NetworkKind) -> dict[str, tuple[str, ...]]:
    """The cheapest or costliest ``LEVERAGE_SHARE`` of each cell type's operations, by the profile's latency."""
    from casprof.profile import Metric

    lat = Metric.LATENCY_MS.value
    out = {}
    for t in CELL_TYPES:
        ranked = sorted(candidate_ops(t), key=lambda op: profile.cost(t, op, lat).value,
                        reverse=kind is NetworkKind.COSTLIEST)
        out[t] = tuple(ranked[: max(2, math.ceil(LEVERAGE_SHARE * len(ranked)))])
    return out


def calibration_genotypes(profile: Profile, settings: CalibrationSettings) -> dict[int, tuple[NetworkKind, Genotype]]:
    """The calibration's genotypes by seed, with their kind: the random ones, then the leverage ones."""
    out = {s: (NetworkKind.RANDOM, random_genotype(s, profile.network))
           for s in (settings.genotype_seed(k) for k in range(settings.networks))}
    kinds = itertools.cycle((NetworkKind.CHEAPEST, NetworkKind.COSTLIEST))
    for k, kind in zip(range(settings.leverage_networks), kinds):
        s = settings.leverage_seed(k)
        out[s] = (kind, random_genotype(s, profile.network, leverage_ops(profile, kind)))
    return out


def run_calibration(profile: Profile, hardware: HardwareFingerprint, settings: CalibrationSettings,
                    progress: ProgressCallback = lambda p: None, build_cache: BuildCache | None = None,
                    build_workers: int = 1, checkpoint: Path | None = None, resume: bool = False) -> Calibration:
    """Time the calibration networks on this machine and fit the profile's calibration
    (``build_workers`` processes export the networks side by side first, see :mod:`casprof.prebuild`;
    ``checkpoint`` and ``resume`` as for :func:`casprof.fidelity.run_fidelity`).

    Raises:
        UserInputError: an estimated profile, or one made on other hardware; a checkpoint made for
            another calibration.
        BackendUnavailableError: the profile's backend cannot run here.
        MeasurementError: a network's anchored latency came out not positive (timing noise at a tiny size),
            or the baseline network ran further from c'_id than ``settings.max_drift_pct`` allows.
    """
    from casprof.fidelity import (build_networks_ahead, check_can_measure, derived_networks, derived_recipes,
                                  measure_settings_of, network_blocks, open_checkpoint, resolved_anchored_ms,
                                  time_blocks)
    from casprof.predict import predict
    from casprof.profile import Metric

    check_can_measure(profile, hardware)
    genotypes = calibration_genotypes(profile, settings)
    progress(Progress("building networks", 0, 1))
    named = {f"calibration-{s}": g for s, (_, g) in genotypes.items()}
    models = derived_networks(named, measure_settings_of(profile).seed)
    progress(Progress("building networks", 1, 1))
    blocks = network_blocks(models, settings.block_size)
    timing = {k: v for k, v in settings.to_dict().items() if k != "max_drift_pct"}  # judged after the timing
    ckpt = open_checkpoint("calibrate", checkpoint, resume, profile, hardware, timing, blocks)
    with tempfile.TemporaryDirectory(prefix="casprof-calibration-built-") as tmp:
        ahead = build_networks_ahead(profile, models, derived_recipes(named, measure_settings_of(profile).seed), Path(tmp),
                                     count=False, build_cache=build_cache, workers=build_workers, progress=progress)
        got = time_blocks(profile, hardware, blocks, settings, progress, build_cache, exported=ahead.files, checkpoint=ckpt)
    ckpt.discard()
    bare = dataclasses.replace(profile, calibration=None)
    lat = Metric.LATENCY_MS.value
    base = profile.baseline[lat].value
    baseline_now = float(np.median(got.baseline))
    check_baseline_drift(base, baseline_now, settings.max_drift_pct)
    networks = []
    for s, (kind, g) in genotypes.items():
        predicted = predict(bare, g)[lat].value
        times, brackets = got.times[f"calibration-{s}"], got.brackets[f"calibration-{s}"]
        # the fit uses the overall median only
        measured = resolved_anchored_ms(f"calibration-{s}", base, times, brackets, per_instance=False)
        networks.append(CalibrationNetwork(s, predicted, measured, kind, predicted - base))
    return Calibration.fit(settings.form, networks, settings.to_dict(), baseline_now)


def baseline_drift_pct(profile_ms: float, now_ms: float) -> float:
    """How much slower (+) or faster (-) the baseline network runs now than in the profile, in %."""
    return 100.0 * (now_ms / profile_ms - 1.0)


def check_baseline_drift(profile_ms: float, now_ms: float, max_drift_pct: float) -> float:
    """The baseline's drift in % (now against the profile's c'_id); raises when it is beyond ``max_drift_pct``.

    Raises:
        MeasurementError: the machine runs at another speed than when the profile was made.
    """
    drift = baseline_drift_pct(profile_ms, now_ms)
    if not abs(drift) <= max_drift_pct:
        raise MeasurementError(
            f"The baseline network ran at {now_ms:.4g} ms during the calibration against c'_id {profile_ms:.4g} ms in the "
            f"profile ({drift:+.1f} %, beyond the {max_drift_pct:g} % allowed), so a calibration now would fit the machine's "
            f"speed change rather than the profile's error; nothing was written: re-measure the profile, or pass "
            f"--max-drift to calibrate anyway.")
    return drift
