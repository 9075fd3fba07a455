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
- ``derivable`` (the default) takes the expectation over the operations a derived network can
  use, ``softmax(alpha)`` renormalised without ``none``: the cost term moves weight between
  derivable operations, towards the ones the derivation will pick, and leaves ``none`` (which
  decides which edges a node keeps) to the validation loss. ``C_min`` and ``S`` are then taken
  over the derivable operations. An edge whose whole weight is on ``none`` costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from casprof.config import NetworkConfig
from casprof.errors import UserInputError
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


@dataclass(frozen=True)
class CostModel:
    """Per-edge cost tables of the searched cell types and the normalisation of Eq. 5.

    ``tables[t]`` has shape ``[edges, operations incl. none]`` in alpha layout.
    """

    metric: str
    unit: str
    tables: dict[str, torch.Tensor]
    scale: float
    offset: float
    warnings: tuple[str, ...] = ()
    support: CostSupport = CostSupport.DERIVABLE

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        metric: str,
        config: NetworkConfig,
        searched: tuple[str, ...],
        support: CostSupport | str = CostSupport.DERIVABLE,
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
        first = 1 if support is CostSupport.DERIVABLE else 0  # column 0 is `none`
        span = sum(float((tab[:, first:].max(dim=1).values - tab[:, first:].min(dim=1).values).sum()) for tab in tables.values())
        offset = sum(float(tab[:, first:].min(dim=1).values.sum()) for tab in tables.values())
        if not span > 0 or not math.isfinite(span):
            warnings.append(f"Every searched operation has the same {metric} cost; the cost loss is constant.")
            span = 1.0
        return cls(metric, unit, tables, span, offset, tuple(warnings), support)

    def expected_cost(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """C(alpha) of the searched cells, in the metric's unit (differentiable)."""
        total = None
        for t, tab in self.tables.items():
            w = weights[t]
            tab = tab.to(device=w.device, dtype=w.dtype)
            if self.support is CostSupport.DERIVABLE:
                derivable = w[:, 1:]
                w = derivable / derivable.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
                tab = tab[:, 1:]
            part = (tab * w).sum()
            total = part if total is None else total + part
        assert total is not None
        return total

    def loss(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """L_cost in [0, 1] (see the module docstring)."""
        return (self.expected_cost(weights) - self.offset) / self.scale
