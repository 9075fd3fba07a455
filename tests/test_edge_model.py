"""The per-edge model of schema-2 profiles: exact for exact metrics, version-1 files still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from casprof.complexity import count_macs, count_params
from casprof.genotype import random_genotype, uniform_genotype
from casprof.network import CASNetwork
from casprof.predict import edge_cost, predict
from casprof.probes import Probe, Variant, build_probe, edge_model_probes, measurement_blocks
from casprof.profile import Profile
from tests.conftest import MINI, TINY, TINY_RES, as_schema_1


def test_edge_model_probes_keep_every_input_and_node_in_use() -> None:
    probes = edge_model_probes(TINY)
    assert len(probes) == 3 * 3 + 10  # three identity variants per cell type, reduce ops on input edges
    for probe in probes:
        net = build_probe(TINY, probe)
        cell = net.ms_cell if probe.cell_type == "ms" else next(c for c in net.cells if c.cell_type == probe.cell_type)
        read = {i for node in cell.graph for _, i in node}
        assert {0, 1} <= read, probe.key  # an unused input would be pruned by ONNX export and the MAC trace
    assert Probe.from_key("ms/identity@rest_on_input1") == Probe("ms", "identity", Variant.REST_ON_INPUT1)
    # the paper's probes keep their per-cell-type blocks; the edge-model probes are timed after them
    blocks = measurement_blocks(TINY)
    assert [label for label, _ in blocks] == ["normal", "reduce", "ms", "normal-edges", "reduce-edges", "ms-edges"]
    assert [len(members) for _, members in blocks] == [10, 10, 9, 3, 13, 3]


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
    assert len(edge_model_probes(MINI)) == 3 * 3 + 10
