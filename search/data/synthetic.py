"""Procedural street scenes with Cityscapes' 19 training labels: no download, deterministic.

Each scene is drawn back to front: sky, a skyline of buildings and tree lines, a road in
perspective with sidewalks and terrain, walls and fences, poles with traffic signs and lights,
vehicles on the road and persons on the sidewalks; about a third show the recording car's bonnet
at the bottom, labelled ``IGNORE_INDEX`` like Cityscapes' ego vehicle. Every class has its own
colour and texture (windows, paving, slats, leafy noise) and every image its own lighting and
pixel noise, so a small network must learn colour, texture and layout; some classes (traffic
light, train, motorcycle, rider) are rare. A sample depends only on (split, seed, index), and
rendering one at 128x256 takes about 3 ms.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from search.data.base import SegmentationDataset
from search.data.info import IGNORE_INDEX, DatasetInfo, Split
from search.data.transforms import Transform

#: The native size of a synthetic image (height, width): Cityscapes' 1:2 aspect ratio.
NATIVE_SIZE = (128, 256)

#: Samples per split (fixed, so runs are comparable).
SPLIT_SIZES = {
    Split.SEARCH_TRAIN: 200,
    Split.SEARCH_VAL: 200,
    Split.TRAIN: 500,
    Split.VAL: 100,
    Split.TEST: 100,
}

#: A different stream per split, so the splits never share a scene.
_SPLIT_STREAM = {split: number for number, split in enumerate(Split, start=1)}

# Training ids (Cityscapes order).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)

#: The base colour (RGB) of every class; objects and images vary around it.
BASE_COLOURS = np.array(
    [
        (82, 80, 88),  # road: dark asphalt
        (160, 146, 132),  # sidewalk: beige paving
        (120, 100, 90),  # building: brick/concrete
        (150, 148, 120),  # wall: concrete
        (120, 95, 60),  # fence: wooden slats
        (100, 104, 110),  # pole: grey metal
        (35, 35, 30),  # traffic light: black housing
        (225, 195, 30),  # traffic sign: yellow
        (55, 115, 40),  # vegetation: green
        (140, 160, 90),  # terrain: grass and soil
        (150, 190, 235),  # sky: light blue
        (170, 60, 70),  # person: clothing
        (200, 70, 30),  # rider: jacket
        (40, 70, 160),  # car: blue paint
        (215, 215, 220),  # truck: white box
        (230, 150, 30),  # bus: orange
        (120, 40, 130),  # train: purple tram
        (60, 60, 70),  # motorcycle: dark metal
        (30, 140, 140),  # bicycle: teal frame
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class _Canvas:
    """The label map and colour image being drawn; every paint writes both."""

    label: np.ndarray  # uint8 [H, W]
    colour: np.ndarray  # float32 [H, W, 3]
    rng: np.random.Generator

    @property
    def height(self) -> int:
        return self.label.shape[0]

    @property
    def width(self) -> int:
        return self.label.shape[1]

    def tint(self, cls: int, spread: float = 18.0) -> np.ndarray:
        return BASE_COLOURS[cls] + self.rng.normal(0.0, spread, 3).astype(np.float32)

    def rect(self, y0: float, y1: float, x0: float, x1: float, cls: int, colour: np.ndarray | None = None) -> None:
        ys, xs = self._span(y0, y1, self.height), self._span(x0, x1, self.width)
        if ys.start < ys.stop and xs.start < xs.stop:
            self.label[ys, xs] = cls
            self.colour[ys, xs] = self.tint(cls) if colour is None else colour

    def ellipse(self, cy: float, cx: float, ry: float, rx: float, cls: int, colour: np.ndarray | None = None) -> None:
        ys, xs = self._span(cy - ry, cy + ry + 1, self.height), self._span(cx - rx, cx + rx + 1, self.width)
        if ys.start >= ys.stop or xs.start >= xs.stop:
            return
        yy = (np.arange(ys.start, ys.stop, dtype=np.float32)[:, None] - cy) / max(ry, 0.5)
        xx = (np.arange(xs.start, xs.stop, dtype=np.float32)[None, :] - cx) / max(rx, 0.5)
        mask = yy * yy + xx * xx <= 1.0
        self.label[ys, xs][mask] = cls
        self.colour[ys, xs][mask] = self.tint(cls) if colour is None else colour

    @staticmethod
    def _span(lo: float, hi: float, limit: int) -> slice:
        return slice(min(max(round(lo), 0), limit), min(max(round(hi), 0), limit))


def render_scene(rng: np.random.Generator, size: tuple[int, int] = NATIVE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene: uint8 image [H, W, 3] and uint8 label [H, W] (training ids or ignore)."""
    h, w = size
    canvas = _Canvas(np.full((h, w), SKY, np.uint8), np.empty((h, w, 3), np.float32), rng)
    horizon = h * rng.uniform(0.42, 0.55)
    _sky(canvas, horizon)
    _skyline(canvas, horizon)
    road_at = _ground(canvas, horizon)
    _roadside(canvas, horizon)
    _street_furniture(canvas, horizon, road_at)
    _traffic(canvas, horizon, road_at)
    if rng.random() < 0.3:
        _ego_vehicle(canvas)
    image = _textured(canvas)
    return image, canvas.label


