"""Settings of one CAS search run: a frozen, versioned dataclass written as ``settings.json``.

Defaults and their sources:

- weights: SGD, lr 0.005, "poly" decay with power 0.9, momentum 0.9, weight decay 5e-4,
  batch 16, 15k iterations (paper §4.3);
- architecture: Adam, betas (0.5, 0.999), weight decay 1e-3 (DARTS); its learning rate is
  raised from DARTS's 3e-4 to 3e-3 (see ``DEFAULT_ARCH_LR``);
- first-order architecture gradient (xi = 0), the paper's own approximation (§4.1);
- crop 128x256: the paper gives none; it is the synthetic data set's native size (2:1 like
  Cityscapes) and divisible by the network's total stride 16. Pass a larger crop on Cityscapes;
- lambda 1.0 in the normalised cost units of :mod:`search.cost` (a cost loss that spans 1 over
  all architectures): moving the whole network from its cheapest to its dearest operations is
  worth one nat of validation cross entropy, for every metric and device. The paper gives no
  value; measured on the default network (README "Search"), lambda 10 cuts the predicted
  latency within 100 iterations while lambda 1 acts only over longer searches.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from casprof.errors import UserInputError

SETTINGS_SCHEMA_VERSION = 1

#: Architecture learning rate. DARTS uses 3e-4 over ~20k steps; Adam moves each alpha by at
#: most ~lr per step, so a few-hundred-iteration search at 3e-4 leaves every softmax within a
#: few percent of uniform. 3e-3 lets short searches separate the operations while a
#: paper-length search still converges (measured, see the README "Search" section).
DEFAULT_ARCH_LR = 3e-3
DEFAULT_LAMBDA = 1.0


class Stage(str, enum.Enum):
    """Which cells a search optimises (paper §4.2 searches the backbone, then the ms cell)."""

    BACKBONE = "backbone"
    MS = "ms"
    JOINT = "joint"

    def searched_cell_types(self) -> tuple[str, ...]:
        return {"backbone": ("normal", "reduce"), "ms": ("ms",), "joint": ("normal", "reduce", "ms")}[self.value]


class CostSupport(str, enum.Enum):
    """The operations the expected cost of an edge is taken over (see :mod:`search.cost`).

    ``kept`` (default): the derivable expectation of each edge weighted by the probability that
    the derivation keeps the edge (relaxed top-2 of the node's edge strengths); ``derivable``:
    softmax(alpha) renormalised without ``none``, on every edge; ``all``: Eq. 5 to the letter,
    ``none`` included at cost 0.
    """

    KEPT = "kept"
    DERIVABLE = "derivable"
    ALL = "all"


class ArchOrder(str, enum.Enum):
    """First-order (xi = 0) or second-order (unrolled, Eq. 7) architecture gradient."""

    FIRST = "first"
    SECOND = "second"


#: Fields that may change between an interrupted run and its ``--resume`` (not in the digest).
RESUMABLE_FIELDS = ("iters", "log_every", "checkpoint_every", "device", "num_workers", "threads")


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search run (see the module docstring for the defaults' sources)."""

    profile: Path
    metric: str = "latency_ms"
    lambda_: float = DEFAULT_LAMBDA
    target: float | None = None
    stage: Stage = Stage.JOINT
    backbone: Path | None = None
    dataset: str = "synthetic"
    data_root: Path | None = None
    iters: int = 15000
    batch_size: int = 16  # global: split evenly across torchrun ranks (as in train)
    crop: tuple[int, int] = (128, 256)
    scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = True
    seed: int = 0
    order: ArchOrder = ArchOrder.FIRST
    cost_support: CostSupport = CostSupport.KEPT
    # weights (paper §4.3)
    lr: float = 0.005
    lr_power: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    # architecture (DARTS, lr raised: see DEFAULT_ARCH_LR)
    arch_lr: float = DEFAULT_ARCH_LR
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    # budget controller (used only with ``target``)
    budget_every: int = 25
    budget_factor: float = 1.5
    # bookkeeping
    checkpoint_every: int = 500
    log_every: int = 10
    val_batches: int = 4
    device: str = "cpu"
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads for the run (None: leave torch's setting)

    def __post_init__(self) -> None:
        object.__setattr__(self, "profile", Path(self.profile))
        for name in ("backbone", "data_root"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "stage", _enum(Stage, self.stage, "stage"))
        object.__setattr__(self, "order", _enum(ArchOrder, self.order, "order"))
        object.__setattr__(self, "cost_support", _enum(CostSupport, self.cost_support, "cost support"))
        for name in ("crop", "scale", "arch_betas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check()

    def _check(self) -> None:
        if not isinstance(self.lambda_, (int, float)) or not math.isfinite(self.lambda_) or self.lambda_ < 0:
            raise UserInputError(f"lambda must be a finite number >= 0, got {self.lambda_!r}.")
        if self.target is not None and (not math.isfinite(self.target) or self.target <= 0):
            raise UserInputError(f"The target budget must be a positive finite number, got {self.target!r}.")
        for name in ("iters", "batch_size", "checkpoint_every", "log_every", "budget_every", "val_batches"):
            if int(getattr(self, name)) < 1:
                raise UserInputError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise UserInputError(f"The crop must be two positive integers HxW, got {self.crop!r}.")
        if not (0 < self.scale[0] <= self.scale[1]):
            raise UserInputError(f"The scale range must satisfy 0 < low <= high, got {self.scale!r}.")
        for name in ("lr", "arch_lr"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise UserInputError(f"{name} must be a positive finite number, got {getattr(self, name)!r}.")
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"threads must be at least 1, got {self.threads}.")
        if self.budget_factor <= 1:
            raise UserInputError(f"budget_factor must be greater than 1, got {self.budget_factor}.")

    @property
    def searched_cell_types(self) -> tuple[str, ...]:
        return self.stage.searched_cell_types()

    def replace(self, **changes: Any) -> SearchSettings:
        return replace(self, **changes)

    # --- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema_version": SETTINGS_SCHEMA_VERSION}
        for key, value in asdict(self).items():
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            d["lambda" if key == "lambda_" else key] = value
        return d

    @classmethod
    def from_dict(cls, d: Any, source: Path | str | None = None) -> SearchSettings:
        """Settings from their JSON form; ``source`` (the file they came from) is named in errors."""
        where = f" in {source}" if source is not None else ""
        if not isinstance(d, dict):
            raise UserInputError(f"The search settings{where} must be a JSON object.")
        d = dict(d)
        version = d.pop("schema_version", SETTINGS_SCHEMA_VERSION)
        if not isinstance(version, int) or version > SETTINGS_SCHEMA_VERSION:
            raise UserInputError(f"The search settings{where} have an unreadable schema_version {version!r}.")
        if "lambda" in d:
            d["lambda_"] = d.pop("lambda")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserInputError(f"The search settings{where} have unknown fields: {', '.join(unknown)}.")
        try:
            return cls(**d)
        except (TypeError, ValueError, IndexError) as exc:
            raise UserInputError(f"The search settings{where} are malformed ({exc}).") from None

    def digest_fields(self) -> dict[str, Any]:
        """The settings that must match for ``--resume`` (all but iteration count, cadence, device)."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_FIELDS}

    def config_digest(self) -> str:
        blob = json.dumps(self.digest_fields(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def first_difference(self, other: SearchSettings) -> str | None:
        """The first digest setting that differs from ``other``, as ``name: mine vs theirs``."""
        mine, theirs = self.digest_fields(), other.digest_fields()
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                return f"{key} {theirs.get(key)!r} (recorded) vs {mine.get(key)!r} (now)"
        return None


def _enum(cls: type[enum.Enum], value: Any, what: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise UserInputError(f"Unknown {what} {value!r}; expected one of {choices}.") from None
