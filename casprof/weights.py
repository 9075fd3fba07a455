"""State_dict files: read them safely (``weights_only=True``), check they fit a network, load them.

Shared by ``deploy`` (``--weights``) and ``train`` (``--init-backbone``, ``cas eval --weights``):
a file that does not fit names the first missing, misshaped or unexpected tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from casprof._io import file_sha256
from casprof.errors import UserInputError

RANDOM_INIT = "random init"


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from: a state_dict file (path, sha256) or a seeded random init."""

    source: str  # "file" or RANDOM_INIT
    path: Path | None = None
    sha256: str | None = None
    seed: int | None = None

    @property
    def random(self) -> bool:
        return self.source == RANDOM_INIT

    def describe(self) -> str:
        if self.random:
            return f"random init (seed {self.seed}; fine for latency and parity, meaningless for accuracy)"
        return f"{self.path} (sha256 {str(self.sha256)[:12]}…)"

    def to_dict(self) -> dict[str, Any]:
        if self.random:
            return {"source": RANDOM_INIT, "seed": self.seed}
        return {"source": "file", "path": str(self.path), "sha256": self.sha256}


def _shape(t: Any) -> list[int]:
    return [int(s) for s in t.shape]


def tensor_mismatch(name: str, value: Any, tensor: torch.Tensor) -> str | None:
    """Why ``value`` cannot replace the network's tensor ``name``, as a phrase; None when it can."""
    if not isinstance(value, torch.Tensor):
        return f"entry {name} of the file is a {type(value).__name__}, not a tensor"
    if _shape(value) != _shape(tensor):
        return f"tensor {name} has shape {_shape(value)} in the file but {_shape(tensor)} in the network"
    return None


def weights_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> str | None:
    """The first way a state_dict does not fit a network, as a phrase; None when it fits.

    Tensors are checked in the network's order: a missing tensor or a shape difference is
    reported first, then a tensor the network does not have.
    """
    for name, tensor in expected.items():
        if name not in given:
            return f"tensor {name} of the network is missing from the file"
        problem = tensor_mismatch(name, given[name], tensor)
        if problem is not None:
            return problem
    for name in given:
        if name not in expected:
            return f"the file has a tensor {name}, which the network does not have"
    return None


def read_state_dict(path: Path) -> Mapping[str, Any]:
    """The state_dict in ``path`` (plain, ``{"state_dict": ...}``, or saved from (Distributed)DataParallel)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"The weights file {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserInputError(
            f"The weights file {path} cannot be read as a PyTorch state_dict ({type(exc).__name__})."
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training checkpoint {"state_dict": ..., ...}
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise UserInputError(f"The weights file {path} does not hold a state_dict (a mapping of tensor names to tensors).")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}  # saved from DataParallel
    return state


def load_weights(model: torch.nn.Module, path: Path) -> WeightsInfo:
    """Load a state_dict file into ``model`` (strictly); a mismatch names the first bad tensor."""
    path = Path(path)
    state = read_state_dict(path)
    problem = weights_mismatch(model.state_dict(), state)
    if problem is not None:
        raise UserInputError(f"The weights do not fit the genotype: {problem}.")
    model.load_state_dict(state, strict=True)
    return WeightsInfo(source="file", path=path, sha256=file_sha256(path))
