"""Probe networks (paper §4.1, DESIGN §3).

For a cell type and an operation o, the probe is the whole network whose cells of that type use
o on every edge while the other cell types use ``identity``; the baseline is the network whose
cells are all ``identity``. Its cost c'_o minus the baseline's c'_id gives the operation's cost c_o.

Edge-model probes (profile schema 2, see :mod:`casprof.edge_model`) vary *which* edges a cell of
one type has or where the operation sits, the other cell types staying full ``identity`` cells:

* ``input_edges``: o on the edges that leave the two cell inputs, ``identity`` on the others
  (reduction cells: the stride-2 edges cost differently from the stride-1 edges);
* ``inputs_only``: an ``identity`` cell whose every node reads only the two cell inputs;
* ``rest_on_input0`` / ``rest_on_input1``: an ``identity`` cell whose first node reads both cell
  inputs and every later node only cell input 0 (or 1), over a single edge. (Every input and
  node stays in use: an unused one would be pruned by the ONNX export and the MAC trace.)
* ``mixed_inputs`` (reduction cells, one operation, :data:`MIXED_INPUTS_OP`): o on the input edges
  except node 0's edge from input 0 and node 1's edge from input 1, which stay ``identity``
  (factorized reduces), ``identity`` on the inner edges: each cell input is read both by an
  operation and by a factorized reduce, as in most derived reduction cells. It measures a cost
  that the factorized reduces of one input share (on ONNX Runtime's CPU provider, the input's
  conversion out of the blocked NCHWc layout and back), which the other probes cannot tell apart
  (see :mod:`casprof.edge_model`).

* ``derived_identity`` (profile schema 6): an ``identity`` cell shaped like a derived cell, two
  edges per node (:func:`derived_identity_graph`). Its cost is what the structure of a derived
  cell costs, measured directly instead of composed from the three identity probes above (whose
  combination multiplies their noise about threefold; see :mod:`casprof.edge_model`).

The identity variants tell apart what an edge costs by being there (a node sum, a factorized reduce, a
multi-scale projection) depending on whether it leaves cell input 0, cell input 1 (in the
multi-scale cell they have different widths) or an intermediate node.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from casprof.config import NetworkConfig
from casprof.genotype import CellGraph
from casprof.network import CASNetwork, full_graph
from casprof.ops import CELL_TYPES, candidate_ops

BASELINE_KEY = "baseline"


class Variant(str, enum.Enum):
    """Which edges of the probe's cell type carry the operation (see the module docstring)."""

    FULL = "full"
    INPUT_EDGES = "input_edges"
    INPUTS_ONLY = "inputs_only"
    REST_ON_INPUT0 = "rest_on_input0"
    REST_ON_INPUT1 = "rest_on_input1"
    MIXED_INPUTS = "mixed_inputs"
    DERIVED_IDENTITY = "derived_identity"


@dataclass(frozen=True, order=True)
class Probe:
    """One probe network: ``cell_type`` uses ``op`` on every edge; ``cell_type=None`` is the baseline."""

    cell_type: str | None
    op: str = "identity"
    variant: Variant = Variant.FULL

    @property
    def key(self) -> str:
        if self.cell_type is None:
            return BASELINE_KEY
        suffix = "" if self.variant is Variant.FULL else f"@{self.variant.value}"
        return f"{self.cell_type}/{self.op}{suffix}"

    @property
    def is_baseline(self) -> bool:
        return self.cell_type is None

    @classmethod
    def from_key(cls, key: str) -> Probe:
        if key == BASELINE_KEY:
            return BASELINE
        cell_type, _, rest = key.partition("/")
        op, _, variant = rest.partition("@")
        if cell_type not in CELL_TYPES or op not in candidate_ops(cell_type):
            raise ValueError(f"unknown probe key {key!r}")
        try:
            return cls(cell_type, op, Variant(variant or Variant.FULL.value))
        except ValueError:
            raise ValueError(f"unknown probe key {key!r}") from None


BASELINE = Probe(None)


#: The (node, input) edges that the ``mixed_inputs`` probe leaves ``identity``: one factorized reduce per input.
MIXED_INPUTS_IDENTITY_EDGES: frozenset[tuple[int, int]] = frozenset({(0, 0), (1, 1)})


def input_edges_graph(n_nodes: int, op: str, keep_identity: frozenset[tuple[int, int]] = frozenset()) -> CellGraph:
    """A full cell with ``op`` on the edges from the two cell inputs, except the ``keep_identity``
    (node, input) edges, and ``identity`` on the edges between nodes."""
    return tuple(tuple(("identity" if i >= 2 or (j, i) in keep_identity else op, i) for i in range(2 + j))
                 for j in range(n_nodes))


