"""The common shape of every dataset: load a uint8 sample, then transform and normalize it."""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch.utils.data import Dataset

from search.data.info import DatasetInfo, Split
from search.data.transforms import Transform


class SegmentationDataset(Dataset, abc.ABC):
    """A map-style dataset of (image float32 [3, H, W], label int64 [H, W]) pairs.

    Subclasses implement :meth:`load` (the raw uint8 sample, labels already in training ids with
    ``IGNORE_INDEX`` for ignored pixels) and :meth:`sample_id`. ``dataset[i]`` applies the
    transform with a generator seeded by ``(seed, i)``; :func:`search.data.batches` passes its
    own generator to :meth:`sample` so that augmentation changes from epoch to epoch.
    """

    def __init__(self, info: DatasetInfo, split: Split, transform: Transform, seed: int) -> None:
        self.info = info
        self.split = split
        self.transform = transform
        self.seed = int(seed)

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed sample: uint8 image [H, W, 3] and uint8 label [H, W]."""

    @abc.abstractmethod
    def sample_id(self, index: int) -> str:
        """A name that identifies sample ``index`` (a file stem, or split and index)."""

    def sample(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` transformed with randomness drawn from ``rng``."""
        image, label = self.load(index)
        return self.transform.apply(image, label, rng, self.info.mean, self.info.std)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is out of range for {len(self)} samples")
        return self.sample(index, np.random.default_rng([self.seed, index]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split.value!r}, samples={len(self)}, transform={self.transform})"
