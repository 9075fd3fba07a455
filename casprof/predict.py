"""Predicted absolute cost of a derived network from a profile (DESIGN §5 ``casprof predict``).

A probe cell has ``E`` edges (9 in a backbone cell, 27 in the multi-scale cell) all using one
operation, in every cell of its type, so one edge of a genotype's cell costs ``c_o / E`` (the
genotype's cell is repeated in every cell of the type). The prediction is

    c'_id + sum over cell types t, over the edges (o, i) of the genotype's t cell, of c_o / E_t.

``identity`` edges cost nothing beyond the baseline by definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from casprof.genotype import Genotype
from casprof.ops import CELL_TYPES
from casprof.profile import Metric, Profile


@dataclass(frozen=True)
class Prediction:
    """The predicted cost of one metric, with its parts."""

    metric: str
    value: float
    baseline: float
    by_cell_type: dict[str, float]
    method: str

    @property
    def unit(self) -> str:
        return Metric(self.metric).unit

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "by_cell_type": dict(self.by_cell_type),
            "method": self.method,
        }


def predict(profile: Profile, genotype: Genotype) -> dict[str, Prediction]:
    """Predicted cost of ``genotype``'s derived network for every metric of ``profile``.

    Raises:
        UserInputError: the genotype's network is not the profile's network.
    """
    profile.require_network(genotype.network)
    result = {}
    for metric in profile.metrics:
        parts = {
            t: sum(profile.edge_share(t, op, metric) for node in genotype.cell(t) for op, _ in node)
            for t in CELL_TYPES
        }
        base = profile.baseline[metric].value
        method = profile.method.value if metric == Metric.LATENCY_MS.value else "exact counts"
        result[metric] = Prediction(metric, base + sum(parts.values()), base, parts, method)
    return result