def derived_identity_graph(n_nodes: int) -> CellGraph:
    """An ``identity`` cell of a derived network's shape: node 0 reads both cell inputs, every later
    node j the node before it and cell input ``(j + 1) % 2`` (input 0, 1, 0, ...), so every input
    and node is in use and the edge classes come close to a random derived cell's average (2, 2, 2
    edges from input 0, input 1 and the nodes with 3 nodes; 4, 3, 5 with 6)."""
    return (("identity", 0), ("identity", 1)), *((("identity", (j + 1) % 2), ("identity", j + 1)) for j in range(1, n_nodes))


def variant_graph(n_nodes: int, op: str, variant: Variant) -> CellGraph:
    """The cell graph of a probe's own cell type."""
    if variant is Variant.FULL:
        return full_graph(n_nodes, op)
    if variant is Variant.INPUT_EDGES:
        return input_edges_graph(n_nodes, op)
    if variant is Variant.MIXED_INPUTS:
        return input_edges_graph(n_nodes, op, keep_identity=MIXED_INPUTS_IDENTITY_EDGES)
    if variant is Variant.INPUTS_ONLY:
        return tuple((("identity", 0), ("identity", 1)) for _ in range(n_nodes))
    if variant is Variant.DERIVED_IDENTITY:
        return derived_identity_graph(n_nodes)
    only = 0 if variant is Variant.REST_ON_INPUT0 else 1
    return (("identity", 0), ("identity", 1)), *((("identity", only),) for _ in range(n_nodes - 1))


def probe_graphs(config: NetworkConfig, probe: Probe) -> dict[str, CellGraph]:
    """The cell graphs of a probe network (full identity cells for the other cell types)."""
    return {
        t: variant_graph(config.intermediate_nodes(t), probe.op, probe.variant)
        if t == probe.cell_type
        else full_graph(config.intermediate_nodes(t), "identity")
        for t in CELL_TYPES
    }


def build_probe(config: NetworkConfig, probe: Probe, seed: int | None = None) -> CASNetwork:
    """The probe network in evaluation mode; with ``seed``, its weights are drawn from that seed
    (leaving the global random state alone), so the same probe exports to the same ONNX file."""
    return build_network(config, probe_graphs(config, probe), seed)


def build_network(config: NetworkConfig, graphs: dict[str, CellGraph], seed: int | None = None) -> CASNetwork:
    """The network of these cell graphs in evaluation mode, its weights drawn from ``seed`` if given
    (leaving the global random state alone)."""
    if seed is None:
        return CASNetwork(config, graphs).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CASNetwork(config, graphs).eval()


def measured_probes(cell_types: tuple[str, ...] = CELL_TYPES) -> list[Probe]:
    """Every probe that must be measured: all operations but ``identity`` (whose probe *is* the baseline)."""
    return [Probe(t, op) for t in cell_types for op in candidate_ops(t) if op != "identity"]


#: The cell type whose operations are also probed on the input edges only (stride 2 vs stride 1).
SPLIT_CELL_TYPES: tuple[str, ...] = ("reduce",)
#: The one operation of the ``mixed_inputs`` probe (a convolution: most derived edges are convolutions).
MIXED_INPUTS_OP = "conv_3x3"


def edge_model_probes(config: NetworkConfig) -> list[Probe]:
    """The extra probes of a schema-2 profile (none for a cell type with a single node, whose
    full cell already is a derived cell)."""
    probes: list[Probe] = []
    for t in CELL_TYPES:
        if config.intermediate_nodes(t) < 2:
            continue
        probes += [Probe(t, "identity", v) for v in (Variant.INPUTS_ONLY, Variant.REST_ON_INPUT0, Variant.REST_ON_INPUT1,
                                                      Variant.DERIVED_IDENTITY)]
        if t in SPLIT_CELL_TYPES:
            probes += [Probe(t, op, Variant.INPUT_EDGES) for op in candidate_ops(t) if op != "identity"]
            probes.append(Probe(t, MIXED_INPUTS_OP, Variant.MIXED_INPUTS))
    return probes


def profile_probes(config: NetworkConfig) -> list[Probe]:
    """Every network a profile of ``config`` holds: the baseline, each operation's probe and the edge-model probes."""
    return [BASELINE, *measured_probes(), *edge_model_probes(config)]


def block_of(probe: Probe) -> str:
    """The measurement block a probe is timed in: its cell type, or ``<cell type>-edges``."""
    assert probe.cell_type is not None
    return probe.cell_type if probe.variant is Variant.FULL else f"{probe.cell_type}-edges"


def measurement_blocks(config: NetworkConfig) -> list[tuple[str, list[Probe]]]:
    """The blocks of a measurement in order: each cell type's probes, then the edge-model probes."""
    probes = measured_probes() + edge_model_probes(config)
    labels = list(dict.fromkeys(block_of(p) for p in probes))
    return [(label, [p for p in probes if block_of(p) == label]) for label in labels]
