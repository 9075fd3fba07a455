"""Static cost of a network: parameters and multiply-accumulates (DESIGN §3, metrics ``params``, ``macs``).

The counts come from fvcore's :class:`~fvcore.nn.FlopCountAnalysis`, which traces one forward
pass with ``torch.jit`` and applies a *handle* to every ``aten::`` operator of the trace. fvcore
counts one fused multiply-add as one "flop" for convolutions and matrix products, so its
convolution count *is* the MAC count.

What the numbers of :class:`MacCount` mean:

``conv_macs``
    Multiply-accumulates of convolutions and matrix products (``conv``, ``linear``, ``addmm``,
    ``mm``, ``matmul``, ``bmm``, ``einsum``): ``N * C_out * H_out * W_out * (C_in / groups) * kh * kw``
    for a convolution; bias additions are not counted. This is what papers call "MACs".

``total`` (the profile's ``macs`` metric)
    ``conv_macs`` plus one operation per element for the remaining work, under these conventions:

    * ``batch_norm``: fvcore's own handle, kept: in evaluation mode 2 per element with an affine
      transform (1 without); in training mode 5 (4) per element.
    * ``relu``, ``add``, ``sub``, ``mul``, ``div``, ``neg``, ``floor_divide`` (element-wise, in
      place or not): 1 per output element. Arithmetic on 0-dim tensors counts 0: that is how the
      tracer records shape arithmetic such as ``-(-H // 2)``, not tensor work.
    * ``avg_pool2d``, ``max_pool2d``: 1 per input element read by each window, i.e. the kernel
      taps that fall inside the input summed over all output positions (taps in the padding or
      beyond the edge under ``ceil_mode`` are not counted). A 3x3 stride-1 pool costs about
      9 per output element; non-overlapping windows cost exactly 1 per input element.
    * ``adaptive_avg_pool2d`` (fvcore's handle, kept) and ``adaptive_max_pool2d``: 1 per input element.
    * ``upsample_bilinear2d``: 4 per output element (fvcore's handle, kept);
      ``upsample_nearest2d``: 1 per output element (fvcore's handle, kept).
    * Memory and shape operations (``cat``, ``slice``, ``pad``, ``constant_pad_nd``, ``size``,
      ``Int``, ``view``, ...; see :data:`ZERO_COST_OPS`) count 0 — registered explicitly, so
      that zero is a decision and not an omission.

``by_operator``
    The non-zero parts of ``total`` per operator name (``conv``, ``batch_norm``, ``relu``,
    ``add``, ``avg_pool2d``, ``upsample_bilinear2d``, ...); in-place variants are merged into
    their operator (``relu_`` counts as ``relu``).

No operation may silently count as zero: fvcore's built-in list of silently ignored operators
is dropped, so every ``aten::`` operator of the trace needs a handle above, and
:func:`count_macs` raises :class:`RuntimeError` naming any operator that has none.

The trace is a real forward pass of the model in evaluation mode, on the CPU, in float32, under
``torch.no_grad()``: about 1-4 s per CAS probe network at 768x1536 on 2 cores, about twice a
plain forward. The caller's model is left as it was. Tracing on the ``meta`` device does not
work with fvcore's ``torch.jit`` tracer (torch 2.13): while tracing, every ``tensor.shape`` read
returns traced tensors, and the Python meta kernel of ``aten::convolution`` then fails on a
tensor-valued shape check; routing the meta kernels around the tracer (a dispatch mode or a
tensor subclass) hides the convolutions from the trace instead.

This module depends on torch and fvcore only.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import nn

from casprof.trace_layout import channels_last_weights, trace_input

with warnings.catch_warnings():
    # fvcore.nn's package import scripts a focal loss with the deprecated torch.jit.script.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

__all__ = [
    "CONV_OPERATORS",
    "ELEMENTWISE_OPS",
    "ZERO_COST_OPS",
    "MacCount",
    "count_macs",
    "count_params",
]

#: Operator names (as in :attr:`MacCount.by_operator`) whose counts are multiply-accumulates.
CONV_OPERATORS: frozenset[str] = frozenset({"conv", "linear", "addmm", "mm", "matmul", "bmm", "einsum"})

#: Element-wise operators: 1 operation per output element (0-dim outputs: 0).
ELEMENTWISE_OPS: tuple[str, ...] = (
    "aten::relu",
    "aten::relu_",
    "aten::add",
    "aten::add_",
    "aten::sub",
    "aten::sub_",
    "aten::mul",
    "aten::mul_",
    "aten::div",
    "aten::div_",
    "aten::neg",
    "aten::floor_divide",
)

#: Memory, shape and tensor-creation operators that do no arithmetic: explicitly 0.
ZERO_COST_OPS: tuple[str, ...] = (
    "aten::cat",
    "aten::stack",
    "aten::slice",
    "aten::select",
    "aten::narrow",
    "aten::split",
    "aten::split_with_sizes",
    "aten::chunk",
    "aten::unbind",
    "aten::pad",
    "aten::constant_pad_nd",
    "aten::size",
    "aten::Int",
    "aten::ScalarImplicit",
    "aten::view",
    "aten::reshape",
    "aten::flatten",
    "aten::contiguous",
    "aten::expand",
    "aten::permute",
    "aten::transpose",
    "aten::t",
    "aten::squeeze",
    "aten::unsqueeze",
    "aten::to",
    "aten::detach",
    "aten::dropout",
    "aten::empty",
    "aten::zeros",
    "aten::zeros_like",
    "aten::ones",
    "aten::full",
)

Handle = Callable[[list[Any], list[Any]], Counter]


@dataclass(frozen=True)
class MacCount:
    """The operation count of one network at one input shape (see the module docstring).

    Attributes:
        total: ``conv_macs`` plus the element-wise, pooling, upsampling and batch-norm
            operations under the documented conventions; the profile's ``macs`` metric.
        by_operator: the non-zero parts of ``total`` per operator name.
        conv_macs: multiply-accumulates of convolutions and matrix products only.
        input_shape: the ``(N, C, H, W)`` input the network was traced with.
    """

    total: int
    by_operator: dict[str, int] = field(hash=False)
    conv_macs: int
    input_shape: tuple[int, int, int, int]

    @property
    def other_ops(self) -> int:
        """The part of ``total`` that is not convolution/matrix MACs."""
        return self.total - self.conv_macs

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "conv_macs": self.conv_macs,
            "by_operator": dict(self.by_operator),
            "input_shape": list(self.input_shape),
        }


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared parameter once; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


# --- handles ---------------------------------------------------------------------------------


def _shape(value: Any, op: str) -> list[int]:
    shape = get_shape(value)
    if shape is None:
        raise RuntimeError(f"count_macs: the trace has no complete tensor shape for an input/output of {op}")
    return list(shape)


def _operator_name(op: str) -> str:
    name = op.split("::", 1)[-1]
    return name[:-1] if name.endswith("_") else name


def _elementwise(op: str) -> Handle:
    name = _operator_name(op)

    def handle(inputs: list[Any], outputs: list[Any]) -> Counter:
        shape = _shape(outputs[0], op)
        return Counter({name: prod(shape)}) if shape else Counter()

    return handle


def _zero(inputs: list[Any], outputs: list[Any]) -> Counter:
    return Counter()


def _int_list(value: Any, op: str, what: str) -> list[int]:
    """A constant int or int list argument of a traced node (``prim::ListConstruct`` of constants)."""
    node = value.node()
    if node.kind() == "prim::ListConstruct":
        items = [v.toIValue() for v in node.inputs()]
    else:
        ivalue = value.toIValue()
        items = ivalue if isinstance(ivalue, (list, tuple)) else [ivalue]
    if any(not isinstance(i, int) for i in items):
        raise RuntimeError(f"count_macs: the {what} of {op} is not a constant in the trace")
    return list(items)


def _pair(values: list[int], default: list[int]) -> list[int]:
    if not values:
        return default
    return values * 2 if len(values) == 1 else values


def _taps_inside(size_in: int, size_out: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Sum over output positions of the kernel taps that fall inside ``[0, size_in)``."""
    total = 0
    for o in range(size_out):
        start = o * stride - pad
        total += sum(1 for t in range(kernel) if 0 <= start + t * dilation < size_in)
    return total


