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


def edge_cost(profile: Profile, cell_type: str, op: str, metric: str, *, node: int, input_index: int) -> float:
    """The predicted cost of one edge ``input_index -> node`` of a ``cell_type`` cell using ``op``.

    The single place where the additive model turns a profile into per-edge costs: ``predict``
    and the search's cost loss both go through it. Today every edge of a cell type costs the
    uniform share c_o / E; ``node`` and ``input_index`` let a refined profile tell edges apart.
    """
    if not 0 <= input_index < 2 + node:
        raise ValueError(f"edge {input_index} -> node {node} does not exist")
    return profile.edge_share(cell_type, op, metric)


def predict(profile: Profile, genotype: Genotype) -> dict[str, Prediction]:
    """Predicted cost of ``genotype``'s derived network for every metric of ``profile``.

    Raises:
        UserInputError: the genotype's network is not the profile's network.
    """
    profile.require_network(genotype.network)
    result = {}
    for metric in profile.metrics:
        parts = {
            t: sum(
                edge_cost(profile, t, op, metric, node=j, input_index=i)
                for j, node in enumerate(genotype.cell(t))
                for op, i in node
            )
            for t in CELL_TYPES
        }
        base = profile.baseline[metric].value
        method = profile.method.value if metric == Metric.LATENCY_MS.value else "exact counts"
        result[metric] = Prediction(metric, base + sum(parts.values()), base, parts, method)
    return result
