"""The CAS supernet: the network skeleton with a mixed operation on every edge of searched cells.

Built with :class:`casprof.network.CASNetwork` and an edge factory, so the supernet is the same
skeleton as derived and probe networks. Each searched cell type ``t`` has an architecture weight
``alpha_t`` of shape ``[edges of a full cell, operations incl. none]`` (``none`` first, as in
:func:`casprof.ops.candidate_ops`), registered as an ``nn.Parameter``; the edges' mixing weights
are ``softmax(alpha_t)`` row by row (paper Eq. 3). Cells that are not searched keep a fixed
derived cell (discrete edges, no alpha). Operations inside mixed edges have ``affine=False``
batch norms, as in DARTS.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from casprof.config import NetworkConfig
from casprof.genotype import CellGraph
from casprof.network import CASNetwork, discrete_edge, full_graph
from casprof.ops import CELL_TYPES, NONE, build_op, candidate_ops

#: DARTS initialisation scale of the architecture weights.
ALPHA_INIT_SCALE = 1e-3


class MixedOp(nn.Module):
    """Sum of every candidate operation of a cell type, weighted by one row of softmax(alpha)."""

    def __init__(self, cell_type: str, channels: int, stride: int) -> None:
        super().__init__()
        self.op_names = candidate_ops(cell_type, with_none=True)
        self.ops = nn.ModuleList(build_op(cell_type, op, channels, stride, affine=False) for op in self.op_names)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))  # type: ignore[return-value]


def default_ms_cell(config: NetworkConfig) -> CellGraph:
    """The fixed multi-scale cell of a backbone-only search: a residual chain of dilated convs.

    Node ``j`` sums ``conv_3x3_d(2^(j mod 4))`` of its predecessor ``j`` (node 0: the low-level
    input) and ``identity`` of state ``j + 1`` (node 0: the upsampled high-level input), an
    ASPP-like context module built only from O_ms operations.
    """
    return tuple(
        ((f"conv_3x3_d{2 ** (j % 4)}", j), ("identity", j + 1)) for j in range(config.intermediate_nodes("ms"))
    )


def edge_list(config: NetworkConfig, cell_type: str) -> list[tuple[int, int]]:
    """``(node, input_index)`` of every edge of a full cell, in alpha row order."""
    return [(j, i) for j in range(config.intermediate_nodes(cell_type)) for i in range(2 + j)]


class Supernet(nn.Module):
    """The search network.

    Args:
        config: the skeleton configuration (the profile's network).
        searched: the cell types whose edges are mixed operations (each gets ``alpha_<type>``).
        fixed: a derived cell for every cell type not searched.
    """

    def __init__(
        self, config: NetworkConfig, searched: tuple[str, ...], fixed: Mapping[str, CellGraph] | None = None
    ) -> None:
        super().__init__()
        fixed = dict(fixed or {})
        unknown = [t for t in searched if t not in CELL_TYPES]
        if unknown or not searched:
            raise ValueError(f"searched must name cell types among {CELL_TYPES}, got {searched}")
        missing = [t for t in CELL_TYPES if t not in searched and t not in fixed]
        if missing:
            raise ValueError(f"no fixed cell for the unsearched cell type(s) {missing}")
        self.config = config
        self.searched = tuple(t for t in CELL_TYPES if t in searched)
        self.fixed = {t: fixed[t] for t in CELL_TYPES if t not in self.searched}
        graphs = {t: full_graph(config.intermediate_nodes(t), NONE) if t in self.searched else self.fixed[t] for t in CELL_TYPES}

        def make_edge(cell_type: str, op: str, channels: int, stride: int) -> nn.Module:
            if cell_type in self.searched:
                return MixedOp(cell_type, channels, stride)
            return discrete_edge(cell_type, op, channels, stride)

        self.net = CASNetwork(config, graphs, make_edge)
        for t in self.searched:
            shape = (config.edges_per_cell(t), len(candidate_ops(t, with_none=True)))
            self.register_parameter(f"alpha_{t}", nn.Parameter(ALPHA_INIT_SCALE * torch.randn(shape)))

    # --- parameters -------------------------------------------------------------------
    def alpha(self, cell_type: str) -> nn.Parameter:
        return getattr(self, f"alpha_{cell_type}")

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha(t) for t in self.searched]

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return self.net.named_parameters()

    # --- forward ----------------------------------------------------------------------
    def mixing_weights(self) -> dict[str, torch.Tensor]:
        """softmax(alpha) per searched cell type, one row per edge."""
        return {t: torch.softmax(self.alpha(t), dim=-1) for t in self.searched}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.mixing_weights()
        # fixed cells get None: their discrete edges take no weights
        return self.net(x, {t: weights.get(t) for t in CELL_TYPES})  # type: ignore[dict-item]
