"""``train.evaluate.run_eval`` end to end on a case whose answer is known: a network that predicts one class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from casprof.errors import UserInputError
from casprof.genotype import Genotype
from casprof.network import CASNetwork
from search.data import build_dataset, dataset_info
from tests._train_support import MINI19, genotype_file, one_thread
from train.evaluate import run_eval
from train.settings import EvalSettings

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

ROAD = 0  # the class the constant network predicts everywhere


def _constant_weights(genotype: Path, folder: Path, cls: int) -> Path:
    """Weights whose classifier ignores its input: logits are the bias, so every pixel is ``cls``."""
    net = CASNetwork.from_genotype(Genotype.load(genotype))
    conv = net.classifier[1]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(-1.0)
        conv.bias[cls] = 1.0
    path = folder / "constant.pt"
    torch.save(net.state_dict(), path)
    return path


def _expected(limit: int, cls: int) -> tuple[float, dict[str, float | None]]:
    """mIoU by hand: IoU(cls) = n_cls / n_labelled, 0 for other classes present, None for absent ones."""
    labels = np.concatenate([build_dataset("synthetic", "val")[i][1].numpy().ravel() for i in range(limit)])
    labelled = labels[labels != 255]
    names = dataset_info("synthetic").class_names
    per_class: dict[str, float | None] = {}
    for k, name in enumerate(names):
        present = bool((labelled == k).any())
        if k == cls:
            per_class[name] = float((labelled == k).sum() / labelled.size)
        else:
            per_class[name] = 0.0 if present else None
    defined = [v for v in per_class.values() if v is not None]
    return sum(defined) / len(defined), per_class


@pytest.mark.parametrize("resolution", [None, (64, 128)])
def test_constant_prediction_gives_the_hand_computed_miou(tmp_path: Path, resolution) -> None:
    g = genotype_file(tmp_path, MINI19)
    weights = _constant_weights(g, tmp_path, ROAD)
    report = tmp_path / "report.json"
    settings = EvalSettings(genotype=g, weights=weights, limit=3, batch_size=2, resolution=resolution, examples=2)
    result = run_eval(settings, report=report)
    miou, per_class = _expected(3, ROAD)
    assert result.miou == pytest.approx(miou, abs=1e-9)
    assert result.per_class_iou == pytest.approx(per_class, abs=1e-9)
    assert 0 < result.per_class_iou["road"] < 1 and result.num_images == 3

    data = json.loads(report.read_text())
    assert data["miou"] == pytest.approx(miou) and data["per_class_iou"]["road"] == pytest.approx(per_class["road"])
    assert data["resolution"] == ("full" if resolution is None else list(resolution))
    assert "upsampled bilinearly to the label's full size" in data["label_treatment"]
    md = report.with_suffix(".md").read_text()
    assert f"mIoU {100 * miou:.2f} %" in md and "| road |" in md
    assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("report")) == ["report.json", "report.md", "report.png"]


def test_bad_eval_input(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    other = genotype_file(tmp_path, MINI19, seed=5)
    weights = _constant_weights(other, tmp_path, ROAD)
    with pytest.raises(UserInputError, match="do not fit the genotype"):
        run_eval(EvalSettings(genotype=g, weights=weights, limit=1), report=tmp_path / "r.json")
    with pytest.raises(UserInputError, match="must end in .json"):
        run_eval(EvalSettings(genotype=other, weights=weights, limit=1), report=tmp_path / "r.md")
    with pytest.raises(UserInputError, match="needs a data root"):
        run_eval(EvalSettings(genotype=g, weights=weights, dataset="cityscapes"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["constant.pt", g.name, other.name])
