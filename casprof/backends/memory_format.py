"""In which memory layout the torch runner holds a network's weights and activations.

PyTorch's default 4-D tensors are ``contiguous`` (NCHW). On a CPU, oneDNN runs its
convolutions on blocked layouts, so every convolution of an NCHW network reorders its input and
output between the two: memory-bound copies of whole activations. ``channels_last`` (NHWC)
weights and input let oneDNN run in place, and PyTorch's CPU performance guide recommends it for
CNN inference. Measured on the 2-core AVX-512 EPYC VM (29 Nov, 768x1536, 2 threads, ``keep``
allocator, 8 interleaved runs each): the all-identity network 221 → 163 ms, the normal cell's
``sep_conv_3x3_x4`` probe 609 → 289 ms (its c_o 388 → 126 ms), ``conv_3x3`` 352 → 258 ms; the
outputs agree to 7e-8. The operations' costs change unevenly (the separable convolutions lose
most), so a profile predicts only the layout it was measured in.

``contiguous`` (the default)
    what a plain PyTorch deployment gets; profiles made before this setting existed were
    measured so (their missing setting reads as ``contiguous``).
``channels_last``
    ``module.to(memory_format=torch.channels_last)`` on a copy of the module and an NHWC input:
    what a deployment that converts its model and input gets.

Only the torch runner has the choice: ONNX Runtime and TensorRT choose their own layouts from
the same exported graph, so the setting is refused for them rather than recorded unapplied.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from casprof.errors import parse_choice

if TYPE_CHECKING:
    import torch

#: The refusal of ``channels_last`` for a backend that would not apply it.
LAYOUT_ONLY_TORCH = (
    "--memory-format channels_last applies to the torch backend only (ONNX Runtime and TensorRT choose their own layouts)."
)


class MemoryFormat(str, enum.Enum):
    """The torch runner's layout of 4-D weights and activations (see the module docstring)."""

    CONTIGUOUS = "contiguous"
    CHANNELS_LAST = "channels_last"

    @property
    def file_tag(self) -> str:
        """What the setting adds to a profile's or report's file name: ``-channels-last``, or
        nothing for the default (so names made before the setting existed stay as they were)."""
        return "-channels-last" if self is MemoryFormat.CHANNELS_LAST else ""

    @property
    def torch_format(self) -> torch.memory_format:
        """The matching ``torch.memory_format``."""
        import torch

        return torch.channels_last if self is MemoryFormat.CHANNELS_LAST else torch.contiguous_format


def parse_memory_format(value: MemoryFormat | str) -> MemoryFormat:
    """A :class:`MemoryFormat` from itself or its name; anything else is a user error."""
    return parse_choice(MemoryFormat, value, "memory format")
