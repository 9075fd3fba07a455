"""The per-edge model of schema-2 profiles: exact for exact metrics, version-1 files still load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from casprof.complexity import count_macs, count_params
from casprof.edge_model import EdgeModel, class_counts, identity_edge_costs, shared_input_costs, shared_input_overlap, structure_cost
from casprof.errors import UserInputError
from casprof.genotype import Genotype, random_genotype, uniform_genotype
from casprof.network import CASNetwork
from casprof.predict import edge_cost, measured_structure_correction, predict
from casprof.probes import (MIXED_INPUTS_OP, Probe, Variant, build_probe, derived_identity_graph, edge_model_probes, measured_probes,
                            measurement_blocks, probe_graphs)
from casprof.profile import Profile
from tests.conftest import MINI, TINY, TINY_RES, as_schema_1


def test_edge_model_probes_keep_every_input_and_node_in_use() -> None:
    probes = edge_model_probes(TINY)
    assert len(probes) == 4 * 3 + 10 + 1  # four identity variants per cell type, reduce ops on input edges, mixed_inputs
    for probe in probes:
        net = build_probe(TINY, probe)
        cell = net.ms_cell if probe.cell_type == "ms" else next(c for c in net.cells if c.cell_type == probe.cell_type)
        read = {i for node in cell.graph for _, i in node}
        assert {0, 1} <= read, probe.key  # an unused input would be pruned by ONNX export and the MAC trace
    assert Probe.from_key("ms/identity@rest_on_input1") == Probe("ms", "identity", Variant.REST_ON_INPUT1)
    # the paper's probes keep their per-cell-type blocks; the edge-model probes are timed after them
    blocks = measurement_blocks(TINY)
    assert [label for label, _ in blocks] == ["normal", "reduce", "ms", "normal-edges", "reduce-edges", "ms-edges"]
    assert [len(members) for _, members in blocks] == [10, 10, 9, 4, 15, 4]


def test_exact_metrics_are_predicted_exactly(tiny_profile_path: Path) -> None:
    """Parameters and MACs are additive per edge class, so the model reproduces them exactly."""
    p = Profile.load(tiny_profile_path)
    assert p.edge_model is not None
    for seed in range(4):
        g = random_genotype(seed, TINY)
        net = CASNetwork.from_genotype(g)
        pred = predict(p, g)
        assert pred["params"].value == pytest.approx(count_params(net), rel=1e-9)
        if seed < 2:
            assert pred["macs"].value == pytest.approx(count_macs(net, (1, 3, *TINY_RES)).total, rel=1e-9)
        assert pred["latency_ms"].value == pytest.approx(pred["latency_ms"].baseline + sum(pred["latency_ms"].by_cell_type.values()))


def test_reduction_input_edges_differ_from_inner_edges(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    # identity on a stride-2 input edge is a factorized reduce: two 1x1 convs C -> C/2 and a BN(C),
    # in both reduction cells (C = 8 and 16); on an inner edge it is nothing at all
    fr = sum(c * c + 2 * c for c in (8, 16))
    assert edge_cost(p, "reduce", "identity", "params", node=1, input_index=0) == pytest.approx(fr)
    assert edge_cost(p, "reduce", "identity", "params", node=1, input_index=1) == pytest.approx(fr)
    assert edge_cost(p, "reduce", "identity", "params", node=1, input_index=2) == pytest.approx(0, abs=1e-9)
    # a 3x3 conv replaces the factorized reduce: its edge costs the conv's own parameters wherever it is
    conv = sum(9 * c * c + 2 * c for c in (8, 16))
    for i in (0, 2):
        assert edge_cost(p, "reduce", "conv_3x3", "params", node=1, input_index=i) == pytest.approx(conv)
    with pytest.raises(ValueError):
        edge_cost(p, "reduce", "conv_3x3", "params", node=0, input_index=2)


def test_version_1_profiles_load_and_use_the_uniform_share(tiny_profile_path: Path, tmp_path: Path) -> None:
    p = Profile.load(as_schema_1(tiny_profile_path, tmp_path))
    assert p.edge_model is None
    conv = uniform_genotype({"normal": "conv_3x3", "reduce": "identity", "ms": "identity"}, TINY)
    lat = p.cost("normal", "conv_3x3", "latency_ms").value
    assert predict(p, conv)["latency_ms"].value == pytest.approx(p.baseline["latency_ms"].value + 6 / 9 * lat)
    assert p.edge_share("normal", "conv_3x3", "latency_ms") == pytest.approx(lat / 9)


def test_a_single_node_cell_needs_no_edge_model() -> None:
    from casprof.config import NetworkConfig

    one = NetworkConfig(stem_channels=(4, 4, 8), channels=4, ms_channels=4, num_classes=5, layout="NNRN", nodes=1, ms_nodes=1)
    assert edge_model_probes(one) == []
    assert len(edge_model_probes(MINI)) == 4 * 3 + 10 + 1


def test_mixed_inputs_probe_reads_each_input_through_one_factorized_reduce_and_operations() -> None:
    probe = Probe("reduce", MIXED_INPUTS_OP, Variant.MIXED_INPUTS)
    assert probe in edge_model_probes(TINY) and Probe.from_key(probe.key) == probe
    n = TINY.intermediate_nodes("reduce")
    graph = probe_graphs(TINY, probe)["reduce"]
    for k in (0, 1):
        ops = [op for node in graph for op, i in node if i == k]
        assert sorted(ops) == sorted(["identity"] + [MIXED_INPUTS_OP] * (n - 1))
    assert all(op == "identity" for node in graph for op, i in node if i >= 2)
    assert graph[0][0] == ("identity", 0) and graph[1][1] == ("identity", 1)


def _cell_part(p: Profile, cell: tuple, metric: str = "latency_ms") -> float:
    """What the model adds to c'_id for a reduction cell graph (any edges), as ``predict`` composes it."""
    return (sum(edge_cost(p, "reduce", op, metric, node=j, input_index=i) for j, node in enumerate(cell) for op, i in node)
            - structure_cost(p, "reduce", metric) + shared_input_overlap(p, "reduce", cell, metric))


