"""``--init-backbone``: load the stem and backbone cells of a network from a state_dict file.

The paper (§4.2) pre-trains the searched backbone on ImageNet and appends the multi-scale cell;
this loads such weights. Every stem and cell tensor of the network must be in the file with the
same shape (the first one that is missing or misshaped is named); tensors outside the backbone
(an ImageNet classifier, a multi-scale cell) are ignored.
"""

from __future__ import annotations

from pathlib import Path

import torch

from casprof.errors import UserInputError
from casprof.weights import read_state_dict, tensor_mismatch

#: State_dict prefixes of the backbone (three stem convolutions and the eight cells).
BACKBONE_PREFIXES = ("stem.", "cells.")


def load_backbone(model: torch.nn.Module, path: Path) -> int:
    """Copy the backbone tensors of ``path`` into ``model``; the number of tensors loaded."""
    state = read_state_dict(Path(path))
    wanted = {k: v for k, v in model.state_dict().items() if k.startswith(BACKBONE_PREFIXES)}
    for name, tensor in wanted.items():
        if name not in state:
            raise UserInputError(f"The backbone weights {path} lack the tensor {name} of the network's backbone.")
        problem = tensor_mismatch(name, state[name], tensor)
        if problem is not None:
            raise UserInputError(f"The backbone weights {path} do not fit the genotype: {problem}.")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return len(wanted)
