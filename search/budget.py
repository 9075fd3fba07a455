"""Searching under a budget (``--target``): a lambda controller and a budget-aware derivation.

Controller: every ``every`` iterations the run derives the current network, predicts its cost
from the profile and compares it with the target: over budget, lambda is multiplied by
``factor``; under ``band * target``, divided by it; in between, kept. A lambda of 0 that must
rise starts at ``LAMBDA_FLOOR``. The state is checkpointed.

Derivation: if the strongest-operation network is still over budget at the end, kept edges are
switched to cheaper operations of the same edge, greedily by cost saved per strength lost
(strength: the edge's softmax weight), until the network is under budget; the last switch is
the one that lands closest under the target. The run reports every switch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from casprof.config import NetworkConfig
from casprof.genotype import CellGraph, Genotype, SearchRecord
from casprof.ops import CELL_TYPES, NONE, candidate_ops
from casprof.predict import edge_cost, predict
from casprof.profile import Profile
from search.derive import EdgeChoice, cell_from_edges, kept_edges

#: The lambda a controller starts from when it must raise a lambda of 0 (normalised units).
LAMBDA_FLOOR = 0.01
#: Under ``BAND * target`` the controller lowers lambda (the search may afford more).
BAND = 0.9


@dataclass
class LambdaController:
    """Multiplicative lambda adaptation towards a cost target (mutable state, checkpointed)."""

    target: float
    lambda_: float
    factor: float = 1.5
    band: float = BAND
    updates: int = 0
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (iteration, cost, new lambda)

    def update(self, iteration: int, cost: float) -> float:
        """Adapt lambda to the derived network's predicted ``cost``; returns the new lambda."""
        if cost > self.target:
            self.lambda_ = max(self.lambda_ * self.factor, LAMBDA_FLOOR)
        elif cost < self.band * self.target:
            self.lambda_ = self.lambda_ / self.factor
        self.updates += 1
        self.history.append((iteration, cost, self.lambda_))
        return self.lambda_

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target, "lambda": self.lambda_, "factor": self.factor, "band": self.band,
                "updates": self.updates, "history": [list(h) for h in self.history]}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        self.target, self.lambda_ = float(d["target"]), float(d["lambda"])
        self.factor, self.band, self.updates = float(d["factor"]), float(d["band"]), int(d["updates"])
        self.history = [(int(i), float(c), float(lam)) for i, c, lam in d["history"]]


@dataclass(frozen=True)
class Swap:
    cell_type: str
    node: int
    input_index: int
    old_op: str
    new_op: str
    saved: float
    strength_lost: float

    def describe(self, unit: str) -> str:
        return (f"{self.cell_type} node {self.node} input {self.input_index}: {self.old_op} -> {self.new_op} "
                f"(saves {self.saved:.4g} {unit}, strength -{self.strength_lost:.3g})")


@dataclass(frozen=True)
class BudgetDerivation:
    genotype: Genotype
    cost: float
    swaps: tuple[Swap, ...]
    within_budget: bool


def _genotype_cost(profile: Profile, metric: str, cells: Mapping[str, CellGraph], config: NetworkConfig) -> float:
    return predict(profile, Genotype(**cells, network=config))[metric].value


def budget_derivation(
    weights: Mapping[str, torch.Tensor],
    config: NetworkConfig,
    fixed: Mapping[str, CellGraph],
    profile: Profile,
    metric: str,
    target: float,
    record: SearchRecord | None = None,
) -> BudgetDerivation:
    """The strongest derived network, made cheaper edge by edge until it fits ``target``."""
    edges = {t: kept_edges(t, weights[t], config) for t in weights}
    cells = {t: cell_from_edges(edges[t], config, t) if t in edges else fixed[t] for t in CELL_TYPES}
    cost = _genotype_cost(profile, metric, cells, config)
    swaps: list[Swap] = []
    while cost > target:
        best: tuple[tuple[float, ...], int, Swap] | None = None
        for t, chosen in edges.items():
            ops = candidate_ops(t, with_none=True)
            w = weights[t].detach().double().cpu()
            for k, e in enumerate(chosen):
                current = edge_cost(profile, t, e.op, metric, node=e.node, input_index=e.input_index)
                w_cur = float(w[e.row, ops.index(e.op)])
                for o, op in enumerate(ops):
                    if op in (NONE, e.op):
                        continue
                    saved = current - edge_cost(profile, t, op, metric, node=e.node, input_index=e.input_index)
                    if saved <= 0:
                        continue
                    lost = max(w_cur - float(w[e.row, o]), 0.0)
                    after = cost - saved
                    # landing under the target wins, closest to it first; otherwise best saving per strength lost
                    key = (1.0, after, -lost) if after <= target else (0.0, saved / (lost + 1e-12), saved)
                    if best is None or key > best[0]:
                        best = (key, k, Swap(t, e.node, e.input_index, e.op, op, saved, lost))
        if best is None:
            break
        _, k, swap = best
        old = edges[swap.cell_type][k]
        edges[swap.cell_type][k] = EdgeChoice(old.cell_type, old.node, old.input_index, old.row, swap.new_op,
                                              old.strength - swap.strength_lost)
        cells[swap.cell_type] = cell_from_edges(edges[swap.cell_type], config, swap.cell_type)
        cost = _genotype_cost(profile, metric, cells, config)  # exact: a swap can also change a shared input cost
        swaps.append(swap)
    genotype = Genotype(**cells, network=config, search=record or SearchRecord(method="cas"))
    return BudgetDerivation(genotype, cost, tuple(swaps), cost <= target)
