"""Parameter and MAC counting (casprof.complexity): hand-computed values, every operation, strictness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from casprof import ops
from casprof.complexity import MacCount, count_macs, count_params
from casprof.config import NetworkConfig
from casprof.probes import BASELINE, Probe, build_probe

C = 8
H = W = 16
SHAPE = (1, C, H, W)


def test_single_conv_macs_and_params() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    count = count_macs(conv, SHAPE)
    assert isinstance(count, MacCount)
    assert count.conv_macs == 16 * 16 * 16 * 8 * 9
    assert count.total == count.conv_macs
    assert count.by_operator == {"conv": 16 * 16 * 16 * 8 * 9}
    assert count.input_shape == SHAPE
    assert count_params(conv) == 16 * 8 * 9


def test_batch_scales_the_count() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    assert count_macs(conv, (3, C, H, W)).total == 3 * count_macs(conv, SHAPE).total


def test_depthwise_separable_conv() -> None:
    c_out = 12
    block = nn.Sequential(
        nn.Conv2d(C, C, 3, padding=1, groups=C, bias=False),
        nn.Conv2d(C, c_out, 1, bias=False),
    )
    count = count_macs(block, SHAPE)
    assert count.conv_macs == H * W * C * 9 + H * W * C * c_out
    assert count.total == count.conv_macs


def test_sep_conv_3x3_x2_by_hand() -> None:
    op = ops.build_op("normal", "sep_conv_3x3_x2", C, 1)
    count = count_macs(op, SHAPE)
    depthwise = H * W * C * 9
    pointwise = H * W * C * C
    assert count.conv_macs == 2 * (depthwise + pointwise)
    # Two ReLUs (1/element) and two affine batch norms (2/element, fvcore's convention).
    assert count.by_operator["relu"] == 2 * C * H * W
    assert count.by_operator["batch_norm"] == 2 * 2 * C * H * W
    assert count.total == count.conv_macs + 2 * C * H * W + 4 * C * H * W


def test_strided_conv_on_odd_size() -> None:
    op = ops.build_op("normal", "conv_3x3", C, 2)
    count = count_macs(op, (1, C, 15, 15))  # output 8x8
    assert count.conv_macs == 8 * 8 * C * C * 9


def test_decomposed_large_kernel() -> None:
    op = ops.build_op("ms", "conv_15x1_1x15", C, 1)
    count = count_macs(op, SHAPE)
    assert count.conv_macs == 2 * (H * W * C * C * 15)


def test_conv_3x3_params() -> None:
    op = ops.build_op("normal", "conv_3x3", C, 1)
    assert count_params(op) == C * C * 9 + 2 * C  # conv weight + BN affine (running stats are buffers)


def test_params_count_shared_parameters_once() -> None:
    conv = nn.Conv2d(4, 4, 1, bias=False)
    assert count_params(nn.Sequential(conv, nn.ReLU(), conv)) == 16


def test_pool_convention_counts_the_taps_inside_the_input() -> None:
    # 3x3, stride 1, padding 1 on 16x16: per axis, 16 windows of 3 taps minus 1 padded tap at each edge.
    per_axis = 3 * 16 - 2
    assert count_macs(nn.MaxPool2d(3, 1, 1), SHAPE).by_operator == {"max_pool2d": C * per_axis * per_axis}
    avg = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    assert count_macs(avg, SHAPE).by_operator == {"avg_pool2d": C * per_axis * per_axis}
    # Non-overlapping windows read every input element once, also with ceil_mode on an odd size.
    pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
    assert count_macs(pool, (1, C, 15, 15)).total == C * 15 * 15


def test_upsample_and_elementwise_conventions() -> None:
    class Block(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            return torch.relu(y) + y

    count = count_macs(Block(), SHAPE)
    out = C * (2 * H) * (2 * W)
    assert count.by_operator == {"upsample_bilinear2d": 4 * out, "relu": out, "add": out}
    assert count.conv_macs == 0


def _op_total(cell_type: str, name: str, stride: int) -> int:
    op = ops.build_op(cell_type, name, C, stride)
    return count_macs(op, SHAPE).total


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", ops.BACKBONE_OPS)
def test_every_backbone_op_has_a_cost(name: str, stride: int) -> None:
    total = _op_total("normal", name, stride)
    if name == "identity" and stride == 1:
        assert total == 0
    else:
        assert total > 0


@pytest.mark.parametrize("name", ops.MS_OPS)
def test_every_ms_op_has_a_cost(name: str) -> None:
    total = _op_total("ms", name, 1)
    if name == "identity":
        assert total == 0
    else:
        assert total > 0


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
def test_pooling_ops_have_no_macs_but_a_cost(name: str) -> None:
    count = count_macs(ops.build_op("normal", name, C, 1), SHAPE)
    assert count.conv_macs == 0
    assert count.total > 0


@pytest.mark.parametrize("name", ["spp_8x8", "spp_16x16", "spp_24x24"])
def test_spp_counts_pooling_projection_upsampling_and_residual(name: str) -> None:
    count = count_macs(ops.build_op("ms", name, C, 1), (1, C, 48, 48))
    assert {"avg_pool2d", "conv", "upsample_bilinear2d", "add"} <= set(count.by_operator)
    assert count.by_operator["avg_pool2d"] == C * 48 * 48  # non-overlapping windows
    window = int(name.split("_")[1].split("x")[0])
    cells = -(-48 // window)
    assert count.conv_macs == C * C * cells * cells


def test_unregistered_op_raises_naming_it() -> None:
    class Erf(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.erf(x)

    with pytest.raises(RuntimeError, match="aten::erf"):
        count_macs(Erf(), SHAPE)


def test_ops_fvcore_ignores_silently_are_refused() -> None:
    class Clamp(nn.Module):  # fvcore's default list ignores aten::clamp; we refuse it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clamp(0.0, 1.0)

    with pytest.raises(RuntimeError, match="aten::clamp"):
        count_macs(Clamp(), SHAPE)


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError):
        count_macs(nn.Identity(), (1, 3, 16))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        count_macs(nn.Identity(), (1, 3, 0, 16))


def test_caller_model_is_left_unchanged() -> None:
    model = nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.BatchNorm2d(C), nn.ReLU()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, SHAPE)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_hooks_are_removed_when_the_forward_fails() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(C, C, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("boom")

    model = Broken()
    with pytest.raises(ValueError, match="boom"):
        count_macs(model, SHAPE)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.training


def test_non_float32_model_is_copied() -> None:
    model = nn.Conv2d(C, C, 1, bias=False).double()
    assert count_macs(model, SHAPE).conv_macs == H * W * C * C
    assert model.weight.dtype == torch.float64


def test_default_probe_networks_at_small_resolution() -> None:
    config = NetworkConfig()
    shape = (1, 3, 64, 128)
    baseline = count_macs(build_probe(config, BASELINE), shape)
    conv = count_macs(build_probe(config, Probe("normal", "conv_3x3")), shape)
    assert baseline.conv_macs > 0
    assert conv.conv_macs > baseline.conv_macs
    assert conv.total > baseline.total
    assert baseline.total == sum(baseline.by_operator.values())
    assert baseline.by_operator["conv"] == baseline.conv_macs
    # The stem alone, by hand: 3 3x3 convs at strides 2, 1, 2 (widths 16, 16, 32).
    stem = 32 * 64 * 16 * 3 * 9 + 32 * 64 * 16 * 16 * 9 + 16 * 32 * 32 * 16 * 9
    assert baseline.conv_macs > stem
