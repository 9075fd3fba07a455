"""Channels-last weights while a network is traced (ONNX export, MAC counting), restored after.

Both the legacy ONNX exporter and fvcore's counter trace a network by running one real forward
pass at the full input size, which dominates their time. ONNX and the traced graph carry no
memory layout, so the layout of the weights and of the dummy input changes nothing in what they
produce (the exported files are byte-identical and the counts equal: ``tests/test_trace_layout.py``),
while PyTorch's CPU convolutions run the pass faster in NHWC. Measured on the 2-core AVX2 EPYC
at 768x1536 for four probe networks: export 1.34 → 1.02 s, 2.57 → 1.49 s, 2.55 → 2.43 s and
2.01 → 1.69 s, counting 0.94 → 0.74 s, 2.17 → 1.36 s, 1.83 → 1.61 s and 1.47 → 1.09 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _four_d(model: nn.Module) -> list[torch.Tensor]:
    return [t for t in (*model.parameters(), *model.buffers()) if t.dim() == 4]


def convertible(model: nn.Module) -> bool:
    """Whether :func:`channels_last_weights` can convert ``model`` and restore it exactly: every
    4-D parameter and buffer is a CPU tensor in the default (contiguous) layout."""
    return all(t.device.type == "cpu" and t.is_contiguous() for t in _four_d(model))


@contextmanager
def channels_last_weights(model: nn.Module) -> Iterator[bool]:
    """``model``'s 4-D weights in channels-last layout inside the block, contiguous again after.

    Yields whether it converted: a model that :func:`convertible` refuses (weights on a GPU or
    already in another layout) is left alone. The values never change, only their layout, and
    the parameter objects stay the same (``Module.to`` replaces their ``data``).
    """
    if not convertible(model) or not _four_d(model):
        yield False
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield True
    finally:
        model.to(memory_format=torch.contiguous_format)


def trace_input(shape: tuple[int, ...], converted: bool, **kwargs: object) -> torch.Tensor:
    """The zero dummy input of a trace, channels-last when the weights are (4-D shapes only)."""
    x = torch.zeros(shape, **kwargs)  # type: ignore[call-overload]
    return x.contiguous(memory_format=torch.channels_last) if converted and x.dim() == 4 else x
