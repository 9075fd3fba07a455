"""Resize, random scale, random crop and random flip for an (image, label) pair.

Images are resized bilinearly and labels with nearest neighbour (so no label is invented at
class borders). Randomness comes from the ``numpy.random.Generator`` the caller passes, which
is what makes a batch a pure function of its seed and iteration (see ``sampling.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from casprof.errors import UserInputError
from search.data.info import IGNORE_INDEX

Size = tuple[int, int]


def _size_or_none(value: Any, what: str) -> Size | None:
    if value is None:
        return None
    size = tuple(int(v) for v in value)
    if len(size) != 2 or min(size) < 1:
        raise UserInputError(f"The {what} size must be two positive integers (height, width), not {value!r}.")
    return size  # type: ignore[return-value]


@dataclass(frozen=True)
class Transform:
    """What is done to every sample, in this order: resize, random scale, random crop, random flip.

    ``resize`` is deterministic; ``scale`` draws a factor uniformly from the range; ``crop``
    takes a random (height, width) window, padding the normalized image with 0 and the label
    with ``IGNORE_INDEX`` where a scaled image is smaller than the crop; ``flip`` mirrors half
    of the samples horizontally.
    """

    resize: Size | None = None
    scale: tuple[float, float] = (1.0, 1.0)
    crop: Size | None = None
    flip: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", _size_or_none(self.resize, "resize"))
        object.__setattr__(self, "crop", _size_or_none(self.crop, "crop"))
        lo, hi = (float(s) for s in self.scale)
        if not 0.0 < lo <= hi:
            raise UserInputError(f"The scale range must be two positive factors, low <= high, not {self.scale!r}.")
        object.__setattr__(self, "scale", (lo, hi))
        object.__setattr__(self, "flip", bool(self.flip))

    @property
    def is_random(self) -> bool:
        return self.scale[0] != self.scale[1] or self.crop is not None or self.flip

    def check_fits(self, size: Size, what: str) -> None:
        """Refuse a crop larger than an image of ``size`` after the resize and the smallest scale."""
        if self.crop is None:
            return
        h, w = self.resize or size
        lo = self.scale[0]
        smallest = (round(h * lo), round(w * lo))
        if self.crop[0] > smallest[0] or self.crop[1] > smallest[1]:
            raise UserInputError(
                f"The crop {self.crop[0]}x{self.crop[1]} is larger than the {what} images "
                f"({smallest[0]}x{smallest[1]} after resize and the smallest scale {lo:g})."
            )

    def apply(
        self,
        image: np.ndarray,
        label: np.ndarray,
        rng: np.random.Generator,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform a uint8 [H, W, 3] image and a uint8 [H, W] label into normalized tensors.

        Returns a float32 [3, h, w] image ((pixel / 255 - mean) / std) and an int64 [h, w] label.
        """
        if self.resize is not None:
            image, label = _resize(image, label, self.resize)
        lo, hi = self.scale
        factor = float(rng.uniform(lo, hi)) if hi > lo else lo
        if factor != 1.0:
            h, w = label.shape
            image, label = _resize(image, label, (max(1, round(h * factor)), max(1, round(w * factor))))
        img = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255.0)
        img = (img - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        lab = torch.from_numpy(np.require(label, requirements=["C", "W"])).long()
        if self.crop is not None:
            img, lab = _random_crop(img, lab, self.crop, rng)
        if self.flip and rng.random() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        return img.contiguous(), lab.contiguous()

    def to_dict(self) -> dict[str, Any]:
        return {
            "resize": list(self.resize) if self.resize else None,
            "scale": list(self.scale),
            "crop": list(self.crop) if self.crop else None,
            "flip": self.flip,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        scale = tuple(d.get("scale", (1.0, 1.0)))
        return cls(resize=d.get("resize"), scale=scale, crop=d.get("crop"), flip=d.get("flip", False))


def _resize(image: np.ndarray, label: np.ndarray, size: Size) -> tuple[np.ndarray, np.ndarray]:
    if label.shape == size:
        return image, label
    h, w = size
    img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    lab = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
    return img, lab


def _random_crop(
    image: torch.Tensor, label: torch.Tensor, crop: Size, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    ch, cw = crop
    h, w = label.shape
    if h < ch or w < cw:
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        image = torch.nn.functional.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        label = torch.nn.functional.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        h, w = label.shape
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    return image[:, y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]
