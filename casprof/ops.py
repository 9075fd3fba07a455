"""The candidate operation sets of CAS (paper §3.3, §3.4; DESIGN §2), as data.

Every operation is built by one factory signature ``factory(C, stride, affine) -> nn.Module``
and maps a ``(N, C, H, W)`` tensor to ``(N, C, ceil(H/stride), ceil(W/stride))``. Only
backbone operations take ``stride=2`` (the input edges of a reduction cell); the multi-scale
cell always works at stride 1.

The names and their order are contracts: the order fixes the columns of the architecture
weights (``none`` first during search), profiles and genotypes refer to operations by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

NONE = "none"

#: Backbone candidate set O_b, without ``none`` (the operations a derived network may use).
BACKBONE_OPS: tuple[str, ...] = (
    "identity",
    "max_pool_3x3",
    "avg_pool_3x3",
    "conv_3x3",
    "conv_3x3_x2",
    "dil_conv_3x3",
    "dil_conv_3x3_x2",
    "sep_conv_3x3_x2",
    "sep_conv_3x3_x4",
    "pooled_conv_3x3",
    "pooled_conv_3x3_x2",
)

#: Multi-scale candidate set O_ms, without ``none``.
MS_OPS: tuple[str, ...] = (
    "conv_3x3_d1",
    "conv_3x3_d2",
    "conv_3x3_d4",
    "conv_3x3_d8",
    "conv_15x1_1x15",
    "conv_25x1_1x25",
    "spp_8x8",
    "spp_16x16",
    "spp_24x24",
    "identity",
)

#: Search-time candidate sets: ``none`` first, then the derivable operations.
BACKBONE_SEARCH_OPS: tuple[str, ...] = (NONE, *BACKBONE_OPS)
MS_SEARCH_OPS: tuple[str, ...] = (NONE, *MS_OPS)

OpFactory = Callable[[int, int, bool], nn.Module]


def _out_size(size: int, stride: int) -> int:
    return -(-size // stride)


class Zero(nn.Module):
    """The ``none`` operation: an all-zero output of the right shape (search only)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class ReLUConvBN(nn.Sequential):
    """ReLU, convolution, batch norm (DARTS style)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        dilation: int = 1,
        affine: bool = True,
    ) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, (kh, kw), stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convolutions (identity on stride-2 edges).

    The offset branch is padded at the bottom/right so odd sizes give ``ceil(H/2)`` in both branches.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class SepConv(nn.Sequential):
    """``repeat`` depthwise-separable 3x3 convolutions (DARTS's sep_conv is ``repeat=2``).

    Only the first depthwise convolution carries the stride.
    """

    def __init__(self, c: int, stride: int, repeat: int, affine: bool = True) -> None:
        layers: list[nn.Module] = []
        for i in range(repeat):
            layers += [
                nn.ReLU(inplace=False),
                nn.Conv2d(c, c, 3, stride if i == 0 else 1, 1, groups=c, bias=False),
                nn.Conv2d(c, c, 1, bias=False),
                nn.BatchNorm2d(c, affine=affine),
            ]
        super().__init__(*layers)


class PooledConv(nn.Module):
    """Spatial bottleneck (paper §3.3): 2x2 average pool stride 2, 3x3 conv(s), bilinear upsampling.

    On a stride-2 edge the first convolution also has stride 2, so the bottleneck stays at half
    the output resolution; the result is upsampled to ``ceil(H/stride)``.
    """

    def __init__(self, c: int, stride: int, repeat: int, affine: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
        self.convs = nn.Sequential(
            *(ReLUConvBN(c, c, 3, stride if i == 0 else 1, affine=affine) for i in range(repeat))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (_out_size(x.shape[2], self.stride), _out_size(x.shape[3], self.stride))
        y = self.convs(self.pool(x))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class DecomposedConv(nn.Sequential):
    """Spatially decomposed large kernel (paper §3.4): ReLU, kx1 conv, 1xk conv, BN."""

    def __init__(self, c: int, k: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, (k, 1), 1, (k // 2, 0), bias=False),
            nn.Conv2d(c, c, (1, k), 1, (0, k // 2), bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


class ResidualSPP(nn.Module):
    """Residual spatial pyramid pooling (paper §3.4): x + up(BN(conv1x1(ReLU(avgpool_WxW(x))))).

    The window is clipped to the feature map, so a map smaller than W pools globally.
    """

    def __init__(self, c: int, window: int, affine: bool = True) -> None:
        super().__init__()
        self.window = window
        self.proj = ReLUConvBN(c, c, 1, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[2]), int(x.shape[3])
        k = (min(self.window, h), min(self.window, w))
        pooled = F.avg_pool2d(x, kernel_size=k, stride=k, ceil_mode=True, count_include_pad=False)
        context = self.proj(pooled)
        return x + F.interpolate(context, size=(h, w), mode="bilinear", align_corners=False)


def _identity(c: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)


def _repeat(factory: Callable[[int, int, bool], nn.Module], times: int) -> OpFactory:
    """The operation ``times`` in a row; only the first carries the stride."""

    def build(c: int, stride: int, affine: bool) -> nn.Module:
        return nn.Sequential(*(factory(c, stride if i == 0 else 1, affine) for i in range(times)))

    return build


def _conv(k: int, dilation: int = 1) -> OpFactory:
    return lambda c, stride, affine: ReLUConvBN(c, c, k, stride, dilation, affine)


def _stride1_only(name: str, factory: Callable[[int, bool], nn.Module]) -> OpFactory:
    def build(c: int, stride: int, affine: bool) -> nn.Module:
        if stride != 1:
            raise ValueError(f"multi-scale operation {name!r} has no stride-2 form")
        return factory(c, affine)

    return build


_BACKBONE_FACTORIES: dict[str, OpFactory] = {
    NONE: lambda c, stride, affine: Zero(stride),
    "identity": _identity,
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride, 1),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride, 1, count_include_pad=False),
    "conv_3x3": _conv(3),
    "conv_3x3_x2": _repeat(_conv(3), 2),
    "dil_conv_3x3": _conv(3, 2),
    "dil_conv_3x3_x2": _repeat(_conv(3, 2), 2),
    "sep_conv_3x3_x2": lambda c, stride, affine: SepConv(c, stride, 2, affine),
    "sep_conv_3x3_x4": lambda c, stride, affine: SepConv(c, stride, 4, affine),
    "pooled_conv_3x3": lambda c, stride, affine: PooledConv(c, stride, 1, affine),
    "pooled_conv_3x3_x2": lambda c, stride, affine: PooledConv(c, stride, 2, affine),
}

_MS_FACTORIES: dict[str, OpFactory] = {
    NONE: lambda c, stride, affine: Zero(stride),
    **{
        f"conv_3x3_d{d}": _stride1_only(f"conv_3x3_d{d}", lambda c, affine, d=d: ReLUConvBN(c, c, 3, 1, d, affine))
        for d in (1, 2, 4, 8)
    },
    **{
        f"conv_{k}x1_1x{k}": _stride1_only(f"conv_{k}x1_1x{k}", lambda c, affine, k=k: DecomposedConv(c, k, affine))
        for k in (15, 25)
    },
    **{
        f"spp_{w}x{w}": _stride1_only(f"spp_{w}x{w}", lambda c, affine, w=w: ResidualSPP(c, w, affine))
        for w in (8, 16, 24)
    },
    "identity": _stride1_only("identity", lambda c, affine: nn.Identity()),
}

#: name -> factory, per candidate set (read-only views).
BACKBONE: Mapping[str, OpFactory] = MappingProxyType(_BACKBONE_FACTORIES)
MS: Mapping[str, OpFactory] = MappingProxyType(_MS_FACTORIES)

#: Which candidate set each cell type draws from.
CELL_TYPES: tuple[str, ...] = ("normal", "reduce", "ms")


def op_table(cell_type: str) -> Mapping[str, OpFactory]:
    """The factory table of a cell type (``normal`` and ``reduce`` share O_b)."""
    if cell_type in ("normal", "reduce"):
        return BACKBONE
    if cell_type == "ms":
        return MS
    raise ValueError(f"unknown cell type {cell_type!r}; expected one of {CELL_TYPES}")


def candidate_ops(cell_type: str, *, with_none: bool = False) -> tuple[str, ...]:
    """Ordered operation names of a cell type; ``with_none`` gives the search-time set."""
    base = MS_OPS if cell_type == "ms" else BACKBONE_OPS
    op_table(cell_type)  # validates the cell type
    return (NONE, *base) if with_none else base


def build_op(cell_type: str, name: str, channels: int, stride: int = 1, affine: bool = True) -> nn.Module:
    """Build operation ``name`` of ``cell_type``'s candidate set."""
    table = op_table(cell_type)
    if name not in table:
        raise KeyError(f"unknown {cell_type} operation {name!r}; known: {', '.join(table)}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    return table[name](channels, stride, affine)

