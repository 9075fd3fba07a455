"""Dataset names, splits, class tables and normalization statistics (no file access here)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

from casprof.errors import UserInputError

#: The label of pixels that count for nothing (Cityscapes "ignore", CamVid "void", padding).
IGNORE_INDEX = 255


class DatasetName(str, enum.Enum):
    """The datasets the toolkit reads."""

    SYNTHETIC = "synthetic"
    CITYSCAPES = "cityscapes"
    CAMVID = "camvid"


class Split(str, enum.Enum):
    """Which part of a dataset; the two ``search_*`` splits are the paper's search sets (§4)."""

    SEARCH_TRAIN = "search_train"  # the search's "training set" (Cityscapes: first 9 train cities)
    SEARCH_VAL = "search_val"  # the search's "validation set" (Cityscapes: the other 9 train cities)
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset: classes and the input normalization."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
        }


#: Cityscapes' 19 evaluation classes in trainId order (cityscapesscripts ``labels.py``).
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

#: CamVid's 11 classes in the SegNet label order (label 11, "void", is ignored).
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign/symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip

#: ImageNet statistics (torchvision): the real datasets are normalized like the ImageNet
#: pre-training the paper uses (§4.1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Measured over the 200 images of the synthetic search_train split (seed 0) with
#: ``search.data.synthetic.measure_statistics``; tests/test_data.py checks they still hold.
SYNTHETIC_MEAN = (0.4475, 0.4797, 0.4462)
SYNTHETIC_STD = (0.1971, 0.2186, 0.2712)

_INFOS = {
    DatasetName.SYNTHETIC: DatasetInfo("synthetic", 19, CITYSCAPES_CLASSES, SYNTHETIC_MEAN, SYNTHETIC_STD),
    DatasetName.CITYSCAPES: DatasetInfo("cityscapes", 19, CITYSCAPES_CLASSES, IMAGENET_MEAN, IMAGENET_STD),
    DatasetName.CAMVID: DatasetInfo("camvid", 11, CAMVID_CLASSES, IMAGENET_MEAN, IMAGENET_STD),
}


Choice = TypeVar("Choice", DatasetName, Split)


def _parse(kind: type[Choice], value: Choice | str, what: str) -> Choice:
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise UserInputError(f"Unknown {what} {value!r}; choose one of {known}.") from None


def parse_dataset_name(name: DatasetName | str) -> DatasetName:
    """The :class:`DatasetName` for ``name``; one clear sentence when it is unknown."""
    return _parse(DatasetName, name, "dataset")


def parse_split(split: Split | str) -> Split:
    """The :class:`Split` for ``split``; one clear sentence when it is unknown."""
    return _parse(Split, split, "dataset split")


def dataset_info(name: DatasetName | str) -> DatasetInfo:
    """Classes and normalization statistics of the dataset ``name``."""
    return _INFOS[parse_dataset_name(name)]
