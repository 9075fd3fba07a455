"""Predicted absolute cost of a derived network from a profile (DESIGN §5 ``casprof predict``).

A probe cell has ``E`` edges (9 in a backbone cell, 27 in the multi-scale cell) all using one
operation, in every cell of its type (the genotype's cell is repeated in every cell of the type).

* A schema-1 profile (no edge model): one edge costs the uniform share ``c_o / E`` and the
  prediction is ``c'_id + sum over the genotype's edges of c_o / E_t``; ``identity`` edges cost
  nothing beyond the baseline.
* A profile with an edge model (schema 2, :mod:`casprof.edge_model`): one edge of class k
  (leaving a cell input or an intermediate node) costs ``s_k + c_o^k / E_k``, and the full
  cells' identity edges ``sum_k E_k s_k`` are taken out of c'_id. ``by_cell_type`` then holds
  the genotype's edges minus those, so that the value is still ``baseline + sum(by_cell_type)``.
* With the ``derived_identity`` probes (schema 6) each cell type's part is anchored to a measured
  identity cell of a derived cell's shape (:func:`measured_structure_correction`):
  a constant per cell type that replaces the full cells' structure composed from the identity probes.
* A calibrated profile (:mod:`casprof.calibration`) adds ``offset + (factor - 1) * sum(by_cell_type)``
  to the latency (schema 3: an offset, factor 1; schema 4: also affine): the value is
  ``baseline + sum(by_cell_type) + calibration``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from casprof.edge_model import refined_edge_cost, shared_input_overlap, structure_cost
from casprof.genotype import CellGraph, Genotype
from casprof.ops import CELL_TYPES
from casprof.probes import derived_identity_graph
from casprof.profile import Metric, Profile


@dataclass(frozen=True)
class Prediction:
    """The predicted cost of one metric, with its parts."""

    metric: str
    value: float
    baseline: float
    by_cell_type: dict[str, float]
    method: str
    calibration: float = 0.0

    @property
    def unit(self) -> str:
        return Metric(self.metric).unit

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "by_cell_type": dict(self.by_cell_type),
            "calibration": self.calibration,
            "method": self.method,
        }


def edge_cost(profile: Profile, cell_type: str, op: str, metric: str, *, node: int, input_index: int) -> float:
    """The predicted cost of one edge ``input_index -> node`` of a ``cell_type`` cell using ``op``.

    The single place where the additive model turns a profile into per-edge costs: ``predict``
    and the search's cost loss both go through it. Today every edge of a cell type costs the
    uniform share c_o / E of a schema-1 profile, or, with an edge model, ``s_k + c_o^k / E_k`` for
    the class k of the edge, plus on a reduction cell's input edge its part of the input's shared
    cost R_k (schema 5; see :mod:`casprof.edge_model`).
    """
    if not 0 <= input_index < 2 + node:
        raise ValueError(f"edge {input_index} -> node {node} does not exist")
    if profile.edge_model is None:
        return profile.edge_share(cell_type, op, metric)
    return refined_edge_cost(profile, cell_type, op, metric, input_index)


def modelled_cell_cost(profile: Profile, cell_type: str, cell: CellGraph, metric: str) -> float:
    """The additive model's part of a prediction for ``cell`` repeated in every cell of its type: its
    edges' costs, and with an edge model less the full cells' structure and plus the factorized
    reduces' shared input cost it gives back (no measured-structure correction)."""
    edges = sum(edge_cost(profile, cell_type, op, metric, node=j, input_index=i) for j, node in enumerate(cell) for op, i in node)
    if profile.edge_model is None:
        return edges
    return edges - structure_cost(profile, cell_type, metric) + shared_input_overlap(profile, cell_type, cell, metric)


def measured_structure_correction(profile: Profile, cell_type: str, metric: str) -> float:
    """d_C - model_t(C): what the ``derived_identity`` probe C adds to every prediction's part of this
    cell type (0 without the probe; :mod:`casprof.edge_model`). The same for every genotype, it replaces
    the full cells' structure composed from the identity probes by the structure of a derived cell as measured."""
    cell = profile.edge_model.cells.get(cell_type) if profile.edge_model is not None else None
    if cell is None or not cell.derived_identity:
        return 0.0
    graph = derived_identity_graph(profile.network.intermediate_nodes(cell_type))
    return cell.derived_identity[metric].value - modelled_cell_cost(profile, cell_type, graph, metric)


def predict(profile: Profile, genotype: Genotype) -> dict[str, Prediction]:
    """Predicted cost of ``genotype``'s derived network for every metric of ``profile``.

    Raises:
        UserInputError: the genotype's network is not the profile's network.
    """
    profile.require_network(genotype.network)
    result = {}
    for metric in profile.metrics:
        parts = {t: modelled_cell_cost(profile, t, genotype.cell(t), metric) + measured_structure_correction(profile, t, metric)
                 for t in CELL_TYPES}
        base = profile.baseline[metric].value
        latency = metric == Metric.LATENCY_MS.value
        calibration = profile.calibration if latency else None  # only latency is ever calibrated
        operations = sum(parts.values())
        added = 0.0 if calibration is None else calibration.adjustment(operations)
        method = profile.method.value + ("" if calibration is None else " + calibration") if latency else "exact counts"
        result[metric] = Prediction(metric, base + operations + added, base, parts, method, added)
    return result
