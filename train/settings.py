"""What a training or evaluation run is: frozen settings with their documented defaults.

Defaults and their sources:

- optimizer (paper §4.3): mini-batch SGD, initial learning rate 0.005, "poly" policy with
  power 0.9, momentum 0.9, weight decay 5e-4, batch 16, 90k iterations;
- augmentation (not given by the paper; the usual street-scene recipe of DeepLab/PSPNet-style
  training): random scale in [0.5, 2.0], random crop, random horizontal flip. The default crop
  is the largest one that fits every image at the smallest scale, so no padding is needed:
  512x1024 for Cityscapes (1024x2048 frames), 352x480 for CamVid (720x960), 64x128 for the
  synthetic scenes (128x256); all divisible by the network's output stride 16.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any


from casprof._io import check_schema_version
from casprof.errors import UserInputError
from search.data.info import parse_dataset_name

SETTINGS_SCHEMA_VERSION = 1

#: Default training crop (H, W) per dataset (see the module docstring).
DEFAULT_CROPS: dict[str, tuple[int, int]] = {
    "synthetic": (64, 128),
    "cityscapes": (512, 1024),
    "camvid": (352, 480),
}


class EvalSplit(str, Enum):
    """The splits ``cas eval`` reads."""

    VAL = "val"
    TEST = "test"


@dataclass(frozen=True)
class OptimizerSettings:
    """SGD with the "poly" learning-rate policy (paper §4.3)."""

    lr: float = 0.005
    poly_power: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise UserInputError(f"The learning rate must be positive, got {self.lr}.")
        if self.poly_power < 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise UserInputError("The poly power and weight decay must be non-negative and the momentum in [0, 1).")

    def lr_at(self, iteration: int, total: int) -> float:
        """The poly learning rate ``lr * (1 - iteration / total) ** power``."""
        return self.lr * (1.0 - iteration / total) ** self.poly_power


@dataclass(frozen=True)
class Augmentation:
    """Random scale, random crop (H, W) and random horizontal flip of the training images."""

    crop: tuple[int, int]
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", (int(self.crop[0]), int(self.crop[1])))
        object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))
        if min(self.crop) < 1:
            raise UserInputError(f"The crop {self.crop[0]}x{self.crop[1]} must be positive.")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise UserInputError(f"The scale range {self.scale[0]}-{self.scale[1]} must satisfy 0 < low <= high.")


@dataclass(frozen=True)
class Cadence:
    """How often a run logs, evaluates and checkpoints (in iterations; changeable on --resume)."""

    log_every: int = 20
    eval_every: int = 1000
    checkpoint_every: int = 500
    eval_limit: int | None = None  # evaluate on the first N validation images only (None: all)

    def __post_init__(self) -> None:
        if self.log_every < 1 or self.checkpoint_every < 1 or self.eval_every < 0:
            raise UserInputError("log_every and checkpoint_every must be at least 1 and eval_every at least 0.")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise UserInputError(f"The evaluation limit must be at least 1, got {self.eval_limit}.")


def _path_or_none(value: Any) -> Path | None:
    """An absolute path (so a run resumed from another folder compares equal), or None."""
    return None if value is None else Path(value).expanduser().absolute()


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a training run of a derived network."""

    genotype: Path
    dataset: str = "synthetic"
    data_root: Path | None = None
    iters: int = 90_000
    batch_size: int = 16  # global: split evenly across torchrun ranks
    augmentation: Augmentation | None = None  # None: the dataset's default crop, scale [0.5, 2], flip
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    seed: int = 0
    init_backbone: Path | None = None
    eval_resolution: tuple[int, int] | None = None  # None: the validation images' full size
    cadence: Cadence = field(default_factory=Cadence)
    num_workers: int = 0
    device: str = "cpu"

    #: Settings that may differ on --resume: they do not change the weights the run computes
    #: (the genotype is compared by content, with the run's copy, not by path).
    RESUMABLE_CHANGES = ("genotype", "cadence", "num_workers", "device", "eval_resolution")

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", parse_dataset_name(self.dataset).value)
        object.__setattr__(self, "genotype", Path(self.genotype))
        object.__setattr__(self, "data_root", _path_or_none(self.data_root))
        object.__setattr__(self, "init_backbone", _path_or_none(self.init_backbone))
        if self.augmentation is None:
            object.__setattr__(self, "augmentation", Augmentation(crop=DEFAULT_CROPS[self.dataset]))
        if self.iters < 1:
            raise UserInputError(f"The number of iterations must be at least 1, got {self.iters}.")
        if self.batch_size < 1:
            raise UserInputError(f"The batch size must be at least 1, got {self.batch_size}.")
        if self.num_workers < 0:
            raise UserInputError(f"The number of data workers must be non-negative, got {self.num_workers}.")

    @property
    def crop(self) -> tuple[int, int]:
        assert self.augmentation is not None
        return self.augmentation.crop

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema_version": SETTINGS_SCHEMA_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif hasattr(value, "__dataclass_fields__"):
                value = asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            d[f.name] = value
        for sub in ("augmentation",):
            d[sub] = {k: list(v) if isinstance(v, tuple) else v for k, v in d[sub].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: Path | str | None = None) -> TrainSettings:
        """Settings from their JSON form; ``source`` (the file they came from) is named in errors."""
        where = f" in {source}" if source is not None else ""
        if not isinstance(d, dict):
            raise UserInputError(f"The training settings{where} must be a JSON object.")
        check_schema_version(d, "training settings", SETTINGS_SCHEMA_VERSION)
        try:
            kwargs: dict[str, Any] = {k: d[k] for k in (f.name for f in fields(cls)) if k in d}
            kwargs["augmentation"] = Augmentation(**kwargs["augmentation"]) if kwargs.get("augmentation") else None
            kwargs["optimizer"] = OptimizerSettings(**kwargs.get("optimizer", {}))
            kwargs["cadence"] = Cadence(**kwargs.get("cadence", {}))
            if kwargs.get("eval_resolution") is not None:
                kwargs["eval_resolution"] = tuple(kwargs["eval_resolution"])
            return cls(**kwargs)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise UserInputError(f"The training settings{where} are malformed ({exc}).") from None

    def first_difference(self, other: TrainSettings) -> str | None:
        """The first setting (outside :attr:`RESUMABLE_CHANGES`) where ``other`` differs, as a phrase."""
        mine, theirs = self.to_dict(), other.to_dict()
        for key, value in mine.items():
            if key in self.RESUMABLE_CHANGES or theirs.get(key) == value:
                continue
            if isinstance(value, dict) and isinstance(theirs.get(key), dict):
                sub = next(k for k in value if value[k] != theirs[key].get(k))
                return f"{key}.{sub} is {theirs[key].get(sub)!r} in the run but {value[sub]!r} now"
            return f"{key} is {theirs.get(key)!r} in the run but {value!r} now"
        return None