def _sky(c: _Canvas, horizon: float) -> None:
    top, bottom = c.tint(SKY, 12), BASE_COLOURS[SKY] + np.float32(35)
    t = np.clip(np.arange(c.height, dtype=np.float32) / max(horizon, 1.0), 0, 1)[:, None, None]
    c.colour[:] = (1 - t) * top + t * bottom


def _skyline(c: _Canvas, horizon: float) -> None:
    x = 0.0
    while x < c.width:
        seg = c.width * c.rng.uniform(0.08, 0.25)
        kind = c.rng.random()
        if kind < 0.7:
            top = horizon - c.height * c.rng.uniform(0.12, 0.5)
            c.rect(top, horizon + 1, x, x + seg, BUILDING, c.tint(BUILDING, 25))
        elif kind < 0.92:
            crown = c.height * c.rng.uniform(0.12, 0.3)
            c.ellipse(horizon - crown * 0.6, x + seg / 2, crown, seg * 0.6, VEGETATION)
            c.rect(horizon - crown * 0.6, horizon + 1, x, x + seg, VEGETATION)
        x += seg


def _ground(c: _Canvas, horizon: float) -> np.ndarray:
    """Road, sidewalks and terrain below the horizon; returns each row's road span [H, 2]."""
    h, w = c.height, c.width
    rows = np.arange(h, dtype=np.float32)
    depth = np.clip((rows - horizon) / max(h - horizon, 1.0), 0.0, 1.0)  # 0 at the horizon, 1 at the bottom
    vx = w * c.rng.uniform(0.38, 0.62)
    left = vx - depth * w * c.rng.uniform(0.3, 0.55)
    right = vx + depth * w * c.rng.uniform(0.3, 0.55)
    walk = depth * w * c.rng.uniform(0.1, 0.2)
    xs = np.arange(w, dtype=np.float32)[None, :]
    below = (rows >= horizon)[:, None]
    on_road = below & (xs >= left[:, None]) & (xs < right[:, None])
    on_walk = below & ~on_road & (xs >= (left - walk)[:, None]) & (xs < (right + walk)[:, None])
    beyond = below & ~on_road & ~on_walk
    outer = TERRAIN if c.rng.random() < 0.6 else SIDEWALK
    for mask, cls in ((on_road, ROAD), (on_walk, SIDEWALK), (beyond, outer)):
        c.label[mask] = cls
        c.colour[mask] = c.tint(cls, 12)
    # Lane markings: white dashes in the middle of the road (still labelled road).
    centre = ((left + right) / 2)[:, None]
    dash = below & (np.abs(xs - centre) < 0.6 + depth[:, None] * 2.5) & ((rows // 6) % 2 == 0)[:, None]
    c.colour[dash & on_road] = np.float32(215)
    return np.stack([left, right], axis=1)


def _roadside(c: _Canvas, horizon: float) -> None:
    """Walls and fences standing on the horizon line, trees in front of the skyline."""
    h, w = c.height, c.width
    for cls, chance in ((WALL, 0.45), (FENCE, 0.45)):
        if c.rng.random() < chance:
            x0 = w * c.rng.uniform(0.0, 0.7)
            top = horizon - h * c.rng.uniform(0.04, 0.1)
            c.rect(top, horizon + h * 0.02, x0, x0 + w * c.rng.uniform(0.1, 0.35), cls)
    for _ in range(c.rng.integers(0, 3)):
        cx, r = w * c.rng.uniform(0, 1), h * c.rng.uniform(0.08, 0.18)
        c.ellipse(horizon - r * 1.2, cx, r, r * 1.1, VEGETATION)


def _street_furniture(c: _Canvas, horizon: float, road_at: np.ndarray) -> None:
    """Poles on the sidewalks, some carrying a traffic sign or a traffic light."""
    h = c.height
    for _ in range(c.rng.integers(1, 5)):
        base = horizon + (h - horizon) * c.rng.uniform(0.05, 0.6)
        row = int(min(base, h - 1))
        side = c.rng.random() < 0.5
        x = road_at[row, 0] - c.rng.uniform(2, 6) if side else road_at[row, 1] + c.rng.uniform(2, 6)
        scale = 0.5 + (base - horizon) / max(h - horizon, 1.0)
        top = base - h * c.rng.uniform(0.25, 0.4) * scale
        thick = max(1.0, 1.5 * scale)
        c.rect(top, base, x, x + thick, POLE)
        kind = c.rng.random()
        if kind < 0.45:
            s = 4 * scale + 1
            c.rect(top - s, top + s * 0.6, x - s, x + s, SIGN)
        elif kind < 0.65:
            bw, bh = 2.5 * scale + 1, 6 * scale + 2
            c.rect(top - bh, top, x - bw, x + bw, LIGHT)
            lamp = np.array([(230, 40, 30), (240, 180, 20), (40, 220, 80)][c.rng.integers(0, 3)], np.float32)
            c.ellipse(top - bh / 2, x, bw * 0.5, bw * 0.5, LIGHT, lamp)


#: Road users: at most how many per scene, and how often the class appears at all.
_TRAFFIC = {
    CAR: (5, 1.0), TRUCK: (2, 0.4), BUS: (2, 0.4), TRAIN: (1, 0.4),
    MOTORCYCLE: (2, 0.4), BICYCLE: (2, 1.0), PERSON: (4, 1.0),
}  # fmt: skip


def _traffic(c: _Canvas, horizon: float, road_at: np.ndarray) -> None:
    """Vehicles on the road and persons on the sidewalks, far ones first."""
    h, w = c.height, c.width
    objects: list[tuple[float, int]] = []
    for cls, (most, chance) in _TRAFFIC.items():
        count = int(c.rng.integers(0, most + 1)) if c.rng.random() < chance else 0
        objects += [(horizon + (h - horizon) * c.rng.uniform(0.08, 1.0), cls) for _ in range(count)]
    for base, cls in sorted(objects):
        row = int(min(base, h - 1))
        left, right = road_at[row]
        scale = (base - horizon) / max(h - horizon, 1.0) * w / 256
        if cls == PERSON:
            gap = c.rng.uniform(2, 10) * (1 + scale)
            x = left - gap if c.rng.random() < 0.5 else right + gap
            _person(c, base, x, 26 * scale + 4, PERSON)
        else:
            x = c.rng.uniform(left, max(left + 1, right))
            _vehicle(c, base, x, scale, cls)


def _ego_vehicle(c: _Canvas) -> None:
    """The recording car's bonnet along the bottom edge, ignored like Cityscapes' ego vehicle."""
    h, w = c.height, c.width
    bonnet = np.array((25, 28, 35), np.float32) + c.rng.normal(0.0, 8.0, 3).astype(np.float32)
    c.ellipse(h, w / 2, h * c.rng.uniform(0.06, 0.14), w * c.rng.uniform(0.45, 0.7), IGNORE_INDEX, bonnet)


def _person(c: _Canvas, base: float, x: float, height: float, cls: int) -> None:
    body = c.tint(cls, 30)
    c.ellipse(base - height * 0.45, x, height * 0.45, height * 0.14, cls, body)
    c.ellipse(base - height * 0.95, x, height * 0.1, height * 0.08, cls, np.array((210, 170, 140), np.float32))


def _vehicle(c: _Canvas, base: float, x: float, scale: float, cls: int) -> None:
    if cls in (MOTORCYCLE, BICYCLE):
        wheel = 4 * scale + 1
        tyre = np.full(3, 25, np.float32)
        c.ellipse(base - wheel, x - wheel * 1.4, wheel, wheel, cls, tyre)
        c.ellipse(base - wheel, x + wheel * 1.4, wheel, wheel, cls, tyre)
        c.rect(base - wheel * 2.2, base - wheel * 0.8, x - wheel * 1.4, x + wheel * 1.4, cls)
        _person(c, base - wheel * 1.6, x, 18 * scale + 3, RIDER)
        return
    width, height = {CAR: (60, 28), TRUCK: (80, 55), BUS: (100, 60), TRAIN: (150, 62)}[cls]
    width, height = width * scale + 3, height * scale + 2
    c.rect(base - height, base, x - width / 2, x + width / 2, cls)
    glass = np.array((45, 55, 70), np.float32)
    c.rect(base - height * 0.85, base - height * 0.55, x - width * 0.4, x + width * 0.4, cls, glass)
    wheel = np.array((20, 20, 20), np.float32)
    c.rect(base - height * 0.18, base, x - width * 0.45, x - width * 0.25, cls, wheel)
    c.rect(base - height * 0.18, base, x + width * 0.25, x + width * 0.45, cls, wheel)


#: Per class: which fixed pattern (see ``_patterns``) and how strong its coarse blotches are.
_PATTERN_OF = np.zeros(256, np.intp)
_PATTERN_OF[[BUILDING, SIDEWALK, FENCE, VEGETATION]] = (1, 2, 3, 4)
_BLOTCHES = np.zeros(256, np.float32)
_BLOTCHES[[VEGETATION, TERRAIN, ROAD, WALL]] = (22.0, 15.0, 6.0, 8.0)


@functools.lru_cache(maxsize=8)
def _patterns(h: int, w: int) -> np.ndarray:
    """Fixed textures [5, H, W]: none, windows, paving joints, fence slats, leaves."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack(
        [
            np.zeros((h, w)),
            -45.0 * (((yy % 8) < 4) & ((xx % 7) < 3)),
            -25.0 * (((yy % 5) == 0) | ((xx % 9) == 0)),
            -40.0 * ((xx % 4) < 2),
            18.0 * ((xx + yy) % 3 == 0),
        ]
    ).astype(np.float32)


def _textured(c: _Canvas) -> np.ndarray:
    """Add each class's texture, the image's lighting and pixel noise; quantize to uint8."""
    h, w = c.height, c.width
    label, rng = c.label, c.rng
    coarse = rng.standard_normal((h // 8 + 1, w // 8 + 1), dtype=np.float32)
    blotches = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:h, :w]
    fixed = np.take_along_axis(_patterns(h, w), _PATTERN_OF[label][None], axis=0)[0]
    texture = fixed + _BLOTCHES[label] * blotches
    colour = c.colour + texture[:, :, None]
    colour *= np.float32(rng.uniform(0.75, 1.2))
    colour += rng.standard_normal(colour.shape, dtype=np.float32) * np.float32(7.0)
    return np.clip(colour, 0, 255).astype(np.uint8)


class SyntheticScenes(SegmentationDataset):
    """The built-in dataset: ``SPLIT_SIZES[split]`` procedural scenes of ``size`` pixels."""

    def __init__(
        self, info: DatasetInfo, split: Split, transform: Transform, seed: int = 0, size: tuple[int, int] = NATIVE_SIZE
    ) -> None:
        super().__init__(info, split, transform, seed)
        self.size = size
        transform.check_fits(size, "synthetic")

    def __len__(self) -> int:
        return SPLIT_SIZES[self.split]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is out of range for {len(self)} samples")
        rng = np.random.default_rng([_SPLIT_STREAM[self.split], self.seed, index])
        return render_scene(rng, self.size)

    def sample_id(self, index: int) -> str:
        return f"synthetic/{self.split.value}/seed{self.seed}/{index}"


def measure_statistics(dataset: SyntheticScenes) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``dataset``'s raw images, in [0, 1] units."""
    total = np.zeros(3)
    squares = np.zeros(3)
    pixels = 0
    for i in range(len(dataset)):
        image = dataset.load(i)[0].reshape(-1, 3).astype(np.float64) / 255.0
        total += image.sum(0)
        squares += (image * image).sum(0)
        pixels += image.shape[0]
    mean = total / pixels
    std = np.sqrt(squares / pixels - mean * mean)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
