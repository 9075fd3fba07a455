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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from casprof.genotype import Genotype
from casprof.network import CASNetwork
from casprof.weights import RANDOM_INIT, WeightsInfo, load_weights, weights_mismatch  # noqa: F401  (re-exported)


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
