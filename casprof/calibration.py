"""A profile's level calibrated on real derived networks: one latency offset, measured.

The per-edge model (:mod:`casprof.edge_model`) predicts a derived network as c'_id plus its
edges' costs, from probe networks alone. Its level rests on small differences (the structure
terms, a few ms each, and every c_o), and measured on the 2-core CI machine with ONNX Runtime the
fidelity checks of one profile were off by the same -3.3 to -4.2 % in three checks over 2.5
hours, while another profile of the same machine was off by -0.2 to +0.2 %: a level error that
belongs to the profile, not to the check. Ranking (what the search uses) does not depend on it;
absolute predictions ("does this network run at 30 FPS") do.

``casprof calibrate`` times ``networks`` random derived networks (genotype seeds
``CALIBRATION_SEED_BASE + 1000 * seed + k``, never those of a fidelity check: the check refuses
an overlap) exactly as ``casprof fidelity`` does (blocks, sweeps, two instances, runs bracketed by
the baseline network, anchored at c'_id), and stores in the profile the median over the networks
of (measured - predicted without offset), with its samples and interval. ``casprof predict``
then adds it to every latency prediction, and says so. The offset is one number fitted to a few
networks, so it can only move the level; the scatter (what reorders networks) stays the
profile's own. Exact metrics (parameters, MACs) are never calibrated.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from casprof.errors import UserInputError
from casprof.genotype import Genotype, random_genotype
from casprof.measure import Progress, ProgressCallback, sweep_rounds
from casprof.stats import Measurement

if TYPE_CHECKING:  # pragma: no cover
    from casprof.hardware import HardwareFingerprint
    from casprof.profile import CostValue, Profile

#: Calibration genotypes use seeds from here on, far from a fidelity check's ``1000 * seed + k``.
CALIBRATION_SEED_BASE = 1_000_000_000

#: The fewest networks a calibration accepts (a median of fewer is one network's noise).
MIN_NETWORKS = 3


@dataclass(frozen=True)
class CalibrationSettings:
    """How many derived networks calibrate the level, and how they are timed (as in a fidelity check).

    Args:
        networks: random derived networks to time.
        seed: network ``k`` uses genotype seed ``CALIBRATION_SEED_BASE + 1000 * seed + k``.
        rounds, sweeps, block_size, baseline_instances: as in :class:`casprof.fidelity.FidelitySettings`.
    """

    networks: int = 8
    seed: int = 0
    rounds: int = 24
    sweeps: int = 2
    block_size: int = 8
    baseline_instances: int = 4

    def __post_init__(self) -> None:
        if self.networks < MIN_NETWORKS:
            raise UserInputError(f"A calibration needs at least {MIN_NETWORKS} networks, got {self.networks}.")
        if not 0 <= self.seed < 1_000_000:
            raise UserInputError(f"The calibration seed must be between 0 and 999999, got {self.seed}.")
        if self.networks > 1000:
            raise UserInputError(f"A calibration takes at most 1000 networks, got {self.networks}.")
        from casprof.fidelity import check_timing_plan  # fidelity imports scipy: on use

        check_timing_plan(self)

    def genotype_seed(self, k: int) -> int:
        return CALIBRATION_SEED_BASE + 1000 * self.seed + k

    def sweep_rounds(self, sweep: int) -> range:
        return sweep_rounds(self.rounds, self.sweeps, sweep)

    def to_dict(self) -> dict[str, Any]:
        return {"networks": self.networks, "seed": self.seed, "rounds": self.rounds, "sweeps": self.sweeps,
                "block_size": self.block_size, "baseline_instances": self.baseline_instances,
                "genotype_seeds": f"{CALIBRATION_SEED_BASE} + 1000 * seed + k"}


@dataclass(frozen=True)
class CalibrationNetwork:
    """One calibration network: its genotype seed, prediction without offset and anchored measurement."""

    seed: int
    predicted_ms: float
    measured_ms: float

    @property
    def residual_ms(self) -> float:
        return self.measured_ms - self.predicted_ms

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms,
                "residual_ms": self.residual_ms}


@dataclass(frozen=True)
class Calibration:
    """The latency offset of a profile (``offset.value`` ms, added to every latency prediction)."""

    offset: CostValue
    networks: tuple[CalibrationNetwork, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    baseline_now_ms: float | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def seeds(self) -> frozenset[int]:
        return frozenset(n.seed for n in self.networks)

    def summary(self) -> str:
        """One line for people: the offset, where it comes from, its interval and date."""
        ci = self.offset.interval
        interval = "" if ci is None else f", 95% interval [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        doubt = ("; the interval includes 0, so this offset is not distinguishable from none"
                 if self.offset.interval_includes_zero else "")
        return (f"{self.offset.value:+.3f} ms added to every latency prediction (median residual of "
                f"{len(self.networks)} measured derived networks{interval}, {self.created}){doubt}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": "latency_ms",
            "offset": self.offset.to_dict(),
            "how": "median over the networks of (anchored measurement - prediction without offset); "
                   "added to every latency prediction",
            "networks": [n.to_dict() for n in self.networks],
            "settings": dict(self.settings),
            "baseline_now_ms": self.baseline_now_ms,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Calibration:
        from casprof.profile import CostValue

        if not isinstance(d, Mapping) or not isinstance(d.get("networks"), list) or "offset" not in d:
            raise UserInputError("The profile's calibration block needs an offset and a list of networks.")
        try:
            networks = tuple(CalibrationNetwork(int(n["seed"]), float(n["predicted_ms"]), float(n["measured_ms"]))
                             for n in d["networks"])
        except (KeyError, TypeError, ValueError):
            raise UserInputError("The profile's calibration networks need a seed, predicted_ms and measured_ms each.") from None
        offset = CostValue.from_dict(d["offset"], "calibration.offset")
        if offset.measurement is None or len(networks) < MIN_NETWORKS:
            raise UserInputError(f"The profile's calibration offset needs the residuals of at least {MIN_NETWORKS} networks.")
        if not np.allclose(sorted(offset.measurement.samples), sorted(n.residual_ms for n in networks)):
            raise UserInputError("The profile's calibration offset does not come from its networks' residuals.")
        baseline_now = d.get("baseline_now_ms")
        return cls(offset, networks, dict(d.get("settings") or {}),
                   None if baseline_now is None else float(baseline_now), str(d.get("created", "")))


def calibration_genotypes(profile: Profile, settings: CalibrationSettings) -> dict[int, Genotype]:
    """The calibration's genotypes by seed."""
    return {s: random_genotype(s, profile.network) for s in (settings.genotype_seed(k) for k in range(settings.networks))}


