"""The per-edge model of a schema-2 profile: what one edge of a derived cell costs.

A probe cell is fully connected (node j has 2 + j edges) while a derived cell keeps two edges
per node, so c'_id includes edges a derived network does not have. Each of them costs something
just by being there: a node sum (every edge after a node's first), on the input edges of a
reduction cell a factorized reduce (``identity`` at stride 2), on the input edges of the
multi-scale cell a 1x1 projection. And in a reduction cell an operation on a stride-2 input edge
costs differently from the same operation on a stride-1 edge. The uniform share c_o / E ignores
both; measured on the default network at 768x1536 it over-predicts even the exact MAC count of
random derived networks by 5-9%.

Edges are told apart by *class*: ``input0`` and ``input1`` (leaving cell input 0 or 1; n edges
each in a full cell of n nodes; the multi-scale cell's two inputs have different widths) and
``inner`` (leaving an intermediate node; E_inner = n(n-1)/2 edges). With

* s_k, the cost of an ``identity`` edge of class k, from three extra identity probes per cell
  type (see :mod:`casprof.probes`), each measured as d = c'(probe) - c'_id: ``inputs_only``
  lacks the E_inner inner edges, so s_inner = -d_inputs / E_inner; ``rest_on_input1`` also
  lacks n - 1 input-0 edges, so s_input0 = -(d - d_inputs) / (n - 1); ``rest_on_input0``
  likewise gives s_input1;
* c_o^k, the part of c_o spent on class-k edges (reduction cells: the input edges' part is
  measured by the ``input_edges`` probe, split evenly between inputs 0 and 1, whose tensors have
  one shape; other cells: c_o E_k / E, exact because every edge's operation sees one shape),

one edge of class k using o costs ``s_k + c_o^k / E_k``, and a derived network costs
``c'_id - sum_t sum_k E_k s_k + sum of its edges' costs``. The model is linear in the edges, so
it predicts exact metrics (parameters, MACs) exactly; what it still ignores is a cell input that
no edge reads (PyTorch still computes its preprocessing, an ONNX export drops it).

Shared input cost (profile schema 5, reduction cells). The factorized reduces (``identity`` on a
stride-2 edge) that read one cell input can share work: on ONNX Runtime's CPU provider the
input's conversion out of the blocked NCHWc layout and back is done once for all of them (graph
optimisation merges it), about 2-3 ms per reduction cell and input at 768x1536 on the 2-core
CPUs here. Call it R_k. It is in c'_id and in every identity probe (each reads both inputs
through factorized reduces), and it is gone from the ``input_edges`` and full probes (no
factorized reduce left), so the linear model above spreads -R_k over the operations' input
edges (-R_k / n each) and charges nothing when a derived cell keeps a factorized reduce beside
operations on the same input, which is what most derived reduction cells do: such networks were
predicted about 2 % low each. The ``mixed_inputs`` probe (one factorized reduce and n - 1 edges
of one operation o per input) measures it: under the model below it costs
(n - 1)/n (c_o^inputs + R_0 + R_1), so R_0 + R_1 = n/(n - 1) c_mixed - c_o^inputs(o), split evenly
between the inputs like c_o^inputs. Then an ``identity`` edge from input k costs s_k + R_k, an
operation's edge s_k + c_o^k / E_k + R_k / n, a full identity cell sum_k E_k s_k + sum_k R_k, and
a derived cell with f_k > 1 factorized reduces on input k gives back R_k (f_k - 1)
(:func:`shared_input_overlap`; the search's per-edge cost, which cannot see whether another
edge of the same input is a factorized reduce, leaves that out). Every probe is still predicted
exactly as measured; exact metrics have R_k = 0 (fvcore counts each factorized reduce on its own).
Profiles without the probe (schemas 2-4) have R_k = 0, i.e. the model above.

Measured structure (profile schema 6). The three identity probes enter every prediction through
``- sum_k E_k s_k`` (the full cells' identity edges taken out of c'_id), a combination such as
``-1.5 (d_0 + d_1) + 2 d_inputs`` for a 3-node cell: each probe's noise, several ms on the 2-core
CPUs here, comes out about three times larger, the same for every derived network. Two profiles
of one hour on one VM moved every prediction by up to 16 % that way. The ``derived_identity``
probe measures an ``identity`` cell of a derived cell's shape, C (two edges per node), directly,
d_C = c'(probe) - c'_id; each cell type's part of a prediction is then anchored to it,

    part_t(G) = d_C + model_t(G) - model_t(C),

where model_t is the linear model above: the full cells' structure cancels, and the identity
probes enter only through the difference of G's and C's edge classes (a few edges). Every probe
but C is still predicted as the model does, C as measured; exact metrics get a correction of 0
(the model is exact for them). Profiles without the probe (schemas 2-5) predict as before.
:func:`casprof.predict.measured_structure_correction` computes it with the same per-cell formula
that ``casprof predict`` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from casprof.errors import UserInputError
from casprof.ops import CELL_TYPES, candidate_ops

if TYPE_CHECKING:  # pragma: no cover
    from casprof.config import NetworkConfig
    from casprof.genotype import CellGraph
    from casprof.probes import Probe
    from casprof.profile import CostValue, Profile

INPUT0, INPUT1, INNER = "input0", "input1", "inner"
CLASSES = (INPUT0, INPUT1, INNER)

MetricCosts = Mapping[str, "CostValue"]


@dataclass(frozen=True)
class CellEdgeModel:
    """The extra probes of one cell type, each as c'(probe) - c'_id per metric."""

    inputs_only: MetricCosts
    rest_on_input0: MetricCosts
    rest_on_input1: MetricCosts
    input_edges: Mapping[str, MetricCosts] = field(default_factory=dict)
    #: the ``mixed_inputs`` probe, keyed by its one operation (empty before schema 5)
    mixed_inputs: Mapping[str, MetricCosts] = field(default_factory=dict)
    #: the ``derived_identity`` probe (empty before schema 6)
    derived_identity: MetricCosts = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "inputs_only": {m: v.to_dict() for m, v in self.inputs_only.items()},
            "rest_on_input0": {m: v.to_dict() for m, v in self.rest_on_input0.items()},
            "rest_on_input1": {m: v.to_dict() for m, v in self.rest_on_input1.items()},
        }
        if self.input_edges:
            d["input_edges"] = {op: {m: v.to_dict() for m, v in ms.items()} for op, ms in self.input_edges.items()}
        if self.mixed_inputs:
            d["mixed_inputs"] = {op: {m: v.to_dict() for m, v in ms.items()} for op, ms in self.mixed_inputs.items()}
        if self.derived_identity:
            d["derived_identity"] = {m: v.to_dict() for m, v in self.derived_identity.items()}
        return d

    @classmethod
    def from_probe_costs(cls, cell_type: str, probes: Iterable[Probe],
                         probe_costs: Callable[[Probe], MetricCosts]) -> CellEdgeModel:
        """The model of ``cell_type`` from its probes' costs (``probe_costs`` maps a probe to
        c'(probe) - c'_id per metric): the three identity probes, and the ``input_edges`` and
        ``mixed_inputs`` and ``derived_identity`` probes of ``cell_type`` among ``probes`` (others are ignored)."""
        from casprof.probes import Probe, Variant

        mine = [p for p in probes if p.cell_type == cell_type]
        return cls(
            inputs_only=probe_costs(Probe(cell_type, "identity", Variant.INPUTS_ONLY)),
            rest_on_input0=probe_costs(Probe(cell_type, "identity", Variant.REST_ON_INPUT0)),
            rest_on_input1=probe_costs(Probe(cell_type, "identity", Variant.REST_ON_INPUT1)),
            input_edges={p.op: probe_costs(p) for p in mine if p.variant is Variant.INPUT_EDGES},
            mixed_inputs={p.op: probe_costs(p) for p in mine if p.variant is Variant.MIXED_INPUTS},
            derived_identity=next((probe_costs(p) for p in mine if p.variant is Variant.DERIVED_IDENTITY), {}),
        )

    @classmethod
    def from_dict(cls, d: Any, cell_type: str, metrics: tuple[str, ...]) -> CellEdgeModel:
        from casprof.profile import CostValue

        where = f"edge_model.{cell_type}"
        if not isinstance(d, Mapping) or not {"inputs_only", "rest_on_input0", "rest_on_input1"} <= set(d):
            raise UserInputError(f"The profile's {where} block needs inputs_only, rest_on_input0 and rest_on_input1.")

        def costs(raw: Any, name: str) -> dict[str, CostValue]:
            if not isinstance(raw, Mapping) or any(m not in raw for m in metrics):
                raise UserInputError(f"The profile's {where}.{name} entry lacks one of the metrics {', '.join(metrics)}.")
            return {m: CostValue.from_dict(raw[m], f"{where}.{name}.{m}") for m in metrics}

        raw_ops = d.get("input_edges") or {}
        if not isinstance(raw_ops, Mapping):
            raise UserInputError(f"The profile's {where}.input_edges block must be an object.")
        unknown = sorted(set(raw_ops) - set(candidate_ops(cell_type)))
        if unknown:
            raise UserInputError(f"The profile's {where}.input_edges names unknown operation(s) {', '.join(unknown)}.")
        raw_mixed = d.get("mixed_inputs") or {}
        if not isinstance(raw_mixed, Mapping) or len(raw_mixed) > 1:
            raise UserInputError(f"The profile's {where}.mixed_inputs block must be an object with one operation.")
        for op in raw_mixed:
            if op not in raw_ops:
                raise UserInputError(f"The profile's {where}.mixed_inputs probe uses {op!r}, which its input_edges block does not measure.")
        return cls(
            inputs_only=costs(d["inputs_only"], "inputs_only"),
            rest_on_input0=costs(d["rest_on_input0"], "rest_on_input0"),
            rest_on_input1=costs(d["rest_on_input1"], "rest_on_input1"),
            input_edges={op: costs(v, f"input_edges.{op}") for op, v in raw_ops.items()},
            mixed_inputs={op: costs(v, f"mixed_inputs.{op}") for op, v in raw_mixed.items()},
            derived_identity=costs(d["derived_identity"], "derived_identity") if d.get("derived_identity") is not None else {},
        )


@dataclass(frozen=True)
class EdgeModel:
    """Per cell type (with at least two nodes) the measurements of the per-edge model."""

    cells: Mapping[str, CellEdgeModel]

    @property
    def has_shared_input_costs(self) -> bool:
        """Whether any cell type has the ``mixed_inputs`` probe (schema 5's shared input cost R_k)."""
        return any(c.mixed_inputs for c in self.cells.values())

    @property
    def has_measured_structure(self) -> bool:
        """Whether any cell type has the ``derived_identity`` probe (schema 6's measured structure)."""
        return any(c.derived_identity for c in self.cells.values())

    def to_dict(self) -> dict[str, Any]:
        return {t: c.to_dict() for t, c in self.cells.items()}

    @classmethod
    def from_dict(cls, d: Any, config: NetworkConfig, metrics: tuple[str, ...]) -> EdgeModel:
        if not isinstance(d, Mapping):
            raise UserInputError("The profile's edge_model block must be an object.")
        unknown = sorted(set(d) - set(CELL_TYPES))
        if unknown:
            raise UserInputError(f"The profile's edge_model names unknown cell type(s) {', '.join(unknown)}.")
        missing = [t for t in CELL_TYPES if config.intermediate_nodes(t) >= 2 and t not in d]
        if missing:
            raise UserInputError(f"The profile's edge_model has no entry for the {', '.join(missing)} cell(s).")
        single = [t for t in CELL_TYPES if t in d and config.intermediate_nodes(t) < 2]
        if single:  # its structure probes cannot tell the edge classes apart, so measure never writes one
            raise UserInputError(f"The profile's edge_model has an entry for the {', '.join(single)} cell(s), which have "
                                 "a single node and no per-edge model.")
        return cls({t: CellEdgeModel.from_dict(d[t], t, metrics) for t in CELL_TYPES if t in d})


def edge_class(input_index: int) -> str:
    return INPUT0 if input_index == 0 else INPUT1 if input_index == 1 else INNER


def class_counts(n_nodes: int) -> dict[str, int]:
    """Edges of each class in a fully connected cell of ``n_nodes`` nodes."""
    return {INPUT0: n_nodes, INPUT1: n_nodes, INNER: n_nodes * (n_nodes - 1) // 2}


def _cell(profile: Profile, cell_type: str) -> CellEdgeModel | None:
    return None if profile.edge_model is None else profile.edge_model.cells.get(cell_type)


def identity_edge_costs(profile: Profile, cell_type: str, metric: str) -> dict[str, float]:
    """s_k: what an ``identity`` edge of each class costs by being there (0 without a model)."""
    cell = _cell(profile, cell_type)
    if cell is None:
        return dict.fromkeys(CLASSES, 0.0)
    n = profile.network.intermediate_nodes(cell_type)
    e_inner = class_counts(n)[INNER]
    s_inner = -cell.inputs_only[metric].value / e_inner
    d_inputs = cell.inputs_only[metric].value
    return {
        INPUT0: -(cell.rest_on_input1[metric].value - d_inputs) / (n - 1),
        INPUT1: -(cell.rest_on_input0[metric].value - d_inputs) / (n - 1),
        INNER: s_inner,
    }


def op_class_costs(profile: Profile, cell_type: str, op: str, metric: str) -> dict[str, float]:
    """c_o^k: the part of c_o spent on each class of edges."""
    c_o = profile.cost(cell_type, op, metric).value
    e = class_counts(profile.network.intermediate_nodes(cell_type))
    cell = _cell(profile, cell_type)
    if cell is not None and op in cell.input_edges:
        on_inputs = cell.input_edges[op][metric].value
    else:
        on_inputs = c_o * (e[INPUT0] + e[INPUT1]) / sum(e.values())
    return {INPUT0: on_inputs / 2, INPUT1: on_inputs / 2, INNER: c_o - on_inputs}


def shared_input_costs(profile: Profile, cell_type: str, metric: str) -> dict[str, float]:
    """R_k: the cost that the factorized reduces reading cell input k share (0 without a ``mixed_inputs`` probe)."""
    cell = _cell(profile, cell_type)
    if cell is None or not cell.mixed_inputs:
        return {INPUT0: 0.0, INPUT1: 0.0}
    ((op, mixed),) = cell.mixed_inputs.items()
    n = profile.network.intermediate_nodes(cell_type)
    c_inputs = cell.input_edges[op][metric].value
    total = n / (n - 1) * mixed[metric].value - c_inputs
    return {INPUT0: total / 2, INPUT1: total / 2}


def structure_cost(profile: Profile, cell_type: str, metric: str) -> float:
    """What the identity edges of a full cell of this type add to c'_id: sum_k E_k s_k + sum_k R_k."""
    s = identity_edge_costs(profile, cell_type, metric)
    e = class_counts(profile.network.intermediate_nodes(cell_type))
    return sum(e[k] * s[k] for k in CLASSES) + sum(shared_input_costs(profile, cell_type, metric).values())


def refined_edge_cost(profile: Profile, cell_type: str, op: str, metric: str, input_index: int) -> float:
    """``s_k + c_o^k / E_k`` for the class k of the edge, plus on an input edge its part of R_k
    (all of it for a factorized reduce, R_k / n for an operation)."""
    k = edge_class(input_index)
    n = profile.network.intermediate_nodes(cell_type)
    e = class_counts(n)
    share = op_class_costs(profile, cell_type, op, metric)[k] / e[k] if e[k] else 0.0
    shared = shared_input_costs(profile, cell_type, metric).get(k, 0.0)
    return identity_edge_costs(profile, cell_type, metric)[k] + share + (shared if op == "identity" else shared / n)


def shared_input_overlap(profile: Profile, cell_type: str, cell: CellGraph, metric: str) -> float:
    """-R_k (f_k - 1) summed over the inputs that ``cell``'s f_k > 1 ``identity`` edges read: the shared
    cost that :func:`refined_edge_cost` charged to each of them is paid once."""
    shared = shared_input_costs(profile, cell_type, metric)
    overlap = 0.0
    for k, index in ((INPUT0, 0), (INPUT1, 1)):
        f = sum(1 for node in cell for op, i in node if i == index and op == "identity")
        overlap -= shared[k] * max(f - 1, 0)
    return overlap

