"""Derive a discrete genotype from architecture weights (paper §3.1, §4.1).

Each edge takes its strongest non-``none`` operation; each intermediate node keeps its k = 2
strongest predecessors, where an edge's strength is its largest softmax weight excluding
``none``. Ties go to the earlier operation / input (stable, deterministic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from casprof.config import NetworkConfig
from casprof.genotype import EDGES_PER_NODE, CellGraph, Genotype, SearchRecord
from casprof.ops import CELL_TYPES, NONE, candidate_ops
from search.supernet import edge_list


@dataclass(frozen=True)
class EdgeChoice:
    """One kept edge of a derived cell, with what the budget-aware derivation needs."""

    cell_type: str
    node: int
    input_index: int
    row: int
    op: str
    strength: float


def kept_edges(cell_type: str, weights: torch.Tensor, config: NetworkConfig) -> list[EdgeChoice]:
    """The k = 2 kept edges of every node, each with its strongest non-``none`` operation.

    Args:
        weights: softmax(alpha) of the cell type, shape ``[edges, operations incl. none]``.
    """
    ops = candidate_ops(cell_type, with_none=True)
    if tuple(weights.shape) != (config.edges_per_cell(cell_type), len(ops)):
        raise ValueError(f"weights of shape {tuple(weights.shape)} do not fit a full {cell_type} cell")
    w = weights.detach().double().cpu()
    none = ops.index(NONE)
    masked = w.clone()
    masked[:, none] = -1.0
    strength, best = masked.max(dim=1)  # first maximum on ties
    edges = edge_list(config, cell_type)
    chosen: list[EdgeChoice] = []
    for j in range(config.intermediate_nodes(cell_type)):
        rows = [r for r, (node, _) in enumerate(edges) if node == j]
        top = sorted(rows, key=lambda r: (-float(strength[r]), r))[:EDGES_PER_NODE]
        for r in sorted(top, key=lambda r: edges[r][1]):
            chosen.append(EdgeChoice(cell_type, j, edges[r][1], r, ops[int(best[r])], float(strength[r])))
    return chosen


def cell_from_edges(edges: list[EdgeChoice], config: NetworkConfig, cell_type: str) -> CellGraph:
    nodes: list[list[tuple[str, int]]] = [[] for _ in range(config.intermediate_nodes(cell_type))]
    for e in edges:
        nodes[e.node].append((e.op, e.input_index))
    return tuple(tuple(sorted(node, key=lambda edge: edge[1])) for node in nodes)


def derive_cell(cell_type: str, weights: torch.Tensor, config: NetworkConfig) -> CellGraph:
    """The derived cell of softmax weights ``[edges, operations incl. none]``."""
    return cell_from_edges(kept_edges(cell_type, weights, config), config, cell_type)


def derive_genotype(
    weights: Mapping[str, torch.Tensor],
    config: NetworkConfig,
    fixed: Mapping[str, CellGraph],
    record: SearchRecord | None = None,
) -> Genotype:
    """The genotype of the searched cells' weights plus the fixed (unsearched) cells."""
    cells = {t: derive_cell(t, weights[t], config) if t in weights else fixed[t] for t in CELL_TYPES}
    return Genotype(**cells, network=config, search=record or SearchRecord(method="cas"))
