"""Datasets: the synthetic scenes, the Cityscapes and CamVid loaders on generated trees, transforms, batches."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from casprof.errors import UserInputError
from search.data import (
    IGNORE_INDEX,
    DatasetName,
    Split,
    Transform,
    batch_indices,
    batches,
    build_dataset,
    dataset_info,
)
from search.data.cityscapes import LABEL_TO_TRAIN_ID, search_cities
from search.data.info import SYNTHETIC_MEAN, SYNTHETIC_STD
from search.data.synthetic import NATIVE_SIZE, SPLIT_SIZES, measure_statistics

SMALL = Transform(resize=(32, 64))


# --- names and infos ---------------------------------------------------------------------------


def test_dataset_infos() -> None:
    city = dataset_info("cityscapes")
    assert city.num_classes == len(city.class_names) == 19
    assert city.class_names[0] == "road" and city.class_names[10] == "sky" and city.class_names[18] == "bicycle"
    assert dataset_info(DatasetName.SYNTHETIC).class_names == city.class_names
    camvid = dataset_info("camvid")
    assert camvid.num_classes == len(camvid.class_names) == 11
    assert camvid.to_dict()["class_names"][3] == "road"


@pytest.mark.parametrize("call", [lambda: dataset_info("kitti"), lambda: build_dataset("synthetic", "training")])
def test_unknown_names(call) -> None:
    with pytest.raises(UserInputError, match="choose one of"):
        call()


# --- synthetic -----------------------------------------------------------------------------------


def test_synthetic_sizes_and_determinism() -> None:
    for split, size in SPLIT_SIZES.items():
        assert len(build_dataset("synthetic", split)) == size
    a, b = build_dataset("synthetic", "search_train"), build_dataset("synthetic", Split.SEARCH_TRAIN)
    image, label = a.load(7)
    assert image.shape == (*NATIVE_SIZE, 3) and image.dtype == np.uint8 and label.shape == NATIVE_SIZE
    again = b.load(7)
    assert np.array_equal(image, again[0]) and np.array_equal(label, again[1])
    assert torch.equal(a[7][0], b[7][0])
    other_seed = build_dataset("synthetic", "search_train", seed=1).load(7)
    assert not np.array_equal(image, other_seed[0])
    assert not np.array_equal(image, a.load(8)[0])


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def test_synthetic_splits_are_disjoint() -> None:
    seen: dict[str, Split] = {}
    for split in Split:
        ds = build_dataset("synthetic", split)
        for i in range(0, len(ds), 5):
            key = _digest(ds.load(i)[0])
            assert key not in seen, f"{split.value}[{i}] repeats a scene of {seen.get(key)}"
            seen[key] = split


def test_synthetic_labels_cover_every_class() -> None:
    ds = build_dataset("synthetic", "search_train")
    counts = np.zeros(256, np.int64)
    for i in range(60):
        counts += np.bincount(ds.load(i)[1].ravel(), minlength=256)
    assert counts[19:255].sum() == 0  # the 19 training ids, and the ignored ego vehicle
    assert 0 < counts[IGNORE_INDEX] < 0.05 * counts.sum()
    share = counts[:19] / counts[:19].sum()
    assert (share > 0).all()
    assert share[[0, 2, 10]].min() > 0.05  # road, building, sky are common
    assert share[[6, 16, 17]].max() < 0.03  # traffic light, train, motorcycle are rare


def test_synthetic_layout_is_street_like() -> None:
    ds = build_dataset("synthetic", "val")
    top = bottom = 0
    for i in range(20):
        label = ds.load(i)[1]
        top += (label[:10] == 10).mean() + (label[:10] == 2).mean()  # sky or building on top
        bottom += (label[-10:] <= 1).mean() + (label[-10:] == 9).mean()  # road, sidewalk, terrain below
    assert top / 20 > 0.8 and bottom / 20 > 0.6


def test_synthetic_normalization_statistics_are_current() -> None:
    mean, std = measure_statistics(build_dataset("synthetic", "search_train"))
    assert np.allclose(mean, SYNTHETIC_MEAN, atol=1e-3) and np.allclose(std, SYNTHETIC_STD, atol=1e-3)


@pytest.fixture()
def one_thread():
    """Tiny convolutions run fastest on one thread, above all on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_synthetic_is_learnable(one_thread) -> None:
    """A tiny conv net trained for 40 SGD steps on search_train has a much lower search_val loss."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=2, dilation=2), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 19, 1),
    )  # fmt: skip
    train = build_dataset("synthetic", "search_train", transform=Transform(resize=(32, 64), flip=True))
    val = build_dataset("synthetic", "search_val", transform=SMALL)
    val_images, val_labels = next(batches(val, batch_size=32, seed=0))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)

    def val_loss() -> float:
        net.eval()
        with torch.no_grad():
            return float(loss_fn(net(val_images), val_labels))

    before = val_loss()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    stream = batches(train, batch_size=8, seed=0)
    net.train()
    for _ in range(40):
        images, labels = next(stream)
        opt.zero_grad()
        loss_fn(net(images), labels).backward()
        opt.step()
    after = val_loss()
    print(f"search_val loss {before:.3f} -> {after:.3f}")
    assert after < 0.5 * before, (before, after)


# --- transforms ------------------------------------------------------------------------------------


def _pair(h: int = 20, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = np.zeros((h, w), np.uint8)
    label[:, w // 2 :] = 3
    label[: h // 4] = 7
    return image, label


MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_transform_identity_normalizes() -> None:
    image, label = _pair()
    img, lab = Transform().apply(image, label, np.random.default_rng(0), MEAN, STD)
    assert img.dtype == torch.float32 and lab.dtype == torch.int64
    assert torch.allclose(img, (torch.from_numpy(image).permute(2, 0, 1) / 255.0 - 0.5) / 0.25)
    assert torch.equal(lab, torch.from_numpy(label).long())


def test_transform_resize_keeps_label_values() -> None:
    image, label = _pair()
    img, lab = Transform(resize=(30, 50)).apply(image, label, np.random.default_rng(0), MEAN, STD)
    assert img.shape == (3, 30, 50) and lab.shape == (30, 50)
    assert set(lab.unique().tolist()) == {0, 3, 7}  # nearest neighbour: no invented class at borders


def test_transform_scale_crop_flip() -> None:
    image, label = _pair()
    scaled = Transform(scale=(0.5, 2.0))
    shapes = {scaled.apply(image, label, np.random.default_rng(s), MEAN, STD)[1].shape for s in range(6)}
    assert len(shapes) > 1 and all(10 <= h <= 40 for h, _ in shapes)
    crop = Transform(crop=(8, 16))
    crops = [crop.apply(image, label, np.random.default_rng(s), MEAN, STD) for s in range(6)]
    assert all(img.shape == (3, 8, 16) and lab.shape == (8, 16) for img, lab in crops)
    assert len({img.sum().item() for img, _ in crops}) > 1  # the window moves
    base = Transform().apply(image, label, np.random.default_rng(0), MEAN, STD)
    flips = [Transform(flip=True).apply(image, label, np.random.default_rng(s), MEAN, STD) for s in range(10)]
    mirrored = [torch.equal(lab, base[1].flip(-1)) and torch.equal(img, base[0].flip(-1)) for img, lab in flips]
    unchanged = [torch.equal(lab, base[1]) for _, lab in flips]
    assert any(mirrored) and any(unchanged) and all(m != u for m, u in zip(mirrored, unchanged))


def test_transform_pads_a_small_image() -> None:
    image, label = _pair(6, 10)
    img, lab = Transform(crop=(8, 12)).apply(image, label, np.random.default_rng(0), MEAN, STD)
    assert lab.shape == (8, 12)
    assert (lab[6:] == IGNORE_INDEX).all() and (lab[:, 10:] == IGNORE_INDEX).all() and (img[:, 6:] == 0).all()
    assert (lab[:6, :10] != IGNORE_INDEX).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"crop": (0, 4)}, "two positive integers"),
        ({"resize": (4,)}, "two positive integers"),
        ({"scale": (2.0, 1.0)}, "low <= high"),
    ],
)
def test_transform_bad_settings(kwargs, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        Transform(**kwargs)


def test_transform_round_trips() -> None:
    t = Transform(resize=(64, 128), scale=(0.5, 1.5), crop=(32, 32), flip=True)
    assert Transform.from_dict(t.to_dict()) == t


def test_crop_larger_than_images_is_refused() -> None:
    with pytest.raises(UserInputError, match="larger than the synthetic images"):
        build_dataset("synthetic", "train", transform=Transform(crop=(256, 256)))
    with pytest.raises(UserInputError, match="smallest scale 0.5"):
        build_dataset("synthetic", "train", transform=Transform(scale=(0.5, 1.0), crop=(100, 100)))
    assert len(build_dataset("synthetic", "train", transform=Transform(scale=(0.5, 1.0), crop=(64, 64)))) == 500


# --- batches ---------------------------------------------------------------------------------------


def test_batches_resume_exactly() -> None:
    augment = Transform(resize=(32, 64), scale=(0.75, 1.5), crop=(24, 48), flip=True)
    ds = build_dataset("synthetic", "search_val", transform=augment)
    first = [b for _, b in zip(range(6), batches(ds, batch_size=3, seed=5))]
    resumed = [b for _, b in zip(range(3), batches(ds, batch_size=3, seed=5, start_iteration=3))]
    assert first[0][0].shape == (3, 3, 24, 48) and first[0][1].shape == (3, 24, 48)
    for (ia, la), (ib, lb) in zip(first[3:], resumed):
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    assert not torch.equal(first[0][0], first[1][0])
    other_seed = next(batches(ds, batch_size=3, seed=6))
    assert not torch.equal(first[0][0], other_seed[0])


def test_batches_in_a_worker_process_match() -> None:
    ds = build_dataset("synthetic", "val", transform=SMALL)
    plain = [b for _, b in zip(range(2), batches(ds, batch_size=2, seed=1, start_iteration=4))]
    workers = [b for _, b in zip(range(2), batches(ds, batch_size=2, seed=1, start_iteration=4, num_workers=1))]
    for (ia, la), (ib, lb) in zip(plain, workers):
        assert torch.equal(ia, ib) and torch.equal(la, lb)


def test_ranks_get_disjoint_samples_and_epochs_cover_the_data() -> None:
    n, world, b = 50, 3, 4
    per_rank = n // world  # 16: four batches of 4 are exactly one epoch
    for epoch in range(2):
        iterations = range(epoch * per_rank // b, (epoch + 1) * per_rank // b)
        taken = [
            [i for k in iterations for i, _ in batch_indices(n, batch_size=b, seed=0, iteration=k, rank=r, world_size=world)]
            for r in range(world)
        ]  # fmt: skip
        everything = [i for share in taken for i in share]
        assert len(everything) == len(set(everything)) == world * per_rank
    epoch0 = {i for k in range(4) for i, _ in batch_indices(n, batch_size=b, seed=0, iteration=k)}
    epoch1 = [i for k in range(4, 8) for i, _ in batch_indices(n, batch_size=b, seed=0, iteration=k)]
    assert len(epoch0) == 16 and epoch1 != sorted(epoch1)  # a fresh shuffle every epoch


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0, "seed": 0}, "batch size"),
        ({"batch_size": 2, "seed": -1}, "seed"),
        ({"batch_size": 2, "seed": 0, "rank": 2, "world_size": 2}, "Rank 2"),
        ({"batch_size": 2, "seed": 0, "start_iteration": -1}, "start iteration"),
    ],
)
def test_batches_bad_settings(kwargs, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        batches(build_dataset("synthetic", "val"), **kwargs)


# --- Cityscapes ------------------------------------------------------------------------------------

#: Raw label ids written into every generated label image, and what they must become.
RAW_IDS = np.array([0, 1, 6, 7, 8, 11, 17, 21, 23, 24, 26, 31, 33, 34, 255], np.uint8)


def _expected(raw: np.ndarray) -> np.ndarray:
    return np.array([LABEL_TO_TRAIN_ID.get(int(v), IGNORE_INDEX) for v in raw.ravel()], np.int64).reshape(raw.shape)


def _label_image(seed: int, h: int = 32, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).choice(RAW_IDS, size=(h, w))


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _cityscapes_tree(root: Path) -> dict[str, np.ndarray]:
    labels = {}
    layout = {"train": {"jena": 1, "aachen": 2, "bochum": 1}, "val": {"frankfurt": 2}, "test": {"berlin": 1}}
    seed = 0
    for split, cities in layout.items():
        for city, count in cities.items():
            for k in range(count):
                name = f"{city}_{k:06d}_000019"
                seed += 1
                image = np.random.default_rng(seed).integers(0, 256, (32, 64, 3), dtype=np.uint8)
                _write_png(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", image)
                labels[name] = _label_image(seed)
                _write_png(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", labels[name])
    return labels


def test_cityscapes_loads_and_maps_train_ids(tmp_path: Path) -> None:
    labels = _cityscapes_tree(tmp_path)
    train = build_dataset("cityscapes", "train", root=tmp_path)
    assert [train.sample_id(i) for i in range(len(train))] == [
        "aachen_000000_000019_leftImg8bit", "aachen_000001_000019_leftImg8bit",
        "bochum_000000_000019_leftImg8bit", "jena_000000_000019_leftImg8bit",
    ]  # fmt: skip
    for i in range(len(train)):
        name = train.sample_id(i).removesuffix("_leftImg8bit")
        image, label = train[i]
        assert image.shape == (3, 32, 64) and image.dtype == torch.float32
        assert np.array_equal(label.numpy(), _expected(labels[name]))
    assert {7: 0, 8: 1, 24: 11, 33: 18}.items() <= LABEL_TO_TRAIN_ID.items()
    assert set(train[0][1].unique().tolist()) == {0, 1, 2, 5, 8, 10, 11, 13, 16, 18, IGNORE_INDEX}
    assert len(build_dataset("cityscapes", "val", root=tmp_path)) == 2
    assert len(build_dataset("cityscapes", "test", root=tmp_path)) == 1
    augment = Transform(resize=(16, 32), crop=(8, 8), flip=True)
    resized = build_dataset("cityscapes", "val", root=tmp_path, transform=augment)
    assert resized[0][0].shape == (3, 8, 8)


def test_cityscapes_search_split_by_city(tmp_path: Path) -> None:
    _cityscapes_tree(tmp_path)
    search_train = build_dataset("cityscapes", "search_train", root=tmp_path)
    search_val = build_dataset("cityscapes", "search_val", root=tmp_path)
    train_ids = {search_train.sample_id(i).split("_")[0] for i in range(len(search_train))}
    val_ids = {search_val.sample_id(i).split("_")[0] for i in range(len(search_val))}
    assert train_ids == {"aachen", "bochum"} and val_ids == {"jena"}
    real = ["aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
            "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich"]  # fmt: skip
    assert search_cities(real[::-1], Split.SEARCH_TRAIN) == real[:9]
    assert search_cities(real, Split.SEARCH_VAL) == real[9:]
    with pytest.raises(UserInputError, match="at least 2 training cities"):
        search_cities(["aachen"], Split.SEARCH_VAL)


def test_cityscapes_bad_trees(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=f"folder {tmp_path / 'nowhere'} does not exist"):
        build_dataset("cityscapes", "train", root=tmp_path / "nowhere")
    with pytest.raises(UserInputError, match="needs a data root"):
        build_dataset("cityscapes", "train")
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(UserInputError, match=f"folder {tmp_path / 'gtFine'} does not exist"):
        build_dataset("cityscapes", "train", root=tmp_path)
    labels = _cityscapes_tree(tmp_path)
    missing = tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000019_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(UserInputError, match=f"has no label file {missing}"):
        build_dataset("cityscapes", "train", root=tmp_path)
    assert len(build_dataset("cityscapes", "val", root=tmp_path)) == 2  # other splits are unaffected
    with pytest.raises(UserInputError, match="crop 64x64 is larger than the cityscapes images"):
        build_dataset("cityscapes", "val", root=tmp_path, transform=Transform(crop=(64, 64)))
    assert labels


def test_sixteen_bit_labels(tmp_path: Path) -> None:
    _cityscapes_tree(tmp_path)
    label = tmp_path / "gtFine" / "test" / "berlin" / "berlin_000000_000019_gtFine_labelIds.png"
    raw = np.full((32, 64), 7, np.uint16)
    raw[:, :10] = 300  # no label id of Cityscapes: ignored, not wrapped around to 44
    Image.fromarray(raw).save(label)
    lab = build_dataset("cityscapes", "test", root=tmp_path)[0][1]
    assert (lab[:, :10] == IGNORE_INDEX).all() and (lab[:, 10:] == 0).all()


def test_cityscapes_bad_files(tmp_path: Path) -> None:
    _cityscapes_tree(tmp_path)
    label = tmp_path / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png"
    _write_png(label, np.zeros((16, 64), np.uint8))
    ds = build_dataset("cityscapes", "val", root=tmp_path)
    with pytest.raises(UserInputError, match="is 16x64 but its image is 32x64"):
        ds[0]
    label.write_bytes(b"not a png")
    with pytest.raises(UserInputError, match="cannot be read as an image"):
        ds[0]


# --- CamVid ----------------------------------------------------------------------------------------


def _camvid_tree(root: Path) -> dict[str, np.ndarray]:
    labels = {}
    files = [("train", "0001TP_006690.png"), ("train", "0001TP_006720.png"), ("val", "0016E5_07959.png"), ("test", "Seq05VD_f00000.png")]
    for seed, (folder, name) in enumerate(files):
        _write_png(root / folder / name, np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8))
        labels[name] = np.random.default_rng(seed).integers(0, 13, (24, 32)).astype(np.uint8)
        _write_png(root / f"{folder}annot" / name, labels[name])
    return labels


def test_camvid_splits_and_void(tmp_path: Path) -> None:
    labels = _camvid_tree(tmp_path)
    sizes = {split: len(build_dataset("camvid", split, root=tmp_path)) for split in Split}
    assert sizes == {Split.SEARCH_TRAIN: 2, Split.SEARCH_VAL: 1, Split.TRAIN: 3, Split.VAL: 1, Split.TEST: 1}
    test = build_dataset("camvid", "test", root=tmp_path)
    raw = labels["Seq05VD_f00000.png"]
    expected = np.where(raw <= 10, raw, IGNORE_INDEX)
    assert np.array_equal(test[0][1].numpy(), expected)
    assert (raw == 11).any() and (raw == 12).any()


def test_camvid_bad_trees(tmp_path: Path) -> None:
    _camvid_tree(tmp_path)
    (tmp_path / "val" / "extra.png").write_bytes((tmp_path / "val" / "0016E5_07959.png").read_bytes())
    with pytest.raises(UserInputError, match="extra.png has no label file"):
        build_dataset("camvid", "train", root=tmp_path)
    for path in (tmp_path / "testannot").iterdir():
        path.unlink()
    (tmp_path / "testannot").rmdir()
    with pytest.raises(UserInputError, match=f"folder {tmp_path / 'testannot'} does not exist"):
        build_dataset("camvid", "test", root=tmp_path)
    with pytest.raises(UserInputError, match="test split has no images"):
        (tmp_path / "testannot").mkdir()
        (tmp_path / "test" / "Seq05VD_f00000.png").unlink()
        build_dataset("camvid", "test", root=tmp_path)


def test_batches_of_unequal_images_need_a_resize(tmp_path: Path) -> None:
    _camvid_tree(tmp_path)
    _write_png(tmp_path / "train" / "0001TP_006750.png", np.zeros((20, 32, 3), np.uint8))
    _write_png(tmp_path / "trainannot" / "0001TP_006750.png", np.zeros((20, 32), np.uint8))
    ds = build_dataset("camvid", "search_train", root=tmp_path)
    with pytest.raises(UserInputError, match="different sizes; give the dataset a resize or a crop"):
        next(batches(ds, batch_size=3, seed=0))
    resized = build_dataset("camvid", "search_train", root=tmp_path, transform=Transform(resize=(16, 16)))
    assert next(batches(resized, batch_size=3, seed=0))[0].shape == (3, 3, 16, 16)
