"""The genotype: a typed, frozen description of a derived CAS network (DESIGN §4).

A cell is a tuple of intermediate nodes; each node is a tuple of ``(operation, input_index)``
edges, where inputs 0 and 1 are the cell inputs and ``2 + k`` is intermediate node ``k``.
A derived cell has exactly two edges per node (k = 2 strongest predecessors). The JSON file is
the only hand-off between ``search`` and ``deploy``; it is parsed and validated, never ``eval``-ed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casprof._io import atomic_write_json, check_schema_version, read_json_file
from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.ops import CELL_TYPES, NONE, candidate_ops

GENOTYPE_SCHEMA_VERSION = 1
EDGES_PER_NODE = 2

Edge = tuple[str, int]
CellGraph = tuple[tuple[Edge, ...], ...]


@dataclass(frozen=True)
class SearchRecord:
    """How a genotype came about: a CAS search, a random draw, or a hand-written file."""

    method: str = "manual"
    profile_fingerprint: str | None = None
    profile_path: str | None = None
    metric: str | None = None
    lambda_: float | None = None
    iterations: int | None = None
    seed: int | None = None
    predicted_cost: float | None = None
    budget: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "profile_fingerprint": self.profile_fingerprint,
            "profile_path": self.profile_path,
            "metric": self.metric,
            "lambda": self.lambda_,
            "iterations": self.iterations,
            "seed": self.seed,
            "predicted_cost": self.predicted_cost,
            "budget": self.budget,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SearchRecord:
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise UserInputError("The genotype's search block must be a JSON object.")
        d = dict(d)
        if "lambda" in d:
            d["lambda_"] = d.pop("lambda")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def _cell_from_json(cell_type: str, raw: Any) -> CellGraph:
    if not isinstance(raw, list):
        raise UserInputError(f"The genotype's {cell_type!r} cell must be a list of nodes.")
    nodes = []
    for j, node in enumerate(raw):
        if not isinstance(node, list):
            raise UserInputError(f"Node {j} of the {cell_type!r} cell must be a list of [operation, input] pairs.")
        edges = []
        for edge in node:
            if (
                not isinstance(edge, list)
                or len(edge) != 2
                or not isinstance(edge[0], str)
                or not isinstance(edge[1], int)
                or isinstance(edge[1], bool)
            ):
                raise UserInputError(
                    f"Node {j} of the {cell_type!r} cell has a malformed edge {edge!r}; expected [operation, input_index]."
                )
            edges.append((edge[0], edge[1]))
        nodes.append(tuple(edges))
    return tuple(nodes)


def validate_cell(cell_type: str, cell: CellGraph, config: NetworkConfig, *, edges_per_node: int | None = EDGES_PER_NODE) -> None:
    """Check a derived cell: node count, operation names, input indices, distinct predecessors."""
    allowed = candidate_ops(cell_type)
    expected_nodes = config.intermediate_nodes(cell_type)
    if len(cell) != expected_nodes:
        raise UserInputError(
            f"The {cell_type!r} cell has {len(cell)} nodes but the network expects {expected_nodes}."
        )
    for j, node in enumerate(cell):
        if edges_per_node is not None and len(node) != edges_per_node:
            raise UserInputError(
                f"Node {j} of the {cell_type!r} cell has {len(node)} edges; a derived cell keeps exactly {edges_per_node}."
            )
        seen: set[int] = set()
        for op, index in node:
            if op == NONE:
                raise UserInputError(
                    f"Node {j} of the {cell_type!r} cell uses 'none', which exists only during search."
                )
            if op not in allowed:
                raise UserInputError(
                    f"Node {j} of the {cell_type!r} cell names the unknown operation {op!r}; known: {', '.join(allowed)}."
                )
            if not 0 <= index < 2 + j:
                raise UserInputError(
                    f"Node {j} of the {cell_type!r} cell reads input {index}, out of range 0..{1 + j}."
                )
            if index in seen:
                raise UserInputError(f"Node {j} of the {cell_type!r} cell takes input {index} twice.")
            seen.add(index)


@dataclass(frozen=True)
class Genotype:
    """A derived network: one graph per cell type plus the skeleton configuration."""

    normal: CellGraph
    reduce: CellGraph
    ms: CellGraph
    network: NetworkConfig = field(default_factory=NetworkConfig)
    search: SearchRecord = field(default_factory=SearchRecord)

    def __post_init__(self) -> None:
        for cell_type in CELL_TYPES:
            cell = tuple(tuple((str(op), int(i)) for op, i in node) for node in getattr(self, cell_type))
            object.__setattr__(self, cell_type, cell)
            validate_cell(cell_type, cell, self.network)

    def cell(self, cell_type: str) -> CellGraph:
        return getattr(self, cell_type)

    def cells(self) -> dict[str, CellGraph]:
        return {t: self.cell(t) for t in CELL_TYPES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": GENOTYPE_SCHEMA_VERSION,
            **{t: [[[op, i] for op, i in node] for node in self.cell(t)] for t in CELL_TYPES},
            "network": self.network.network_block(),
            "search": self.search.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> Genotype:
        if not isinstance(d, dict):
            raise UserInputError("A genotype must be a JSON object.")
        if not any(k in d for k in CELL_TYPES):
            looks = " (it looks like a cost profile)" if "costs" in d and "baseline" in d else ""
            raise UserInputError(f"This is not a genotype{looks}: it has none of the cells {', '.join(CELL_TYPES)}.")
        check_schema_version(d, "genotype", GENOTYPE_SCHEMA_VERSION)
        missing = [k for k in (*CELL_TYPES, "network") if k not in d]
        if missing:
            raise UserInputError(f"The genotype is missing the field(s) {', '.join(missing)}.")
        config = NetworkConfig.from_dict(d["network"])
        recorded = d["network"].get("fingerprint")
        if recorded is not None and recorded != config.fingerprint():
            raise UserInputError(
                f"The genotype's network fingerprint {recorded} does not match its configuration ({config.fingerprint()}); "
                "it was made by another version of the skeleton or edited by hand."
            )
        cells = {t: _cell_from_json(t, d[t]) for t in CELL_TYPES}
        return cls(**cells, network=config, search=SearchRecord.from_dict(d.get("search")))

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise UserInputError(f"The genotype is not valid JSON ({exc.msg}).") from None

    def save(self, path: Path) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Genotype:
        return cls.from_dict(read_json_file(Path(path), "genotype"))


def random_cell(cell_type: str, config: NetworkConfig, rng: random.Random, ops: Sequence[str] | None = None) -> CellGraph:
    """A random valid derived cell: each node picks two distinct predecessors and an operation each.

    ``ops`` narrows the draw to some of the cell type's candidate operations (all of them by default).
    """
    ops = candidate_ops(cell_type) if ops is None else tuple(ops)
    unknown = sorted(set(ops) - set(candidate_ops(cell_type)))
    if not ops or unknown:
        raise ValueError(f"cannot draw {cell_type} cells from {list(ops)!r}: {unknown or 'no operations'}")
    nodes = []
    for j in range(config.intermediate_nodes(cell_type)):
        inputs = sorted(rng.sample(range(2 + j), EDGES_PER_NODE))
        nodes.append(tuple((rng.choice(ops), i) for i in inputs))
    return tuple(nodes)


def random_genotype(seed: int, config: NetworkConfig | None = None,
                    ops: Mapping[str, Sequence[str]] | None = None) -> Genotype:
    """A random valid genotype for ``config``; the same seed gives the same genotype.

    ``ops`` (by cell type) narrows each cell type's draw to some of its operations; without it
    (every operation) the genotype is the one ``casprof genotype --random --seed`` writes.
    """
    config = config or NetworkConfig()
    rng = random.Random(seed)
    cells = {t: random_cell(t, config, rng, None if ops is None else ops[t]) for t in CELL_TYPES}
    method = "random" if ops is None else "random (restricted operations)"
    return Genotype(**cells, network=config, search=SearchRecord(method=method, seed=seed))


def uniform_genotype(ops: dict[str, str], config: NetworkConfig | None = None) -> Genotype:
    """Every edge of each cell type uses one operation; each node reads its two latest predecessors."""
    config = config or NetworkConfig()
    cells = {
        t: tuple(((ops[t], j), (ops[t], j + 1)) for j in range(config.intermediate_nodes(t))) for t in CELL_TYPES
    }
    return Genotype(**cells, network=config, search=SearchRecord(method="manual"))
