"""``build_dataset``: one entry point from (name, split, root, transform, seed) to a dataset."""

from __future__ import annotations

from pathlib import Path

from casprof.errors import UserInputError
from search.data.base import SegmentationDataset
from search.data.info import DatasetName, Split, dataset_info, parse_dataset_name, parse_split
from search.data.transforms import Transform


def build_dataset(
    name: DatasetName | str,
    split: Split | str,
    *,
    root: Path | None = None,
    transform: Transform = Transform(),
    seed: int = 0,
) -> SegmentationDataset:
    """The ``split`` of dataset ``name`` (``root`` is required for cityscapes and camvid)."""
    which, part = parse_dataset_name(name), parse_split(split)
    if seed < 0:
        raise UserInputError(f"The dataset seed must be a non-negative integer, not {seed}.")
    info = dataset_info(which)
    if which is DatasetName.SYNTHETIC:
        from search.data.synthetic import SyntheticScenes

        return SyntheticScenes(info, part, transform, seed)
    if root is None:
        raise UserInputError(f"The {which.value} dataset needs a data root folder (--data-root).")
    if which is DatasetName.CITYSCAPES:
        from search.data.cityscapes import Cityscapes

        return Cityscapes(info, part, transform, seed, Path(root))
    from search.data.camvid import CamVid

    return CamVid(info, part, transform, seed, Path(root))
