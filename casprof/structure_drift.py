"""A profile's structure terms timed again beside a fidelity check: stale level or model error?

A schema-2 profile prices the edges that a derived cell keeps with three identity probes per cell
type (:mod:`casprof.edge_model`: ``inputs_only``, ``rest_on_input0``, ``rest_on_input1``, each
c'(probe) - c'_id, a few ms). Every prediction depends on all nine with weights of about ±0.5
(random derived networks of the default network at 768x1536), so an error in them moves every
prediction the same way. Measured on the 2-core CI machine with ONNX Runtime: two profiles made
two hours apart had structure terms up to 3.6 ms apart, and their fidelity checks' mean errors
were -4.1 % and -0.2 %; swapping only the structure terms between the two profiles swapped the
mean errors (the operations' c_o sums agreed within 1.6 %). Timed again hours later (72 samples
each), single terms moved by up to 7 ms, yet the predictions with them were still 2-3.6 % low:
the level error was the per-edge model's own, which ``casprof calibrate`` now measures
(:mod:`casprof.calibration`).

With ``--retime-structure`` a fidelity check times these probes in its own rounds, bracketed like
its derived networks, and reports each term in the profile and now, and the agreement that the
profile would reach with the terms timed now. That row is a diagnostic, not the profile's result:
where it agrees and the profile does not, the profile's level is stale (measure it again); where
both disagree, the model is off. With the check's 24 samples a term's interval is about ±5 ms at
768x1536 here, so only a large drift shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from casprof.edge_model import EdgeModel
from casprof.ops import CELL_TYPES
from casprof.probes import Probe, Variant
from casprof.profile import CostValue, Metric, Profile
from casprof.stats import Measurement, paired_difference

#: The identity probes of the per-edge model, in the order of a profile's ``edge_model`` block.
STRUCTURE_VARIANTS: tuple[Variant, ...] = (Variant.INPUTS_ONLY, Variant.REST_ON_INPUT0, Variant.REST_ON_INPUT1)

_LATENCY = Metric.LATENCY_MS.value


def structure_probes(profile: Profile) -> list[Probe]:
    """The structure probes of the profile's per-edge model (none for a schema-1 profile), with the
    ``derived_identity`` probes where it has them (schema 6)."""
    if profile.edge_model is None:
        return []
    cells = profile.edge_model.cells
    return [Probe(t, "identity", v) for t in CELL_TYPES if t in cells
            for v in STRUCTURE_VARIANTS + ((Variant.DERIVED_IDENTITY,) if cells[t].derived_identity else ())]


def _profile_term(profile: Profile, probe: Probe) -> CostValue:
    assert profile.edge_model is not None and probe.cell_type is not None
    return getattr(profile.edge_model.cells[probe.cell_type], probe.variant.value)[_LATENCY]


@dataclass(frozen=True)
class StructureTerm:
    """One structure term (c'(probe) - c'_id, latency) as the profile has it and as timed now."""

    probe: Probe
    profile: CostValue
    now: CostValue

    @property
    def change_ms(self) -> float:
        return self.now.value - self.profile.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe.key,
            "profile_ms": self.profile.value,
            "profile_ci95": None if self.profile.interval is None else list(self.profile.interval),
            "now_ms": self.now.value,
            "now_ci95": None if self.now.interval is None else list(self.now.interval),
            "change_ms": self.change_ms,
            "now_samples_ms": None if self.now.measurement is None else list(self.now.measurement.samples),
            "now_absolute_ms": None if self.now.absolute is None else list(self.now.absolute.samples),
        }


def structure_terms(profile: Profile, times: Mapping[str, Sequence[float]],
                    brackets: Mapping[str, Sequence[float]]) -> tuple[StructureTerm, ...]:
    """Each structure probe's term from its times now and the baseline brackets around them
    (``times[key][i]`` paired with ``brackets[key][i]``, as a profile pairs them)."""
    out = []
    for probe in structure_probes(profile):
        absolute = Measurement(tuple(times[probe.key]))
        diff = paired_difference(absolute, Measurement(tuple(brackets[probe.key])))
        out.append(StructureTerm(probe, _profile_term(profile, probe), CostValue.measured(diff, absolute)))
    return tuple(out)


def with_structure(profile: Profile, terms: Sequence[StructureTerm]) -> Profile:
    """The profile with its structure terms' latencies replaced by ``terms``' values now
    (everything else, parameters and MACs of those probes included, unchanged)."""
    if not terms:
        return profile
    if profile.edge_model is None:
        raise ValueError("a profile without a per-edge model has no structure terms")
    cells = dict(profile.edge_model.cells)
    for term in terms:
        t, field_name = term.probe.cell_type, term.probe.variant.value
        assert t is not None
        old = getattr(cells[t], field_name)
        cells[t] = dataclasses.replace(cells[t], **{field_name: {**old, _LATENCY: term.now}})
    return dataclasses.replace(profile, edge_model=EdgeModel(cells))
