"""The CAS network skeleton (paper Figure 3, DESIGN §2).

Three stem convolutions (strides 2, 1, 2), eight cells in the layout ``NNRNNRNN`` (output
stride 16), a multi-scale cell fed by the second normal cell and the last cell, a 1x1
classifier, and logits upsampled to the input size.

Cells are built from a :data:`~casprof.genotype.CellGraph` and an edge factory, so the same
skeleton serves derived networks (one operation per edge), probe networks (one operation on
every edge of a cell type) and the search's supernet (a mixed operation per edge, weighted by
the ``weights`` argument of :meth:`CASNetwork.forward`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from casprof.config import NetworkConfig
from casprof.genotype import CellGraph, Genotype
from casprof.ops import CELL_TYPES, FactorizedReduce, ReLUConvBN, build_op

#: ``make_edge(cell_type, op_name, channels, stride) -> module``
EdgeFactory = Callable[[str, str, int, int], nn.Module]


def discrete_edge(cell_type: str, op: str, channels: int, stride: int) -> nn.Module:
    """The edge of a derived or probe network: the named operation itself."""
    return build_op(cell_type, op, channels, stride)


def full_graph(n_nodes: int, op: str) -> CellGraph:
    """A fully connected cell with ``op`` on every edge (probe networks, supernet)."""
    return tuple(tuple((op, i) for i in range(2 + j)) for j in range(n_nodes))


def _run_edges(edges: nn.ModuleList, x: torch.Tensor, weights: torch.Tensor | None, k: int) -> torch.Tensor:
    edge = edges[k]
    return edge(x) if weights is None else edge(x, weights[k])


class Cell(nn.Module):
    """A normal or reduction cell: two projected inputs, intermediate nodes, concatenated output."""

    def __init__(
        self,
        graph: CellGraph,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        make_edge: EdgeFactory,
    ) -> None:
        super().__init__()
        self.cell_type = "reduce" if reduction else "normal"
        self.reduction = reduction
        self.graph = graph
        self.preprocess0 = (
            FactorizedReduce(c_prev_prev, channels) if reduction_prev else ReLUConvBN(c_prev_prev, channels, 1)
        )
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1)
        self.edges = nn.ModuleList(
            make_edge(self.cell_type, op, channels, 2 if reduction and i < 2 else 1)
            for node in graph
            for op, i in node
        )
        self.out_channels = channels * len(graph)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        k = 0
        for node in self.graph:
            total = None
            for _, i in node:
                y = _run_edges(self.edges, states[i], weights, k)
                total = y if total is None else total + y
                k += 1
            states.append(total)
        return torch.cat(states[2:], dim=1)


class MultiScaleCell(nn.Module):
    """The multi-scale cell (paper §3.4): aligned inputs, a 1x1 projection on every input edge."""

    def __init__(self, graph: CellGraph, c_low: int, c_high: int, channels: int, make_edge: EdgeFactory) -> None:
        super().__init__()
        self.graph = graph
        in_channels = (c_low, c_high)
        self.projections = nn.ModuleList()
        edges = []
        for node in graph:
            for op, i in node:
                self.projections.append(ReLUConvBN(in_channels[i], channels, 1) if i < 2 else nn.Identity())
                edges.append(make_edge("ms", op, channels, 1))
        self.edges = nn.ModuleList(edges)
        self.out_channels = channels * len(graph)

    def forward(self, low: torch.Tensor, high: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        high = F.interpolate(high, size=low.shape[2:], mode="bilinear", align_corners=False)
        states = [low, high]
        k = 0
        for node in self.graph:
            total = None
            for _, i in node:
                y = _run_edges(self.edges, self.projections[k](states[i]), weights, k)
                total = y if total is None else total + y
                k += 1
            states.append(total)
        return torch.cat(states[2:], dim=1)


def _conv_bn(c_in: int, c_out: int, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class CASNetwork(nn.Module):
    """The segmentation network of CAS for given cell graphs.

    Args:
        config: the skeleton configuration.
        graphs: one :data:`CellGraph` per cell type (``normal``, ``reduce``, ``ms``).
        make_edge: builds the module on each edge (default: the named operation).
    """

    def __init__(
        self,
        config: NetworkConfig,
        graphs: Mapping[str, CellGraph],
        make_edge: EdgeFactory = discrete_edge,
    ) -> None:
        super().__init__()
        missing = [t for t in CELL_TYPES if t not in graphs]
        if missing:
            raise ValueError(f"graphs is missing the cell type(s) {missing}")
        self.config = config
        self.graphs = dict(graphs)
        s1, s2, s3 = config.stem_channels
        self.stem = nn.ModuleList(
            [
                _conv_bn(config.in_channels, s1, 2, relu=True),
                _conv_bn(s1, s2, 1, relu=True),
                _conv_bn(s2, s3, 2, relu=False),
            ]
        )
        c_prev_prev, c_prev, channels = s2, s3, config.channels
        reduction_prev = True  # the last stem convolution halves the resolution
        cells = []
        low_channels = 0
        for index, kind in enumerate(config.layout):
            reduction = kind == "R"
            if reduction:
                channels *= 2
            graph = graphs["reduce" if reduction else "normal"]
            cell = Cell(graph, c_prev_prev, c_prev, channels, reduction, reduction_prev, make_edge)
            cells.append(cell)
            c_prev_prev, c_prev, reduction_prev = c_prev, cell.out_channels, reduction
            if index == config.ms_low_cell:
                low_channels = cell.out_channels
        self.cells = nn.ModuleList(cells)
        self.ms_cell = MultiScaleCell(graphs["ms"], low_channels, c_prev, config.ms_channels, make_edge)
        self.classifier = nn.Sequential(
            nn.ReLU(inplace=False), nn.Conv2d(self.ms_cell.out_channels, config.num_classes, 1)
        )

    @classmethod
    def from_genotype(cls, genotype: Genotype) -> CASNetwork:
        """The derived network of a genotype."""
        return cls(genotype.network, genotype.cells())

    def forward(
        self,
        x: torch.Tensor,
        weights: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits of shape ``(N, num_classes, H, W)``.

        ``weights`` (search only) maps each cell type to the per-edge mixing weights.
        """
        size = x.shape[2:]
        x = self.stem[0](x)
        s0 = self.stem[1](x)
        s1 = self.stem[2](s0)
        low = s1
        for index, cell in enumerate(self.cells):
            w = None if weights is None else weights[cell.cell_type]
            s0, s1 = s1, cell(s0, s1, w)
            if index == self.config.ms_low_cell:
                low = s1
        features = self.ms_cell(low, s1, None if weights is None else weights["ms"])
        logits = self.classifier(features)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
