"""The derived network of a genotype, with trained weights or a seeded random initialisation.

Without ``--weights`` the network is initialised from a fixed seed (PyTorch's default
initialisers under ``torch.manual_seed(seed)``, in a forked RNG so the caller's random state is
untouched) and put in evaluation mode, so batch norm uses its running statistics (mean 0,
variance 1). Such a network is right for latency and parity, not for accuracy, and every
output of ``deploy`` says that its weights are random.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from casprof.backends.onnx_export import file_sha256
from casprof.errors import UserInputError
from casprof.genotype import Genotype
from casprof.network import CASNetwork

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


@dataclass(frozen=True)
class BuiltNetwork:
    """A derived network in evaluation mode, on the CPU, in float32, with its provenance."""

    model: CASNetwork
    genotype: Genotype
    weights: WeightsInfo
    genotype_path: Path | None = None

    def provenance(self) -> dict[str, Any]:
        """The genotype, network and weights facts every export and report records."""
        return {
            "genotype": {
                "path": str(self.genotype_path) if self.genotype_path is not None else None,
                "sha256": genotype_digest(self.genotype),
                "search": self.genotype.search.to_dict(),
            },
            "network_fingerprint": self.genotype.network.fingerprint(),
            "weights": self.weights.to_dict(),
        }


def genotype_digest(genotype: Genotype) -> str:
    """SHA-256 of the genotype's canonical JSON (independent of the file's formatting)."""
    blob = json.dumps(genotype.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def load_genotype(path: Path) -> Genotype:
    """Read and validate a genotype file (a bad file is a :class:`UserInputError`)."""
    return Genotype.load(Path(path))


def _shape(t: Any) -> list[int]:
    return [int(s) for s in t.shape]


def weights_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> str | None:
    """The first way a state_dict does not fit a network, as a phrase; None when it fits.

    Tensors are checked in the network's order: a missing tensor or a shape difference is
    reported first, then a tensor the network does not have.
    """
    for name, tensor in expected.items():
        if name not in given:
            return f"tensor {name} of the network is missing from the file"
        value = given[name]
        if not isinstance(value, torch.Tensor):
            return f"entry {name} of the file is a {type(value).__name__}, not a tensor"
        if _shape(value) != _shape(tensor):
            return f"tensor {name} has shape {_shape(value)} in the file but {_shape(tensor)} in the network"
    for name in given:
        if name not in expected:
            return f"the file has a tensor {name}, which the network does not have"
    return None


def _read_state_dict(path: Path) -> Mapping[str, Any]:
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
    state = _read_state_dict(path)
    problem = weights_mismatch(model.state_dict(), state)
    if problem is not None:
        raise UserInputError(f"The weights do not fit the genotype: {problem}.")
    model.load_state_dict(state, strict=True)
    return WeightsInfo(source="file", path=path, sha256=file_sha256(path))


def build_network(
    genotype: Genotype,
    weights: Path | None = None,
    *,
    seed: int = 0,
    genotype_path: Path | None = None,
) -> BuiltNetwork:
    """The derived network of ``genotype`` in evaluation mode (CPU, float32).

    Args:
        genotype: the validated genotype.
        weights: a state_dict file (``torch.save(model.state_dict(), path)``); None for a
            seeded random initialisation.
        seed: the seed of the random initialisation (also used when weights are loaded, so
            the build itself is deterministic).
        genotype_path: where the genotype came from (recorded only).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CASNetwork.from_genotype(genotype)
    if weights is not None:
        info = load_weights(model, Path(weights))
    else:
        info = WeightsInfo(source=RANDOM_INIT, seed=seed)
    model = model.to(device="cpu", dtype=torch.float32).eval()
    return BuiltNetwork(model=model, genotype=genotype, weights=info, genotype_path=genotype_path)
