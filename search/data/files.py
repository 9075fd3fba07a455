"""Datasets stored as (image PNG, label PNG) file pairs, with a lookup table to training ids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from casprof.errors import UserInputError
from search.data.base import SegmentationDataset
from search.data.info import IGNORE_INDEX, DatasetInfo, Split
from search.data.transforms import Transform

Pair = tuple[Path, Path]


def require_folders(*folders: Path) -> None:
    """Refuse, naming the first of ``folders`` (outermost first) that is not a directory."""
    for folder in folders:
        if not folder.is_dir():
            raise UserInputError(f"The dataset folder {folder} does not exist.")


def label_table(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 lookup table: ``mapping`` where given, ``IGNORE_INDEX`` elsewhere."""
    table = np.full(256, IGNORE_INDEX, np.uint8)
    for raw, train_id in mapping.items():
        table[raw] = train_id
    return table


def _read(path: Path, mode: str | None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode) if mode else img)
    except (OSError, UnidentifiedImageError, ValueError):
        raise UserInputError(f"The dataset file {path} cannot be read as an image.") from None


class PairedFiles(SegmentationDataset):
    """A dataset of ``pairs`` read with PIL; raw label values pass through ``table``."""

    def __init__(
        self, info: DatasetInfo, split: Split, transform: Transform, seed: int, pairs: Sequence[Pair], table: np.ndarray
    ) -> None:
        super().__init__(info, split, transform, seed)
        if not pairs:
            raise UserInputError(f"The {info.name} {split.value} split has no images.")
        self.pairs = list(pairs)
        self.table = table
        with Image.open(self.pairs[0][0]) as first:
            transform.check_fits((first.height, first.width), info.name)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image, raw = _read(image_path, "RGB"), _read(label_path, None)
        if raw.ndim != 2:
            raise UserInputError(f"The label file {label_path} is not a single-channel label image.")
        if raw.shape != image.shape[:2]:
            raise UserInputError(
                f"The label file {label_path} is {raw.shape[0]}x{raw.shape[1]} but its image is "
                f"{image.shape[0]}x{image.shape[1]}."
            )
        if raw.dtype != np.uint8:  # e.g. a 16-bit PNG: values beyond 255 are no class of ours
            raw = np.clip(raw, 0, 255).astype(np.uint8)
        return image, self.table[raw]

    def sample_id(self, index: int) -> str:
        return self.pairs[index][0].stem
