"""The run folder of ``cas train``: what it holds, refusing to overwrite a run, exact-resume checkpoints.

Layout: ``settings.json``, ``genotype.json`` (a copy), ``log.jsonl``, ``checkpoint.pt`` (model,
optimizer, iteration, best score, RNG states), ``last.pt`` and ``best.pt`` (plain state_dicts
that ``cas deploy export --weights`` and ``cas eval --weights`` take), ``result.json``.
Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from casprof._io import atomic_write_bytes, atomic_write_json, atomic_write_text, check_output_folder, make_output_folder, read_json_file
from casprof.errors import UserInputError
from casprof.genotype import Genotype
from train.settings import TrainSettings

CHECKPOINT_SCHEMA_VERSION = 1
SETTINGS = "settings.json"
GENOTYPE = "genotype.json"
LOG = "log.jsonl"
CHECKPOINT = "checkpoint.pt"
LAST = "last.pt"
BEST = "best.pt"
RESULT = "result.json"

#: Files whose presence means the folder already holds a run.
RUN_MARKERS = (SETTINGS, CHECKPOINT, LOG)


def save_state_dict(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """``torch.save`` a state_dict (tensors on the CPU) atomically."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def rng_state() -> dict[str, Any]:
    """Every random state a training step may draw from (torch CPU and CUDA, Python, NumPy)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


@dataclass(frozen=True)
class Checkpoint:
    """Everything an interrupted run needs to continue exactly where it stopped."""

    iteration: int
    model: Mapping[str, torch.Tensor]
    optimizer: Mapping[str, Any]
    best_miou: float | None
    best_iteration: int | None
    rng: Mapping[str, Any]

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        torch.save(
            {
                "schema_version": CHECKPOINT_SCHEMA_VERSION,
                "iteration": self.iteration,
                "model": {k: v.detach().cpu() for k, v in self.model.items()},
                "optimizer": self.optimizer,
                "best_miou": self.best_miou,
                "best_iteration": self.best_iteration,
                "rng": self.rng,
            },
            buffer,
        )
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserInputError(f"The checkpoint {path} cannot be read ({type(exc).__name__}); it may be corrupt.") from None
        if not isinstance(raw, dict) or raw.get("schema_version") != CHECKPOINT_SCHEMA_VERSION:
            raise UserInputError(f"The checkpoint {path} is not a cas train checkpoint of schema version {CHECKPOINT_SCHEMA_VERSION}.")
        missing = [f.name for f in fields(cls) if f.name not in raw]
        if missing:
            raise UserInputError(f"The checkpoint {path} is incomplete (no {', '.join(missing)}); it may be corrupt.")
        if not all(isinstance(raw[k], Mapping) for k in ("model", "optimizer", "rng")) or not isinstance(raw["iteration"], int):
            raise UserInputError(f"The checkpoint {path} is malformed (a field has the wrong type); it may be corrupt.")
        return cls(**{f.name: raw[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder."""

    root: Path

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    def holds_run(self) -> bool:
        return any((self.root / name).exists() for name in RUN_MARKERS)

    def check_new_or_resumable(self, settings: TrainSettings, genotype: Genotype, resume: bool) -> Checkpoint | None:
        """Refuse a folder that holds another run; the checkpoint to resume from, if any.

        Without ``resume`` a folder that already holds a run is refused. With it, the recorded
        settings and genotype must match (the first differing setting is named); a folder
        without a checkpoint starts from iteration 0.
        """
        if self.root.exists() and not self.root.is_dir():
            raise UserInputError(f"The run folder {self.root} is a file.")
        check_output_folder(self.root)
        if not self.holds_run():
            return None
        if not resume:
            raise UserInputError(
                f"The folder {self.root} already holds a training run; pass --resume to continue it or choose another --out."
            )
        recorded = TrainSettings.from_dict(read_json_file(self / SETTINGS, "run settings"), self / SETTINGS)
        difference = settings.first_difference(recorded)
        if difference is not None:
            raise UserInputError(f"Cannot resume the run in {self.root} with other settings: {difference}.")
        if Genotype.load(self / GENOTYPE).to_dict() != genotype.to_dict():
            raise UserInputError(f"Cannot resume the run in {self.root}: the genotype differs from its genotype.json.")
        return Checkpoint.load(self / CHECKPOINT) if (self / CHECKPOINT).exists() else None

    def start(self, settings: TrainSettings, genotype: Genotype) -> None:
        make_output_folder(self.root)
        atomic_write_json(self / SETTINGS, settings.to_dict())
        genotype.save(self / GENOTYPE)

    def read_log(self, up_to: int) -> list[dict[str, Any]]:
        """The log records of iterations ``<= up_to`` (later ones were not checkpointed)."""
        path = self / LOG
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r for r in records if r.get("iteration", 0) <= up_to]

    def write_log(self, records: list[dict[str, Any]]) -> None:
        atomic_write_text(self / LOG, "".join(json.dumps(r) + "\n" for r in records))
