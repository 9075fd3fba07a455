"""The cost loss of CAS (paper Eq. 5) from a measured profile, in normalised units.

For every searched cell type ``t``, edge ``(i -> j)`` and operation ``o`` (``none`` included,
costing 0), the per-edge cost ``c[t, e, o]`` comes only from
:func:`casprof.predict.edge_cost`, the additive model that ``casprof predict`` uses; it already
accounts for a cell type repeating in every cell of its type. The expected cost of the
architecture is

    C(alpha) = sum_t sum_e sum_o c[t, e, o] * softmax(alpha_t[e])_o      (metric's unit)

Normalisation: lambda must mean the same whether the metric is milliseconds on a GPU or MACs.
Let ``S = sum over searched edges of (max_o c - min_o c)``, the span of ``C`` over all mixing
weights, and ``C_min = sum_e min_o c``. The loss is

    L_cost = (C(alpha) - C_min) / S

which is dimensionless and lies in [0, 1] (0: every edge on its cheapest operation, 1: every
edge on its dearest). Subtracting the constant ``C_min`` does not change the gradient of
Eq. 6. Measured costs below zero (noise around a free operation) are used as they are.

Which mixing weights the expectation takes (:class:`CostSupport`):

- ``all`` is Eq. 5 to the letter: every operation including ``none`` (cost 0). A large lambda
  then pushes the weight of every edge onto ``none``, which the derivation excludes, so the
  operation that is finally derived on an edge is decided by small differences between the
  others: measured on the CPU profile, lambda 1000 derived a dearer network than lambda 100.
- ``derivable`` takes the expectation over the operations a derived network can use,
  ``softmax(alpha)`` renormalised without ``none``, on every edge of the full cell. It moves
  weight towards the operations the derivation will pick but cannot price *which* edges a node
  keeps, although a derived network pays for its kept edges only and edges differ by much more
  than their operation (an edge leaving a cell input of the multi-scale cell carries a 1x1
  projection at 1/4 resolution; an inner edge does not). Measured on the CPU profile: lambda
  1000 removed only about half of lambda 0's cost above the cheapest derivable network.
- ``kept`` (the default) weights each edge's derivable expectation ``E_e`` by the probability
  ``P_e`` that the derivation keeps it:

      C(alpha) = sum_t sum_e P_e * E_e

  The derivation keeps the k = 2 strongest incoming edges of every node, strength
  ``s_e = max_{o != none} softmax(alpha_e)_o``. Relaxed: ``P_e`` is the probability that ``e``
  is among the first two draws without replacement with probabilities ``p_e = s_e / sum s``
  over the node's edges (Plackett-Luce), ``P_e = p_e (1 + sum_{q != e} p_q / (1 - p_q))``.
  The ``P_e`` of a node sum to 2, each lies in [0, 1]; a node with two edges keeps both
  (``P = 1``); with one-hot weights ``C`` is exactly the derived network's cost. The gradient
  now also lowers the strength of dear edges (weight moves to ``none`` or spreads) and raises
  that of cheap ones. ``C_min`` and ``S`` are taken over derivable networks: per node the two
  cheapest edges on their cheapest operations, and the two dearest on their dearest.

An edge whose whole weight is on ``none`` costs nothing under every support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.genotype import EDGES_PER_NODE
from casprof.ops import candidate_ops
from casprof.predict import edge_cost
from casprof.profile import Method, Metric, Profile
from search.settings import CostSupport
from search.supernet import edge_list


def check_metric(profile: Profile, metric: str) -> str:
    """The metric's unit; refuse a metric the toolkit does not know or the profile lacks."""
    try:
        unit = Metric(metric).unit
    except ValueError:
        raise UserInputError(
            f"Unknown metric {metric!r}; expected one of {', '.join(m.value for m in Metric)}."
        ) from None
    if metric not in profile.metrics:
        raise UserInputError(f"The profile has no {metric!r} costs; it has {', '.join(profile.metrics)}.")
    return unit


