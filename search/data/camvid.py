"""CamVid in SegNet's layout: ``root/{train,trainannot,val,valannot,test,testannot}/*.png``.

Labels 0..10 are the 11 classes; 11 ("void") and anything else is ignored. The paper follows
SegNet's 468/233 split, so ``train`` is train + val (367 + 101 images) and ``test`` the 233 test
images; ``search_train`` and ``search_val`` are the train and val folders. ``val`` is the val
folder, which ``train`` contains: report test-set figures for a network trained on ``train``.
"""

from __future__ import annotations

from pathlib import Path

from casprof.errors import UserInputError
from search.data.files import Pair, PairedFiles, label_table, require_folders
from search.data.info import DatasetInfo, Split
from search.data.transforms import Transform

NUM_CLASSES = 11

_FOLDERS = {
    Split.SEARCH_TRAIN: ("train",),
    Split.SEARCH_VAL: ("val",),
    Split.TRAIN: ("train", "val"),
    Split.VAL: ("val",),
    Split.TEST: ("test",),
}


def camvid_pairs(root: Path, split: Split) -> list[Pair]:
    """(image, label) paths of ``split``: each image with the same-named file in ``<folder>annot``."""
    pairs = []
    for folder in _FOLDERS[split]:
        images, labels = root / folder, root / f"{folder}annot"
        require_folders(root, images, labels)
        for image in sorted(images.glob("*.png")):
            label = labels / image.name
            if not label.is_file():
                raise UserInputError(f"The CamVid image {image} has no label file {label}.")
            pairs.append((image, label))
    return pairs


class CamVid(PairedFiles):
    """CamVid ``split`` under ``root`` (11 classes, void = 255)."""

    def __init__(self, info: DatasetInfo, split: Split, transform: Transform, seed: int, root: Path) -> None:
        table = label_table({i: i for i in range(NUM_CLASSES)})
        super().__init__(info, split, transform, seed, camvid_pairs(root, split), table)
