"""Colour palettes of the datasets' classes (ignore label 255 is black)."""

from __future__ import annotations

import colorsys

import numpy as np

#: The Cityscapes trainId colours (cityscapesscripts' labels.py); the synthetic scenes use the same classes.
CITYSCAPES = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
#: The CamVid colours of SegNet's 11 classes (sky, building, pole, road, sidewalk, tree, sign, fence, car, pedestrian, bicyclist).
CAMVID = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
PALETTES = {"cityscapes": CITYSCAPES, "synthetic": CITYSCAPES, "camvid": CAMVID}


def palette(dataset: str, num_classes: int) -> np.ndarray:
    """A ``uint8 [256, 3]`` lookup table: the dataset's colours, evenly spaced hues otherwise, black elsewhere."""
    colours = PALETTES.get(dataset, ())
    if len(colours) != num_classes:
        colours = tuple(
            tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / num_classes, 0.7, 0.9)) for i in range(num_classes)
        )
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(colours)] = np.array(colours, dtype=np.uint8)
    return table


def colourize(label: np.ndarray, table: np.ndarray) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 picture of a label map (values outside 0..255 are clipped)."""
    return table[np.clip(label, 0, 255).astype(np.int64)]
