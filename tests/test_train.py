"""``train.loop.run_train``: exact resume, best/last weights usable by deploy, backbone init, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from casprof.errors import UserInputError
from casprof.genotype import Genotype
from casprof.network import CASNetwork
from tests.conftest import TINY
from tests._train_support import MINI19, genotype_file, one_thread, tiny_settings
from casprof.weights import load_weights
from train.backbone import BACKBONE_PREFIXES, load_backbone
from train.loop import TrainProgress, run_train
from train.settings import Cadence, OptimizerSettings

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_interrupted_and_resumed_run_equals_a_straight_run(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    settings = tiny_settings(g)
    straight = run_train(settings, tmp_path / "straight")

    def stop_at_2(p: TrainProgress) -> None:
        if p.iteration == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_train(settings, tmp_path / "resumed", progress=stop_at_2)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["iteration"] == 2
    resumed = run_train(settings, tmp_path / "resumed", resume=True)
    assert resumed.resumed_from == 2 and straight.resumed_from == 0

    a = torch.load(straight.last_weights, weights_only=True)
    b = torch.load(resumed.last_weights, weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    losses = lambda run: [(r["iteration"], r["loss"]) for r in _records(run) if "loss" in r]  # noqa: E731
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    assert [r["iteration"] for r in _records(tmp_path / "resumed") if "loss" in r] == [1, 2, 3, 4]
    # trained weights differ from the initialisation (the run did something)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        init = CASNetwork.from_genotype(Genotype.load(g)).state_dict()
    assert not torch.equal(init["classifier.1.weight"], a["classifier.1.weight"])


def test_validation_keeps_the_best_weights_and_deploy_exports_them(tmp_path: Path) -> None:
    from deploy.export import export_genotype

    g = genotype_file(tmp_path, MINI19)
    settings = tiny_settings(g, iters=3, cadence=Cadence(log_every=1, eval_every=1, checkpoint_every=2, eval_limit=2))
    result = run_train(settings, tmp_path / "run")
    curve = [r for r in _records(tmp_path / "run") if "val_miou" in r]
    assert [r["iteration"] for r in curve] == [1, 2, 3]
    best = max(curve, key=lambda r: r["val_miou"])
    assert result.best_iteration == best["iteration"] and result.best_miou == best["val_miou"]
    summary = json.loads((tmp_path / "run" / "result.json").read_text())
    assert summary["best_val_miou"] == result.best_miou and len(summary["val_miou_curve"]) == 3
    exported = export_genotype(g, weights=result.best_weights, onnx_path=tmp_path / "best.onnx", resolution=(32, 64), threads=1)
    assert exported.parity.passed and exported.metadata["weights"]["path"] == str(result.best_weights)
    last = CASNetwork.from_genotype(Genotype.load(g))
    assert load_weights(last, result.last_weights).source == "file"  # what deploy's --weights does


def test_init_backbone_loads_stem_and_cells_only(tmp_path: Path) -> None:
    g = Genotype.load(genotype_file(tmp_path))
    torch.manual_seed(1)
    donor = CASNetwork.from_genotype(g)
    path = tmp_path / "backbone.pt"
    torch.save({**donor.state_dict(), "imagenet_fc.weight": torch.zeros(1000, 8)}, path)
    torch.manual_seed(2)
    net = CASNetwork.from_genotype(g)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert load_backbone(net, path) > 0
    for name, value in net.state_dict().items():
        source = donor.state_dict()[name] if name.startswith(BACKBONE_PREFIXES) else before[name]
        assert torch.equal(value, source), name

    other = CASNetwork.from_genotype(Genotype.load(genotype_file(tmp_path, replace(TINY, num_classes=19, channels=6))))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="has shape"):
        load_backbone(net, tmp_path / "other.pt")
    torch.save({k: v for k, v in donor.state_dict().items() if not k.startswith("cells.3.")}, tmp_path / "partial.pt")
    with pytest.raises(UserInputError, match=r"lack the tensor cells\.3\."):
        load_backbone(net, tmp_path / "partial.pt")


def test_poly_learning_rate() -> None:
    opt = OptimizerSettings()
    assert opt.lr_at(0, 100) == 0.005 and opt.lr_at(100, 100) == 0.0
    assert opt.lr_at(50, 100) == pytest.approx(0.005 * 0.5**0.9)


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    settings = tiny_settings(g, iters=1)
    assert settings.first_difference(replace(settings, seed=3)) == "seed is 3 in the run but 0 now"
    assert settings.first_difference(replace(settings, device="cuda", cadence=Cadence(log_every=7))) is None
    run_train(settings, tmp_path / "run")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    with pytest.raises(UserInputError, match="optimizer.lr is 0.005 in the run but 0.01 now"):
        run_train(replace(settings, optimizer=OptimizerSettings(lr=0.01)), tmp_path / "run", resume=True)
    with pytest.raises(UserInputError, match="the genotype differs"):
        run_train(replace(settings, genotype=genotype_file(tmp_path, MINI19, seed=1)), tmp_path / "run", resume=True)
    with pytest.raises(UserInputError, match="already holds a training run"):
        run_train(settings, tmp_path / "run")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == before


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    five_classes = genotype_file(tmp_path, TINY)
    with pytest.raises(UserInputError, match="has 19 classes but the genotype's network predicts 5"):
        run_train(tiny_settings(five_classes), tmp_path / "a")
    g = genotype_file(tmp_path)
    with pytest.raises(UserInputError, match="crop"):
        run_train(tiny_settings(g, augmentation=replace(tiny_settings(g).augmentation, crop=(256, 512))), tmp_path / "b")
    with pytest.raises(UserInputError, match="not divisible"):
        run_train(tiny_settings(g, augmentation=replace(tiny_settings(g).augmentation, crop=(30, 64))), tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in "abc")