def test_the_shared_input_model_reproduces_every_reduction_probe(tiny_profile_path: Path) -> None:
    """With R_k from the mixed_inputs probe, every probe of the reduction cell (full, input edges, mixed,
    identity variants) is still predicted as it was measured, and exact metrics get R_k = 0."""
    p = Profile.load(tiny_profile_path)
    assert p.edge_model is not None and p.edge_model.cells["reduce"].mixed_inputs
    for metric in ("params", "macs"):
        assert sum(shared_input_costs(p, "reduce", metric).values()) == pytest.approx(0, abs=1e-6 * p.baseline[metric].value)
    probes = [q for q in edge_model_probes(TINY) + measured_probes() if q.cell_type == "reduce"]
    model = p.edge_model.cells["reduce"]
    measured = {Variant.INPUTS_ONLY: model.inputs_only, Variant.REST_ON_INPUT0: model.rest_on_input0,
                Variant.REST_ON_INPUT1: model.rest_on_input1}
    for probe in probes:
        if probe.variant is Variant.DERIVED_IDENTITY:
            continue  # the anchor of the schema-6 correction, predicted as measured (tested below)
        cell = probe_graphs(TINY, probe)["reduce"]
        if probe.variant is Variant.FULL:
            want = p.cost("reduce", probe.op, "latency_ms").value
        elif probe.variant is Variant.INPUT_EDGES:
            want = model.input_edges[probe.op]["latency_ms"].value
        elif probe.variant is Variant.MIXED_INPUTS:
            want = model.mixed_inputs[probe.op]["latency_ms"].value
        else:
            want = measured[probe.variant]["latency_ms"].value
        assert _cell_part(p, cell) == pytest.approx(want, abs=1e-9), probe.key


