"""Cityscapes (fine annotations) in its standard layout, with the paper's search split by city.

Layout: ``root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` and
``root/gtFine/<split>/<city>/<name>_gtFine_labelIds.png``. Label ids map to the 19 training ids
of cityscapesscripts' ``labels.py``; everything else is ignored. The paper's search sets (§4)
divide the training set by city: with the cities sorted alphabetically, ``search_train`` is the
first half (aachen ... hanover: 9 cities, 1599 images) and ``search_val`` the rest (jena ...
zurich: 9 cities, 1376 images).
"""

from __future__ import annotations

from pathlib import Path

from casprof.errors import UserInputError
from search.data.files import Pair, PairedFiles, label_table, require_folders
from search.data.info import DatasetInfo, Split
from search.data.transforms import Transform

#: labelId -> trainId (cityscapesscripts ``labels.py``); every other id is ignored.
LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

_FOLDER = {
    Split.SEARCH_TRAIN: "train",
    Split.SEARCH_VAL: "train",
    Split.TRAIN: "train",
    Split.VAL: "val",
    Split.TEST: "test",
}
_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


def search_cities(cities: list[str], split: Split) -> list[str]:
    """The cities of a search split: the first (larger) half of the sorted cities, or the rest."""
    ordered = sorted(cities)
    if len(ordered) < 2:
        raise UserInputError(f"The Cityscapes search split needs at least 2 training cities, found {len(ordered)}.")
    half = (len(ordered) + 1) // 2
    return ordered[:half] if split is Split.SEARCH_TRAIN else ordered[half:]


def cityscapes_pairs(root: Path, split: Split) -> list[Pair]:
    """(image, label) paths of ``split``, sorted by city and name."""
    folder = _FOLDER[split]
    images, labels = root / "leftImg8bit" / folder, root / "gtFine" / folder
    require_folders(root, root / "leftImg8bit", images, root / "gtFine", labels)
    cities = sorted(d.name for d in images.iterdir() if d.is_dir())
    if not cities:
        raise UserInputError(f"The Cityscapes folder {images} holds no city folders.")
    if split in (Split.SEARCH_TRAIN, Split.SEARCH_VAL):
        cities = search_cities(cities, split)
    pairs = []
    for city in cities:
        for image in sorted((images / city).glob(f"*{_IMAGE_SUFFIX}")):
            require_folders(labels / city)
            label = labels / city / (image.name[: -len(_IMAGE_SUFFIX)] + _LABEL_SUFFIX)
            if not label.is_file():
                raise UserInputError(f"The Cityscapes image {image} has no label file {label}.")
            pairs.append((image, label))
    return pairs


class Cityscapes(PairedFiles):
    """Cityscapes ``split`` under ``root`` (labels in training ids, 255 ignored)."""

    def __init__(self, info: DatasetInfo, split: Split, transform: Transform, seed: int, root: Path) -> None:
        super().__init__(info, split, transform, seed, cityscapes_pairs(root, split), label_table(LABEL_TO_TRAIN_ID))
