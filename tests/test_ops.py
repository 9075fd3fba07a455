"""Registry-wide tests of the operation table (every operation, both strides, odd and even sizes)."""

from __future__ import annotations

import pytest
import torch

from casprof import ops

BACKBONE_NAMES = (
    "identity", "max_pool_3x3", "avg_pool_3x3", "conv_3x3", "conv_3x3_x2", "dil_conv_3x3",
    "dil_conv_3x3_x2", "sep_conv_3x3_x2", "sep_conv_3x3_x4", "pooled_conv_3x3", "pooled_conv_3x3_x2",
)
MS_NAMES = (
    "conv_3x3_d1", "conv_3x3_d2", "conv_3x3_d4", "conv_3x3_d8", "conv_15x1_1x15", "conv_25x1_1x25",
    "spp_8x8", "spp_16x16", "spp_24x24", "identity",
)


def test_names_are_the_design_contract() -> None:
    assert ops.BACKBONE_OPS == BACKBONE_NAMES
    assert ops.MS_OPS == MS_NAMES
    assert ops.BACKBONE_SEARCH_OPS == ("none", *BACKBONE_NAMES)
    assert ops.MS_SEARCH_OPS == ("none", *MS_NAMES)
    assert tuple(ops.BACKBONE) == ops.BACKBONE_SEARCH_OPS
    assert set(ops.MS) == set(ops.MS_SEARCH_OPS)
    assert ops.candidate_ops("reduce", with_none=True) == ops.BACKBONE_SEARCH_OPS


@pytest.mark.parametrize("name", ops.BACKBONE_SEARCH_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(16, 24), (15, 17), (9, 9)])
def test_backbone_op_keeps_channels_and_scales_size(name: str, stride: int, size: tuple[int, int]) -> None:
    c = 6
    op = ops.build_op("normal", name, c, stride).eval()
    x = torch.randn(2, c, *size)
    y = op(x)
    h, w = size
    assert y.shape == (2, c, -(-h // stride), -(-w // stride))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ops.MS_SEARCH_OPS)
@pytest.mark.parametrize("size", [(32, 48), (15, 17), (7, 30)])
def test_ms_op_keeps_shape(name: str, size: tuple[int, int]) -> None:
    c = 4
    op = ops.build_op("ms", name, c, 1).eval()
    x = torch.randn(1, c, *size)
    y = op(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", [n for n in ops.MS_OPS if n != "identity"])
def test_ms_ops_have_no_stride_two_form(name: str) -> None:
    with pytest.raises(ValueError, match="no stride-2"):
        ops.build_op("ms", name, 4, 2)


@pytest.mark.parametrize("name", [n for n in ops.BACKBONE_OPS if "conv" in n])
def test_weighted_backbone_ops_have_parameters_and_gradients(name: str) -> None:
    op = ops.build_op("normal", name, 4, 1)
    assert sum(p.numel() for p in op.parameters()) > 0
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)
    # weighted: a plain sum of a batch-normalised output has a zero gradient in exact arithmetic
    (op(x) * torch.randn(op(x).shape, generator=gen)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 1e-3
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in op.parameters() if p.requires_grad)


def test_repeated_ops_are_twice_their_base() -> None:
    def n_params(name: str) -> int:
        return sum(p.numel() for p in ops.build_op("normal", name, 8, 1).parameters())

    assert n_params("conv_3x3_x2") == 2 * n_params("conv_3x3")
    assert n_params("dil_conv_3x3_x2") == 2 * n_params("dil_conv_3x3")
    assert n_params("sep_conv_3x3_x4") == 2 * n_params("sep_conv_3x3_x2")
    assert n_params("pooled_conv_3x3_x2") == 2 * n_params("pooled_conv_3x3")


def test_none_is_zero_and_identity_is_identity() -> None:
    x = torch.randn(1, 4, 10, 10)
    assert torch.equal(ops.build_op("normal", "none", 4, 1)(x), torch.zeros_like(x))
    assert torch.equal(ops.build_op("normal", "identity", 4, 1)(x), x)
    assert torch.equal(ops.build_op("ms", "identity", 4, 1)(x), x)


def test_dilations_differ() -> None:
    convs = [ops.build_op("ms", f"conv_3x3_d{d}", 4, 1)[1] for d in (1, 2, 4, 8)]
    assert [c.dilation for c in convs] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert ops.build_op("normal", "dil_conv_3x3", 4, 1)[1].dilation == (2, 2)


def test_spp_adds_context_to_input() -> None:
    op = ops.build_op("ms", "spp_8x8", 4, 1).eval()
    x = torch.randn(1, 4, 16, 16)
    context = op(x) - x
    # 8x8 windows: the context is piecewise smooth over a 2x2 grid of windows, not the input itself.
    assert not torch.allclose(context, torch.zeros_like(context))
    assert op.window == 8


def test_unknown_names_are_refused() -> None:
    with pytest.raises(KeyError, match="unknown normal operation"):
        ops.build_op("normal", "conv_5x5", 4)
    with pytest.raises(KeyError, match="unknown ms operation"):
        ops.build_op("ms", "max_pool_3x3", 4)
    with pytest.raises(ValueError, match="unknown cell type"):
        ops.candidate_ops("decoder")
    with pytest.raises(ValueError, match="stride"):
        ops.build_op("normal", "conv_3x3", 4, 3)
