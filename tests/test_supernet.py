"""The supernet (mixed operations, alphas) and the genotype derivation."""

from __future__ import annotations

import pytest
import torch

from _search_support import MINI19, one_torch_thread  # noqa: F401
from casprof.genotype import Genotype
from casprof.ops import build_op, candidate_ops
from search.derive import derive_cell, derive_genotype, kept_edges
from search.supernet import MixedOp, Supernet, default_ms_cell, edge_list


def test_alphas_are_registered_parameters_of_the_searched_cells() -> None:
    torch.manual_seed(0)
    net = Supernet(MINI19, ("normal", "reduce"), {"ms": default_ms_cell(MINI19)})
    assert [n for n, _ in net.named_parameters() if n.startswith("alpha")] == ["alpha_normal", "alpha_reduce"]
    assert "alpha_normal" in net.state_dict() and not hasattr(net, "alpha_ms")
    assert net.alpha_normal.shape == (MINI19.edges_per_cell("normal"), len(candidate_ops("normal", with_none=True)))
    assert net.alpha_normal.abs().max() < 0.01  # DARTS init: 1e-3 * randn
    arch = {id(p) for p in net.arch_parameters()}
    assert not arch & {id(p) for p in net.weight_parameters()}
    assert len(arch) + len(net.weight_parameters()) == len(list(net.parameters()))


def test_supernet_forward_gives_full_resolution_logits() -> None:
    torch.manual_seed(0)
    net = Supernet(MINI19, ("normal", "reduce", "ms"))
    out = net(torch.randn(2, 3, 32, 64))
    assert out.shape == (2, 19, 32, 64)
    for w in net.mixing_weights().values():
        assert torch.allclose(w.sum(dim=1), torch.ones(w.shape[0]))


def test_mixed_op_with_a_one_hot_weight_is_that_operation() -> None:
    torch.manual_seed(0)
    mixed = MixedOp("normal", 4, 2)
    x = torch.randn(2, 4, 8, 8)
    k = mixed.op_names.index("sep_conv_3x3_x2")
    weights = torch.zeros(len(mixed.op_names))
    weights[k] = 1.0
    single = build_op("normal", "sep_conv_3x3_x2", 4, 2, affine=False)
    single.load_state_dict(mixed.ops[k].state_dict())
    assert mixed.op_names[0] == "none"
    assert torch.allclose(mixed(x, weights), single(x))


def test_derivation_keeps_two_strongest_non_none_predecessors() -> None:
    ops = candidate_ops("normal", with_none=True)
    edges = edge_list(MINI19, "normal")  # node 0: inputs 0,1; node 1: inputs 0,1,2
    w = torch.full((len(edges), len(ops)), 0.01)
    w[:, ops.index("none")] = 0.9  # none dominates everywhere and is never chosen
    w[edges.index((0, 0)), ops.index("conv_3x3")] = 0.3
    w[edges.index((0, 1)), ops.index("max_pool_3x3")] = 0.2
    w[edges.index((1, 0)), ops.index("identity")] = 0.05
    w[edges.index((1, 1)), ops.index("dil_conv_3x3")] = 0.4
    w[edges.index((1, 2)), ops.index("sep_conv_3x3_x4")] = 0.5
    cell = derive_cell("normal", w, MINI19)
    assert cell == ((("conv_3x3", 0), ("max_pool_3x3", 1)), (("dil_conv_3x3", 1), ("sep_conv_3x3_x4", 2)))
    assert [e.strength for e in kept_edges("normal", w, MINI19)] == pytest.approx([0.3, 0.2, 0.4, 0.5])


def test_derived_genotype_is_valid_and_keeps_fixed_cells() -> None:
    torch.manual_seed(3)
    net = Supernet(MINI19, ("normal", "reduce"), {"ms": default_ms_cell(MINI19)})
    genotype = derive_genotype(net.mixing_weights(), MINI19, net.fixed)
    assert isinstance(genotype, Genotype) and genotype.ms == default_ms_cell(MINI19)
    assert Genotype.from_json(genotype.to_json()) == genotype


def test_supernet_refuses_an_unsearched_cell_without_a_fixed_graph() -> None:
    with pytest.raises(ValueError, match="ms"):
        Supernet(MINI19, ("normal", "reduce"))