def run_calibration(profile: Profile, hardware: HardwareFingerprint, settings: CalibrationSettings,
                    progress: ProgressCallback = lambda p: None) -> Calibration:
    """Time the calibration networks on this machine and return the profile's offset.

    Raises:
        UserInputError: an estimated profile, or one made on other hardware.
        BackendUnavailableError: the profile's backend cannot run here.
    """
    from casprof.fidelity import anchored_ms, check_can_measure, network_blocks, time_blocks
    from casprof.network import CASNetwork
    from casprof.predict import predict
    from casprof.profile import CostValue, Metric

    check_can_measure(profile, hardware)
    genotypes = calibration_genotypes(profile, settings)
    progress(Progress("building networks", 0, 1))
    models = {f"calibration-{s}": CASNetwork.from_genotype(g).eval() for s, g in genotypes.items()}
    progress(Progress("building networks", 1, 1))
    got = time_blocks(profile, hardware, network_blocks(models, settings.block_size), settings, progress)
    bare = dataclasses.replace(profile, calibration=None)
    lat = Metric.LATENCY_MS.value
    base = profile.baseline[lat].value
    networks = tuple(
        CalibrationNetwork(s, predict(bare, g)[lat].value,
                           anchored_ms(base, got.times[f"calibration-{s}"], got.brackets[f"calibration-{s}"]))
        for s, g in genotypes.items()
    )
    offset = CostValue.measured(Measurement(tuple(n.residual_ms for n in networks)))
    return Calibration(offset, networks, settings.to_dict(), float(np.median(got.baseline)))
