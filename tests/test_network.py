"""The CAS skeleton: shapes, layout, multi-scale wiring, probe networks, configuration checks."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from casprof.cli.app import app as casprof_app
from casprof.config import DEFAULT_CONFIG, NetworkConfig, parse_resolution
from casprof.errors import UserInputError
from casprof.genotype import random_genotype, uniform_genotype
from casprof.network import CASNetwork, full_graph
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.probes import BASELINE, Probe, build_probe, measured_probes, probe_graphs


def test_default_skeleton_layout_and_strides() -> None:
    net = CASNetwork.from_genotype(random_genotype(0))
    assert [c.cell_type for c in net.cells] == ["normal", "normal", "reduce", "normal", "normal", "reduce", "normal", "normal"]
    assert DEFAULT_CONFIG.total_stride == 16
    assert DEFAULT_CONFIG.ms_low_cell == 1
    strides = [m.stride for m in (net.stem[0][0], net.stem[1][0], net.stem[2][0])]
    assert strides == [(2, 2), (1, 1), (2, 2)]
    feats = {}
    hooks = [c.register_forward_hook(lambda m, i, o, k=k: feats.__setitem__(k, o.shape)) for k, c in enumerate(net.cells)]
    hooks.append(net.ms_cell.register_forward_hook(lambda m, i, o: feats.__setitem__("ms", o.shape)))
    x = torch.randn(1, 3, 64, 128)
    y = net.eval()(x)
    for h in hooks:
        h.remove()
    assert y.shape == (1, 19, 64, 128)
    assert feats[0][2:] == (16, 32) and feats[2][2:] == (8, 16) and feats[7][2:] == (4, 8)
    assert feats[0][1] == 3 * 16 and feats[2][1] == 3 * 32 and feats[7][1] == 3 * 64
    assert feats["ms"] == (1, 6 * 16, 16, 32)  # the multi-scale cell works at the second normal cell's 1/4


@pytest.mark.parametrize("seed", range(4))
def test_random_genotypes_build_and_run(tiny_config: NetworkConfig, seed: int) -> None:
    net = CASNetwork.from_genotype(random_genotype(seed, tiny_config)).eval()
    y = net(torch.randn(2, 3, 32, 48))
    assert y.shape == (2, 5, 32, 48)
    assert torch.isfinite(y).all()


def test_derived_network_edge_count(tiny_config: NetworkConfig) -> None:
    net = CASNetwork.from_genotype(random_genotype(1, tiny_config))
    assert all(len(c.edges) == 2 * tiny_config.nodes for c in net.cells)
    assert len(net.ms_cell.edges) == 2 * tiny_config.ms_nodes


def test_ms_projection_on_input_edges_only(tiny_config: NetworkConfig) -> None:
    g = uniform_genotype({"normal": "conv_3x3", "reduce": "conv_3x3", "ms": "conv_3x3_d2"}, tiny_config)
    net = CASNetwork.from_genotype(g)
    kinds = [type(p).__name__ for p in net.ms_cell.projections]
    expected = ["ReLUConvBN" if i < 2 else "Identity" for node in g.ms for _, i in node]
    assert kinds == expected


def test_probe_uses_op_on_every_edge_of_its_cell_type(tiny_config: NetworkConfig) -> None:
    probe = Probe("reduce", "max_pool_3x3")
    graphs = probe_graphs(tiny_config, probe)
    assert graphs["reduce"] == full_graph(3, "max_pool_3x3")
    assert graphs["normal"] == full_graph(3, "identity")
    assert graphs["ms"] == full_graph(6, "identity")
    assert tiny_config.edges_per_cell("normal") == 9 and tiny_config.edges_per_cell("ms") == 27
    net = build_probe(tiny_config, probe)
    assert not net.training
    reduce_cells = [c for c in net.cells if c.reduction]
    assert all(len(c.edges) == 9 for c in reduce_cells)
    # stride-2 edges (from the two inputs) of a max-pool reduction cell are strided max pools
    assert reduce_cells[0].edges[0].stride == 2 and reduce_cells[0].edges[2].stride == 2 and reduce_cells[0].edges[4].stride == 1
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 5, 32, 32)


def test_measured_probes_cover_every_operation_but_identity() -> None:
    keys = [p.key for p in measured_probes()]
    assert len(keys) == len(set(keys)) == 10 + 10 + 9
    for t in CELL_TYPES:
        for op in candidate_ops(t):
            assert (f"{t}/{op}" in keys) == (op != "identity")
    assert Probe.from_key("ms/spp_8x8") == Probe("ms", "spp_8x8")
    assert Probe.from_key("baseline") == BASELINE
    with pytest.raises(ValueError):
        Probe.from_key("ms/max_pool_3x3")


def test_config_fingerprint_tracks_configuration_not_input_size() -> None:
    a, b = NetworkConfig(), NetworkConfig(channels=24)
    assert a.fingerprint() == NetworkConfig().fingerprint()
    assert a.fingerprint() != b.fingerprint()
    assert a.network_block((768, 1536))["fingerprint"] == a.network_block((256, 512))["fingerprint"]
    assert NetworkConfig.from_dict(a.network_block((768, 1536))) == a


@pytest.mark.parametrize(
    "text, message",
    [
        ("0x1536", "positive"),
        ("-16x32", "positive"),
        ("770x1536", "not divisible by the network's total stride 16"),
        ("768x1537", "not divisible"),
        ("16384x16384", "larger than the supported maximum"),
        ("768", "not of the form HxW"),
        ("axb", "not of the form HxW"),
    ],
)
def test_bad_resolutions_are_refused(text: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_resolution(text)


def test_good_resolution() -> None:
    assert parse_resolution("768x1536") == (768, 1536)
    assert parse_resolution("64X128") == (64, 128)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 5}, "even"),
        ({"layout": "NNXNN"}, "N and R"),
        ({"layout": "RNN"}, "start with a normal"),
        ({"layout": "NRR"}, "two normal cells"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_configurations_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        NetworkConfig(**kwargs)


def test_a_seeded_probe_has_the_same_weights_and_leaves_the_global_random_state_alone(tiny_config) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_probe(tiny_config, Probe("normal", "conv_3x3"), seed=7)
    b = build_probe(tiny_config, Probe("normal", "conv_3x3"), seed=7)
    c = build_probe(tiny_config, Probe("normal", "conv_3x3"), seed=8)
    assert torch.rand(1) == before  # building seeded probes drew nothing from the global generator
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert build_probe(tiny_config, BASELINE, seed=7).training is False


@pytest.mark.parametrize(
    "block, message",
    [
        ({"nodes": 3.0}, "nodes must be an integer, got 3.0"),
        ({"channels": 16.0}, "channels must be an integer"),
        ({"num_classes": 1e400}, "num_classes must be an integer, got inf"),
        ({"ms_channels": True}, "ms_channels must be an integer, got True"),
        ({"in_channels": "3"}, "in_channels must be an integer"),
        ({"in_channels": 0}, "in_channels must be at least 1"),
        ({"stem_channels": [16, 16.0, 32]}, "stem_channels must be three positive integers"),
        ({"stem_channels": 16}, "stem_channels must be three positive integers"),
        ({"stem_channels": "abc"}, "stem_channels must be three positive integers"),
        ({"layout": ["N", "N", "R"]}, "layout must be a string of N and R"),
    ],
)
def test_network_config_of_the_wrong_type_exits_2_through_the_cli(tmp_path, block: dict, message: str) -> None:
    network, out = tmp_path / "network.json", tmp_path / "g.json"
    network.write_text(json.dumps(block))
    result = CliRunner().invoke(casprof_app, ["genotype", "--random", "--network", str(network), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and message in result.output
    assert result.output.strip().count("\n") == 0  # one sentence on one line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["network.json"]