@dataclass(frozen=True)
class EvalSettings:
    """An evaluation of trained weights on one split."""

    genotype: Path
    weights: Path
    dataset: str = "synthetic"
    data_root: Path | None = None
    split: EvalSplit = EvalSplit.VAL
    resolution: tuple[int, int] | None = None  # None: each image's full size
    batch_size: int = 1
    limit: int | None = None  # the first N images only (None: all)
    examples: int = 4  # images shown in the PNG
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", parse_dataset_name(self.dataset).value)
        object.__setattr__(self, "genotype", Path(self.genotype))
        object.__setattr__(self, "weights", Path(self.weights))
        object.__setattr__(self, "data_root", _path_or_none(self.data_root))
        object.__setattr__(self, "split", EvalSplit(self.split))
        if self.batch_size < 1 or self.examples < 0 or (self.limit is not None and self.limit < 1):
            raise UserInputError("The batch size and limit must be at least 1 and the number of examples at least 0.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "genotype": str(self.genotype),
            "weights": str(self.weights),
            "dataset": self.dataset,
            "data_root": None if self.data_root is None else str(self.data_root),
            "split": self.split.value,
            "resolution": None if self.resolution is None else list(self.resolution),
            "batch_size": self.batch_size,
            "limit": self.limit,
            "examples": self.examples,
            "device": self.device,
        }