def keep_probabilities(strength: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """P(edge among its node's 2 kept edges), relaxed: Plackett-Luce top-2 inclusion.

    Args:
        strength: ``[edges]`` strengths ``s_e >= 0`` (the derivation keeps each node's two largest).
        nodes: ``[edges]`` the node each edge enters.

    With ``p_e = s_e / sum_{q in node} s_q``: ``P_e = p_e (1 + sum_{q != e} p_q / (1 - p_q))``,
    the probability that ``e`` is among two draws without replacement. A node with at most
    ``EDGES_PER_NODE`` edges keeps all of them.
    """
    tiny = torch.finfo(strength.dtype).tiny
    n_nodes = int(nodes.max()) + 1

    def per_node(x: torch.Tensor) -> torch.Tensor:
        """The sum of ``x`` over each edge's node, per edge."""
        return torch.zeros(n_nodes, dtype=x.dtype, device=x.device).index_add(0, nodes, x)[nodes]

    p = strength / per_node(strength).clamp_min(tiny)
    odds = p / (1 - p).clamp_min(tiny)
    prob = (p * (1 + per_node(odds) - odds)).clamp(0.0, 1.0)
    edges_in_node = per_node(torch.ones_like(strength))
    return torch.where(edges_in_node <= EDGES_PER_NODE, torch.ones_like(prob), prob)


def _kept_span(tables: dict[str, torch.Tensor], nodes: dict[str, torch.Tensor]) -> tuple[float, float]:
    """``(S, C_min)`` over derivable networks: per node the 2 cheapest / dearest edges' extremes."""
    low = high = 0.0
    for t, tab in tables.items():
        cheapest, dearest = tab[:, 1:].min(dim=1).values, tab[:, 1:].max(dim=1).values
        for j in nodes[t].unique().tolist():
            rows = nodes[t] == j
            k = min(EDGES_PER_NODE, int(rows.sum()))
            low += float(cheapest[rows].sort().values[:k].sum())
            high += float(dearest[rows].sort(descending=True).values[:k].sum())
    return high - low, low


@dataclass(frozen=True)
class CostModel:
    """Per-edge cost tables of the searched cell types and the normalisation of Eq. 5.

    ``tables[t]`` has shape ``[edges, operations incl. none]`` in alpha layout; ``nodes[t]`` holds
    the node each row's edge enters.
    """

    metric: str
    unit: str
    tables: dict[str, torch.Tensor]
    scale: float
    offset: float
    warnings: tuple[str, ...] = ()
    support: CostSupport = CostSupport.KEPT
    nodes: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        metric: str,
        config: NetworkConfig,
        searched: tuple[str, ...],
        support: CostSupport | str = CostSupport.KEPT,
    ) -> CostModel:
        """Refuses (UserInputError) a profile for another network or without ``metric``."""
        profile.require_network(config)
        unit = check_metric(profile, metric)
        warnings = []
        if profile.method is Method.ESTIMATED and metric == Metric.LATENCY_MS.value:
            warnings.append("The profile's latencies are estimated, not measured; the search optimises an estimate.")
        tables = {}
        for t in searched:
            rows = [
                [0.0 if op == "none" else edge_cost(profile, t, op, metric, node=j, input_index=i)
                 for op in candidate_ops(t, with_none=True)]
                for j, i in edge_list(config, t)
            ]
            tables[t] = torch.tensor(rows, dtype=torch.float64)
        support = CostSupport(support)
        nodes = {t: torch.tensor([j for j, _ in edge_list(config, t)]) for t in searched}
        if support is CostSupport.KEPT:
            span, offset = _kept_span(tables, nodes)
        else:
            first = 1 if support is CostSupport.DERIVABLE else 0  # column 0 is `none`
            span = sum(float((tab[:, first:].max(dim=1).values - tab[:, first:].min(dim=1).values).sum()) for tab in tables.values())
            offset = sum(float(tab[:, first:].min(dim=1).values.sum()) for tab in tables.values())
        if not span > 0 or not math.isfinite(span):
            warnings.append(f"Every searched operation has the same {metric} cost; the cost loss is constant.")
            span = 1.0
        return cls(metric, unit, tables, span, offset, tuple(warnings), support, nodes)

    def expected_cost(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """C(alpha) of the searched cells, in the metric's unit (differentiable)."""
        total = None
        for t, tab in self.tables.items():
            w = weights[t]
            tab = tab.to(device=w.device, dtype=w.dtype)
            if self.support is CostSupport.ALL:
                part = (tab * w).sum()
            else:
                derivable = w[:, 1:]
                mass = derivable.sum(dim=1, keepdim=True)
                per_edge = (tab[:, 1:] * derivable / mass.clamp_min(torch.finfo(w.dtype).tiny)).sum(dim=1)
                if self.support is CostSupport.KEPT:
                    per_edge = per_edge * keep_probabilities(derivable.max(dim=1).values, self.nodes[t].to(w.device))
                part = per_edge.sum()
            total = part if total is None else total + part
        assert total is not None
        return total

    def loss(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_cost in [0, 1] (see the module docstring)."""
        return (self.expected_cost(weights) - self.offset) / self.scale