def _pool2d(op: str) -> Handle:
    """avg_pool2d(x, kernel, stride, padding, ...) / max_pool2d(x, kernel, stride, padding, dilation, ...)."""
    name = _operator_name(op)
    has_dilation = op == "aten::max_pool2d"

    def handle(inputs: list[Any], outputs: list[Any]) -> Counter:
        x, y = _shape(inputs[0], op), _shape(outputs[0], op)
        kernel = _pair(_int_list(inputs[1], op, "kernel size"), [])
        stride = _pair(_int_list(inputs[2], op, "stride"), kernel)
        padding = _pair(_int_list(inputs[3], op, "padding"), [0, 0])
        dilation = _pair(_int_list(inputs[4], op, "dilation"), [1, 1]) if has_dilation else [1, 1]
        if len(kernel) != 2:
            raise RuntimeError(f"count_macs: {op} has an unexpected kernel size {kernel}")
        reads = prod(x[:-2]) * prod(
            _taps_inside(x[-2 + i], y[-2 + i], kernel[i], stride[i], padding[i], dilation[i]) for i in range(2)
        )
        return Counter({name: reads})

    return handle


def _per_input_element(op: str) -> Handle:
    name = _operator_name(op)

    def handle(inputs: list[Any], outputs: list[Any]) -> Counter:
        return Counter({name: prod(_shape(inputs[0], op))})

    return handle


