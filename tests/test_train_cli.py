"""``cas train`` and ``cas eval`` through typer's CliRunner and through a real ``cas`` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cas.cli import app
from tests._train_support import MINI19, genotype_file, one_thread
from tests.conftest import TINY

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

runner = CliRunner()
TINY_RUN = ["--iters", "2", "--batch-size", "2", "--crop", "32x64", "--eval-limit", "2", "--log-every", "1"]


def _exit2(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def test_train_then_eval(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    run = tmp_path / "run"
    done = runner.invoke(app, ["train", "-g", str(g), "--out", str(run), *TINY_RUN, "--resume"])
    assert done.exit_code == 0, done.output
    assert "best validation mIoU" in done.output
    assert f"No training run in {run} to resume: starting afresh." in done.output  # nothing there yet
    settings = json.loads((run / "settings.json").read_text())
    assert settings["optimizer"] == {"lr": 0.005, "poly_power": 0.9, "momentum": 0.9, "weight_decay": 5e-4}
    assert settings["augmentation"] == {"crop": [32, 64], "scale": [0.5, 2.0], "flip": True}
    again = runner.invoke(app, ["train", "-g", str(g), "--out", str(run), *TINY_RUN])
    assert "already holds a training run" in _exit2(again)
    other = runner.invoke(app, ["train", "-g", str(g), "--out", str(run), *TINY_RUN, "--no-flip", "--resume"])
    assert "augmentation.flip is True in the run but False now" in _exit2(other)
    resumed = runner.invoke(app, ["train", "-g", str(g), "--out", str(run), *TINY_RUN, "--resume"])
    assert resumed.exit_code == 0, resumed.output  # already finished: nothing to do, same result
    assert "starting afresh" not in resumed.output

    report = tmp_path / "eval.json"
    ev = runner.invoke(app, ["eval", "-g", str(g), "-w", str(run / "best.pt"), "--limit", "2", "--resolution", "64x128",
                             "--report", str(report)])
    assert ev.exit_code == 0, ev.output
    data = json.loads(report.read_text())
    assert f"**mIoU {100 * data['miou']:.2f} %**" in ev.output
    assert len(data["per_class_iou"]) == 19 and data["resolution"] == [64, 128]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--crop", "512x1024"], "larger than"),
        (["--crop", "30x64"], "not divisible by the network's total stride"),
        (["--dataset", "cityscapes", "--data-root", "{tmp}/nowhere"], "nowhere"),
        (["--dataset", "cityscapes"], "needs a data root"),
        (["--scale", "2"], "not of the form LOW,HIGH"),
        (["--init-backbone", "{tmp}/missing.pt"], "does not exist"),
    ],
)
def test_train_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    g = genotype_file(tmp_path, MINI19)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, ["train", "-g", str(g), "--out", str(tmp_path / "run"), "--iters", "1", *args])
    assert message in _exit2(result)
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_run_folder_it_cannot_make(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = runner.invoke(app, ["train", "-g", str(g), "--out", str(blocker / "run"), "--iters", "1"])
    assert f"Cannot make the output folder {blocker / 'run'}: {blocker} is not a folder." in _exit2(result)
    assert "is a file" in _exit2(runner.invoke(app, ["train", "-g", str(g), "--out", str(blocker), "--iters", "1"]))


def test_train_refuses_a_dataset_folder_with_the_wrong_layout(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    root = tmp_path / "cityscapes"
    (root / "leftImg8bit" / "train").mkdir(parents=True)
    result = runner.invoke(app, ["train", "-g", str(g), "--out", str(tmp_path / "run"), "--dataset", "cityscapes",
                                 "--data-root", str(root), "--iters", "1"])
    assert "gtFine" in _exit2(result)
    assert not (tmp_path / "run").exists()


def test_eval_refuses_weights_of_another_genotype(tmp_path: Path) -> None:
    import torch

    from casprof.genotype import random_genotype
    from casprof.network import CASNetwork

    g = genotype_file(tmp_path, MINI19)
    torch.save(CASNetwork.from_genotype(random_genotype(3, MINI19)).state_dict(), tmp_path / "w.pt")
    result = runner.invoke(app, ["eval", "-g", str(g), "-w", str(tmp_path / "w.pt"), "--report", str(tmp_path / "r.json")])
    assert "The weights do not fit the genotype: tensor" in _exit2(result)
    five = genotype_file(tmp_path, TINY)
    result = runner.invoke(app, ["eval", "-g", str(five), "-w", str(tmp_path / "w.pt")])
    assert "has 19 classes but the genotype's network predicts 5" in _exit2(result)
    assert not (tmp_path / "r.json").exists()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_resume_refuses_malformed_settings_and_checkpoints(tmp_path: Path) -> None:
    import torch

    g = genotype_file(tmp_path, MINI19)
    run = tmp_path / "run"
    done = runner.invoke(app, ["train", "-g", str(g), "--out", str(run), *TINY_RUN])
    assert done.exit_code == 0, done.output
    resume = ["train", "-g", str(g), "--out", str(run), *TINY_RUN, "--resume"]
    good_settings = (run / "settings.json").read_text()

    for field, value in (("crop", "abc"), ("crop", []), ("scale", "x")):
        settings = json.loads(good_settings)
        settings["augmentation"][field] = value
        (run / "settings.json").write_text(json.dumps(settings))
        before = _files(run)
        message = _exit2(runner.invoke(app, resume))
        assert f"The training settings in {run / 'settings.json'} are malformed" in message
        assert _files(run) == before
    (run / "settings.json").write_text(good_settings)

    checkpoint = run / "checkpoint.pt"
    good = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for blob, expected in (
        ([1, 2], "is not a cas train checkpoint"),
        ({k: v for k, v in good.items() if k != "optimizer"}, "is incomplete (no optimizer)"),
        ({"schema_version": good["schema_version"]}, "is incomplete (no iteration, model, optimizer, best_miou, best_iteration, rng)"),
        ({**good, "model": [1, 2]}, "is malformed"),
    ):
        torch.save(blob, checkpoint)
        before = _files(run)
        assert f"The checkpoint {checkpoint} {expected}" in _exit2(runner.invoke(app, resume))
        assert _files(run) == before


def _cas(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    cas = Path(sys.executable).with_name("cas")
    return subprocess.run([str(cas), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_console_script_trains(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    done = _cas("train", "-g", str(g), "--out", "run", *TINY_RUN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "training" in done.stderr  # the progress bar goes to stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.pt", "checkpoint.pt", "genotype.json", "last.pt", "log.jsonl", "result.json", "settings.json"]
    assert "Trained 2 iterations" in done.stdout
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log if "loss" in r] == [1, 2]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_train_on_cuda_without_gpu(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    result = runner.invoke(app, ["train", "-g", str(g), "--out", str(tmp_path / "run"), "--device", "cuda", *TINY_RUN])
    assert "no CUDA GPU is available" in _exit2(result)
    assert not (tmp_path / "run").exists()
