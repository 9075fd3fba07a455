"""Network skeleton configuration (DESIGN §2): widths, layout, classes; its fingerprint.

The configuration is recorded in every profile and genotype. The fingerprint hashes the
configuration, the skeleton version and the operation sets, but not the input size: a search
trains on crops while costs are measured at the deployment resolution.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from casprof.errors import UserInputError
from casprof.ops import BACKBONE_SEARCH_OPS, MS_SEARCH_OPS

#: Bumped whenever the skeleton's code changes what a configuration builds.
SKELETON_VERSION = 1

#: The largest input side the toolkit accepts (a 8K frame); larger is treated as a typo.
MAX_SIDE = 8192


@dataclass(frozen=True)
class NetworkConfig:
    """Everything that fixes the CAS network skeleton, apart from the cells' operations.

    The defaults give a real-time network at 768x1536 (see the README for its MACs and
    parameters): output stride 16, 16 channels in the first cells, doubled at each reduction.
    """

    num_classes: int = 19
    in_channels: int = 3
    stem_channels: tuple[int, int, int] = (16, 16, 32)
    channels: int = 16
    nodes: int = 3
    ms_nodes: int = 6
    ms_channels: int = 16
    layout: str = "NNRNNRNN"

    def __post_init__(self) -> None:
        type_problems = _type_problems(self)
        if type_problems:
            raise UserInputError("Invalid network configuration: " + "; ".join(type_problems) + ".")
        object.__setattr__(self, "stem_channels", tuple(self.stem_channels))
        problems = []
        if self.num_classes < 1:
            problems.append("num_classes must be at least 1")
        if self.in_channels < 1:
            problems.append("in_channels must be at least 1")
        if len(self.stem_channels) != 3 or min(self.stem_channels) < 1:
            problems.append("stem_channels must be three positive integers")
        if self.channels < 2 or self.channels % 2:
            problems.append("channels must be a positive even integer")
        if self.nodes < 1 or self.ms_nodes < 1:
            problems.append("nodes and ms_nodes must be at least 1")
        if self.ms_channels < 1:
            problems.append("ms_channels must be at least 1")
        if not self.layout or set(self.layout) - {"N", "R"}:
            problems.append("layout must be a string of N and R")
        elif self.layout.count("N") < 2:
            problems.append("layout needs at least two normal cells (the multi-scale cell reads the second)")
        elif self.layout[0] == "R":
            problems.append("layout must start with a normal cell")
        if problems:
            raise UserInputError("Invalid network configuration: " + "; ".join(problems) + ".")

    # --- derived -----------------------------------------------------------------------
    @property
    def num_cells(self) -> int:
        return len(self.layout)

    @property
    def num_reductions(self) -> int:
        return self.layout.count("R")

    @property
    def total_stride(self) -> int:
        """Stride of the last cell's output: 4 from the stem, 2 per reduction cell."""
        return 4 * 2**self.num_reductions

    @property
    def ms_low_cell(self) -> int:
        """Index of the second normal cell, whose output feeds the multi-scale cell."""
        return [i for i, kind in enumerate(self.layout) if kind == "N"][1]

    def cell_counts(self) -> dict[str, int]:
        """How many cells of each type the network has."""
        return {"normal": self.layout.count("N"), "reduce": self.layout.count("R"), "ms": 1}

    def edges_per_cell(self, cell_type: str) -> int:
        """Edges of a fully connected cell (the probe networks and the supernet)."""
        n = self.ms_nodes if cell_type == "ms" else self.nodes
        return sum(2 + j for j in range(n))

    def intermediate_nodes(self, cell_type: str) -> int:
        return self.ms_nodes if cell_type == "ms" else self.nodes

    # --- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stem_channels"] = list(self.stem_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict):
            raise UserInputError("The network block must be a JSON object.")
        unknown = sorted(set(d) - known - {"fingerprint", "input_size", "skeleton_version"})
        if unknown:
            raise UserInputError(f"The network block has unknown fields: {', '.join(unknown)}.")
        try:
            return cls(**{k: d[k] for k in known if k in d})
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"The network block is malformed ({exc}).") from None

    def fingerprint(self) -> str:
        """Hash of the skeleton configuration and the operation sets (not the input size)."""
        payload = {
            "skeleton_version": SKELETON_VERSION,
            "config": self.to_dict(),
            "backbone_ops": list(BACKBONE_SEARCH_OPS),
            "ms_ops": list(MS_SEARCH_OPS),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def network_block(self, input_size: tuple[int, int] | None = None) -> dict[str, Any]:
        """The ``network`` block written into profiles and genotypes."""
        block = self.to_dict()
        block["skeleton_version"] = SKELETON_VERSION
        if input_size is not None:
            block["input_size"] = list(input_size)
        block["fingerprint"] = self.fingerprint()
        return block

    def check_resolution(self, height: int, width: int) -> tuple[int, int]:
        """Refuse an input size the network cannot take, with one clear sentence."""
        for side, value in (("height", height), ("width", width)):
            if value <= 0:
                raise UserInputError(f"The input {side} must be positive, got {value}.")
            if value % self.total_stride:
                raise UserInputError(
                    f"The input {side} {value} is not divisible by the network's total stride {self.total_stride}."
                )
            if value > MAX_SIDE:
                raise UserInputError(f"The input {side} {value} is larger than the supported maximum of {MAX_SIDE}.")
        return height, width


def _is_int(value: Any) -> bool:
    """A real integer: ``int`` but not ``bool`` (JSON's 16.0 and true are not channel counts)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _type_problems(config: NetworkConfig) -> list[str]:
    """What in ``config`` has the wrong type (checked before any value is compared)."""
    problems = [
        f"{name} must be an integer, got {getattr(config, name)!r}"
        for name in ("num_classes", "in_channels", "channels", "nodes", "ms_nodes", "ms_channels")
        if not _is_int(getattr(config, name))
    ]
    stem = config.stem_channels
    if not isinstance(stem, (tuple, list)) or not all(_is_int(c) for c in stem):
        problems.append(f"stem_channels must be three positive integers, got {stem!r}")
    if not isinstance(config.layout, str):
        problems.append(f"layout must be a string of N and R, got {config.layout!r}")
    return problems


DEFAULT_CONFIG = NetworkConfig()
DEFAULT_RESOLUTION: tuple[int, int] = (768, 1536)


def parse_size(text: str, what: str = "resolution", example: str = "768x1536") -> tuple[int, int]:
    """Parse ``HxW`` (``x`` or ``×``) into two integers; ``what`` names the value in the message."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise UserInputError(f"The {what} {text!r} is not of the form HxW, e.g. {example}.") from None


def parse_resolution(text: str, config: NetworkConfig = DEFAULT_CONFIG) -> tuple[int, int]:
    """Parse ``HxW`` (e.g. ``768x1536``) and check the network can take it."""
    return config.check_resolution(*parse_size(text))
