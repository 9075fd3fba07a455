"""Segmentation datasets (synthetic, Cityscapes, CamVid), transforms and resumable batches.

The contract other packages import::

    from search.data import (IGNORE_INDEX, DatasetName, Split, DatasetInfo, Transform,
                             dataset_info, build_dataset, batches)
"""

from search.data.base import SegmentationDataset
from search.data.build import build_dataset
from search.data.info import IGNORE_INDEX, DatasetInfo, DatasetName, Split, dataset_info
from search.data.sampling import BatchPlan, batch_indices, batches
from search.data.transforms import Transform

__all__ = [
    "IGNORE_INDEX",
    "BatchPlan",
    "DatasetInfo",
    "DatasetName",
    "SegmentationDataset",
    "Split",
    "Transform",
    "batch_indices",
    "batches",
    "build_dataset",
    "dataset_info",
]
