"""Probe networks (paper §4.1, DESIGN §3).

For a cell type and an operation o, the probe is the whole network whose cells of that type use
o on every edge while the other cell types use ``identity``; the baseline is the network whose
cells are all ``identity``. Its cost c'_o minus the baseline's c'_id gives the operation's cost c_o.
"""

from __future__ import annotations

from dataclasses import dataclass

from casprof.config import NetworkConfig
from casprof.genotype import CellGraph
from casprof.network import CASNetwork, full_graph
from casprof.ops import CELL_TYPES, candidate_ops

BASELINE_KEY = "baseline"


@dataclass(frozen=True, order=True)
class Probe:
    """One probe network: ``cell_type`` uses ``op`` on every edge; ``cell_type=None`` is the baseline."""

    cell_type: str | None
    op: str = "identity"

    @property
    def key(self) -> str:
        return BASELINE_KEY if self.cell_type is None else f"{self.cell_type}/{self.op}"

    @property
    def is_baseline(self) -> bool:
        return self.cell_type is None

    @classmethod
    def from_key(cls, key: str) -> Probe:
        if key == BASELINE_KEY:
            return BASELINE
        cell_type, _, op = key.partition("/")
        if cell_type not in CELL_TYPES or op not in candidate_ops(cell_type):
            raise ValueError(f"unknown probe key {key!r}")
        return cls(cell_type, op)


BASELINE = Probe(None)


def probe_graphs(config: NetworkConfig, probe: Probe) -> dict[str, CellGraph]:
    """The fully connected cell graphs of a probe network."""
    return {
        t: full_graph(config.intermediate_nodes(t), probe.op if t == probe.cell_type else "identity")
        for t in CELL_TYPES
    }


def build_probe(config: NetworkConfig, probe: Probe) -> CASNetwork:
    """The probe network in evaluation mode."""
    return CASNetwork(config, probe_graphs(config, probe)).eval()


def measured_probes(cell_types: tuple[str, ...] = CELL_TYPES) -> list[Probe]:
    """Every probe that must be measured: all operations but ``identity`` (whose probe *is* the baseline)."""
    return [Probe(t, op) for t in cell_types for op in candidate_ops(t) if op != "identity"]