def test_the_shared_input_cost_corrects_derived_cells_by_hand(tiny_profile_path: Path) -> None:
    """Against the same profile without the mixed_inputs probe (the schema-4 model), a derived network moves by
    sum_k R_k ([f_k >= 1] - 1 + m_k / n): f_k factorized reduces and m_k operations read input k."""
    p = Profile.load(tiny_profile_path)
    cells = dict(p.edge_model.cells)  # type: ignore[union-attr]
    old = dataclasses.replace(p, edge_model=EdgeModel(cells | {"reduce": dataclasses.replace(cells["reduce"], mixed_inputs={})}))
    r = shared_input_costs(p, "reduce", "latency_ms")
    assert shared_input_costs(old, "reduce", "latency_ms") == {"input0": 0.0, "input1": 0.0}
    n = TINY.intermediate_nodes("reduce")
    seen = set()
    for seed in range(40):
        g = random_genotype(seed, TINY)
        want = 0.0
        for k, name in ((0, "input0"), (1, "input1")):
            f = sum(1 for node in g.reduce for op, i in node if i == k and op == "identity")
            m = sum(1 for node in g.reduce for op, i in node if i == k and op != "identity")
            want += r[name] * ((1 if f else 0) - 1 + m / n)
            seen.add(f)
        moved = predict(p, g)["latency_ms"].value - predict(old, g)["latency_ms"].value
        assert moved == pytest.approx(want, abs=1e-9), seed
        assert predict(p, g)["params"].value == pytest.approx(predict(old, g)["params"].value, rel=1e-9)
    assert {0, 1} <= seen  # cells with and without a factorized reduce on an input