def _handles() -> dict[str, Handle]:
    handles: dict[str, Handle] = {op: _elementwise(op) for op in ELEMENTWISE_OPS}
    handles.update({op: _zero for op in ZERO_COST_OPS})
    handles["aten::avg_pool2d"] = _pool2d("aten::avg_pool2d")
    handles["aten::max_pool2d"] = _pool2d("aten::max_pool2d")
    handles["aten::adaptive_max_pool2d"] = _per_input_element("aten::adaptive_max_pool2d")
    # fvcore's defaults, kept: _convolution ("conv"), linear, addmm, mm, matmul, bmm, einsum,
    # batch_norm, group/layer/instance norm, upsample_bilinear2d, upsample_nearest2d,
    # adaptive_avg_pool2d, grid_sampler.
    return handles


class _StrictFlopCount(FlopCountAnalysis):
    """fvcore's analysis with our handles and without fvcore's list of silently ignored operators."""

    def __init__(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        super().__init__(model, inputs)
        if not hasattr(self, "_ignored_ops"):  # pragma: no cover - guards an fvcore internals change
            raise RuntimeError("count_macs: this fvcore version has no ignored-operator list to clear")
        # fvcore ignores e.g. aten::relu, aten::clamp, aten::max and aten::cat silently; here every
        # aten:: operator must have a handle (prim:: graph plumbing stays ignored, as in fvcore).
        self._ignored_ops = set()
        self.set_op_handle(**_handles())
        self.unsupported_ops_warnings(False)
        self.uncalled_modules_warnings(False)
        self.tracer_warnings("none")


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 4 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"input_shape must be four positive integers (N, C, H, W), got {input_shape!r}")
    return shape  # type: ignore[return-value]


def _is_cpu_float32(model: nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors)


@contextmanager
def _traceable(model: nn.Module) -> Iterator[nn.Module]:
    """The model in evaluation mode, on the CPU in float32, without changing the caller's model.

    A CPU float32 model is traced in place (a deep copy of a CAS network costs ~0.3 s): each
    module's ``training`` flag is restored afterwards, and so are its forward hooks, should the
    trace fail before fvcore removes the scope hooks it adds. An evaluation-mode forward under
    ``no_grad`` changes no parameter or buffer. Any other model is deep-copied to the CPU first.
    """
    if not _is_cpu_float32(model):
        yield copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
        return
    modules = list(model.modules())
    saved = [(m, m.training, dict(m._forward_pre_hooks), dict(m._forward_hooks)) for m in modules]
    model.eval()
    try:
        yield model
    finally:
        for m, training, pre_hooks, hooks in saved:
            m.training = training
            for key in set(m._forward_pre_hooks) - set(pre_hooks):
                del m._forward_pre_hooks[key]
            for key in set(m._forward_hooks) - set(hooks):
                del m._forward_hooks[key]


def count_macs(model: nn.Module, input_shape: tuple[int, int, int, int]) -> MacCount:
    """Count the operations of ``model`` on an input of ``input_shape`` (see the module docstring).

    The network is traced in evaluation mode, on the CPU, in float32; the caller's model is left
    as it was (mode, device, dtype, parameters, buffers, hooks).

    Raises:
        RuntimeError: the trace contains an operator without a handle (named in the message).
        ValueError: ``input_shape`` is not four positive integers.
    """
    shape = _check_shape(input_shape)
    with _traceable(model) as traced, torch.no_grad(), warnings.catch_warnings(), \
            channels_last_weights(traced) as converted:  # a faster forward, the same trace
        warnings.simplefilter("ignore")
        analysis = _StrictFlopCount(traced, (trace_input(shape, converted),))
        raw = analysis.by_operator()
        unsupported = analysis.unsupported_ops()
    if unsupported:
        names = ", ".join(f"{op} (x{n})" for op, n in sorted(unsupported.items()))
        raise RuntimeError(
            f"count_macs: no cost handle for {names}; register one in casprof.complexity "
            "(an operation may never count as zero by omission)"
        )
    by_operator: dict[str, int] = {}
    for op, n in raw.items():
        if n:
            key = _operator_name(op)
            by_operator[key] = by_operator.get(key, 0) + int(n)
    by_operator = dict(sorted(by_operator.items()))
    conv_macs = sum(n for op, n in by_operator.items() if op in CONV_OPERATORS)
    return MacCount(
        total=sum(by_operator.values()),
        by_operator=by_operator,
        conv_macs=conv_macs,
        input_shape=shape,
    )