def test_a_mixed_inputs_probe_must_use_a_measured_input_edge_operation(tiny_profile_path: Path, tmp_path: Path) -> None:
    raw = json.loads(tiny_profile_path.read_text())
    block = raw["edge_model"]["reduce"]
    block["mixed_inputs"] = {"avg_pool_3x3": block["mixed_inputs"][MIXED_INPUTS_OP]}
    del block["input_edges"]["avg_pool_3x3"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(UserInputError, match="mixed_inputs probe uses 'avg_pool_3x3'"):
        Profile.load(bad)


def test_profiles_without_the_mixed_inputs_probe_predict_as_before() -> None:
    """The schema-4 ONNX Runtime profile shipped until schema 5 (no mixed_inputs probe; kept in the results)
    predicts what its recorded check of 27 Nov 09:05 predicted with it: the shared input cost is 0 there."""
    root = Path(__file__).resolve().parent.parent
    p = Profile.load(root / "benchmarks/results/profiles/cpu-f86dc8a8-onnxruntime-s4-shipped-pooled-3.json")
    assert p.read_schema_version == 4 and not p.edge_model.cells["reduce"].mixed_inputs  # type: ignore[union-attr]
    check = json.loads((root / "benchmarks/results/fidelity_cpu_onnxruntime_f86dc8a82d88c3a6_27nov-0905.json").read_text())
    for net in check["networks"]:
        assert predict(p, Genotype.from_dict(net["genotype"]))["latency_ms"].value == pytest.approx(net["predicted_ms"], abs=1e-9)


def test_an_edge_model_entry_for_a_single_node_cell_is_refused(tiny_profile_path: Path, tmp_path: Path) -> None:
    """Its formulas divide by (nodes - 1): a hand-made entry for a 1-node cell would be a ZeroDivisionError in predict."""
    from casprof.config import NetworkConfig

    raw = json.loads(tiny_profile_path.read_text())
    assert "normal" in raw["edge_model"]
    raw["network"]["nodes"] = 1
    raw["network"]["fingerprint"] = NetworkConfig.from_dict(raw["network"]).fingerprint()
    bad = tmp_path / "one-node.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(UserInputError, match="entry for the normal, reduce cell.s., which have a single node"):
        Profile.load(bad)


@pytest.mark.parametrize("n_nodes", [2, 3, 4, 6])
def test_the_derived_identity_cell_is_a_valid_derived_cell_with_every_input_and_node_in_use(n_nodes: int) -> None:
    cell = derived_identity_graph(n_nodes)
    assert len(cell) == n_nodes
    for j, node in enumerate(cell):
        assert len(node) == 2 and len({i for _, i in node}) == 2 and all(0 <= i < 2 + j and op == "identity" for op, i in node)
    read = {i for node in cell for _, i in node}
    assert read == set(range(2 + n_nodes - 1))  # both inputs and every node but the last (the cell's output) are read
    counts = {k: sum(1 for node in cell for _, i in node if min(i, 2) == c) for k, c in (("input0", 0), ("input1", 1), ("inner", 2))}
    assert sum(counts.values()) == 2 * n_nodes and abs(counts["input0"] - counts["input1"]) <= 1
    assert Probe.from_key("normal/identity@derived_identity") == Probe("normal", "identity", Variant.DERIVED_IDENTITY)


def test_the_derived_identity_probe_is_measured_and_predicted_as_measured(tiny_profile_path: Path) -> None:
    """The tiny profile has the probe in every cell type with an edge model; a genotype of derived identity
    cells is predicted as c'_id plus the probes' measured costs, and exact metrics need no correction."""
    p = Profile.load(tiny_profile_path)
    assert p.edge_model is not None and p.edge_model.has_measured_structure
    cells = {t: derived_identity_graph(TINY.intermediate_nodes(t)) for t in p.edge_model.cells}
    for t, model in p.edge_model.cells.items():
        assert model.derived_identity["latency_ms"].measurement is not None  # timed, with its samples
        for metric in ("params", "macs"):
            assert measured_structure_correction(p, t, metric) == pytest.approx(0, abs=1e-6 * p.baseline[metric].value)
    g = Genotype(*(derived_identity_graph(TINY.intermediate_nodes(t)) for t in ("normal", "reduce", "ms")), network=TINY)
    pred = predict(p, g)["latency_ms"]
    for t in cells:
        assert pred.by_cell_type[t] == pytest.approx(p.edge_model.cells[t].derived_identity["latency_ms"].value, abs=1e-9)
    assert set(cells) == {t for t in ("normal", "reduce", "ms") if TINY.intermediate_nodes(t) >= 2}


def test_the_measured_structure_makes_predictions_insensitive_to_the_identity_probes_level(tiny_profile_path: Path) -> None:
    """Shifting the three identity probes of a cell moves a schema-5 prediction by the full cell's structure
    (five times the shift for a 3-node cell) but a schema-6 prediction only by the difference of the genotype's edge
    classes and the derived identity cell's (nothing for that cell itself)."""
    p = Profile.load(tiny_profile_path)
    assert p.edge_model is not None
    t, shift = "normal", 5.0
    cell = p.edge_model.cells[t]

    def shifted(costs, by):  # type: ignore[no-untyped-def]
        lat = costs["latency_ms"]
        return {**costs, "latency_ms": dataclasses.replace(lat, value=lat.value + by)}

    # noise of opposite signs, as independent probes have it
    moved = dataclasses.replace(cell, inputs_only=shifted(cell.inputs_only, shift), rest_on_input0=shifted(cell.rest_on_input0, -shift),
                                rest_on_input1=shifted(cell.rest_on_input1, -shift))
    old = dataclasses.replace(p, edge_model=EdgeModel({**p.edge_model.cells, t: dataclasses.replace(cell, derived_identity={})}))
    old_moved = dataclasses.replace(p, edge_model=EdgeModel({**p.edge_model.cells, t: dataclasses.replace(moved, derived_identity={})}))
    new_moved = dataclasses.replace(p, edge_model=EdgeModel({**p.edge_model.cells, t: moved}))
    n = TINY.intermediate_nodes(t)
    s_old, s_new = identity_edge_costs(old, t, "latency_ms"), identity_edge_costs(old_moved, t, "latency_ms")
    e = class_counts(n)
    full = sum(e[k] * (s_new[k] - s_old[k]) for k in e)
    assert abs(full) > 2 * shift  # the full cell's composed structure moves by a multiple of the shift
    assert n == 3 and full == pytest.approx(5 * shift)
    reference = derived_identity_graph(n)
    for seed in range(6):
        g = random_genotype(seed, TINY)
        d_old = predict(old_moved, g)["latency_ms"].value - predict(old, g)["latency_ms"].value
        d_new = predict(new_moved, g)["latency_ms"].value - predict(p, g)["latency_ms"].value
        edges = sum(s_new[k] - s_old[k] for k in (_class_of(i) for node in g.cell(t) for _, i in node))
        assert d_old == pytest.approx(edges - full, abs=1e-9)
        ref_edges = sum(s_new[k] - s_old[k] for k in (_class_of(i) for node in reference for _, i in node))
        assert d_new == pytest.approx(edges - ref_edges, abs=1e-9)
    g = dataclasses.replace(random_genotype(0, TINY), **{t: reference})
    assert predict(new_moved, g)["latency_ms"].value == pytest.approx(predict(p, g)["latency_ms"].value, abs=1e-9)


def _class_of(input_index: int) -> str:
    return "input0" if input_index == 0 else "input1" if input_index == 1 else "inner"
