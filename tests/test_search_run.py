"""run_search end to end on a tiny network: run folder, exact resume, refusals, budget, stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _search_support import MINI19, make_profile, write_profile, one_torch_thread  # noqa: F401
from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.genotype import Genotype
from casprof.predict import predict
from casprof.profile import Profile
from search.run import SearchProgress, run_search
from search.settings import DEFAULT_LAMBDA, ArchOrder, SearchSettings, Stage

FAST = dict(iters=6, batch_size=2, crop=(32, 64), checkpoint_every=3, log_every=2, val_batches=1)


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_profile(tmp_path_factory.mktemp("profile") / "mini19.json")


@pytest.fixture(scope="module")
def straight_run(profile_path: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    return run_search(SearchSettings(profile=profile_path, **FAST), out)


def _checkpoint_alphas(folder: Path) -> dict[str, torch.Tensor]:
    blob = torch.load(folder / "checkpoint.pt", weights_only=True)
    return {k: v for k, v in blob["model"].items() if k.startswith("alpha_")}


def test_run_writes_the_run_folder(straight_run, profile_path: Path) -> None:
    out = straight_run.out_dir
    for name in ("genotype.json", "settings.json", "log.jsonl", "checkpoint.pt", "summary.json",
                 "alphas/alphas_3.json", "alphas/alphas_6.json"):
        assert (out / name).is_file(), name
    genotype = Genotype.load(out / "genotype.json")
    assert genotype == straight_run.genotype
    record = genotype.search
    assert (record.method, record.iterations, record.metric, record.seed) == ("cas", 6, "latency_ms", 0)
    assert record.profile_fingerprint == MINI19.fingerprint()
    expected = predict(Profile.load(profile_path), genotype)["latency_ms"].value
    assert record.predicted_cost == pytest.approx(expected) == straight_run.predicted_cost
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [2, 4, 6]
    assert all(r["unit"] == "ms" and r["lambda"] == DEFAULT_LAMBDA for r in rows)
    snapshot = json.loads((out / "alphas/alphas_6.json").read_text())
    assert snapshot["operations"]["normal"][0] == "none"
    assert sum(snapshot["softmax"]["ms"][0]) == pytest.approx(1.0)
    assert 0.0 <= straight_run.val_miou <= 1.0
    assert SearchSettings.from_dict(json.loads((out / "settings.json").read_text())) == SearchSettings(
        profile=profile_path, **FAST)


def test_interrupted_run_resumes_exactly(straight_run, profile_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    settings = SearchSettings(profile=profile_path, **FAST)

    def interrupt(p: SearchProgress) -> None:
        if p.iteration == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(settings, out, progress=interrupt)
    assert not (out / "genotype.json").exists()
    seen: list[int] = []
    result = run_search(settings, out, resume=True, progress=lambda p: seen.append(p.iteration))
    assert seen == [4, 6]  # resumed from the checkpoint at 3
    mine, straight = _checkpoint_alphas(out), _checkpoint_alphas(straight_run.out_dir)
    assert all(torch.equal(mine[k], straight[k]) for k in straight)
    assert result.genotype == straight_run.genotype
    assert [json.loads(x)["iteration"] for x in (out / "log.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_existing_run_is_never_overwritten(straight_run, profile_path: Path) -> None:
    before = (straight_run.out_dir / "genotype.json").read_bytes()
    with pytest.raises(UserInputError, match="already holds a search run"):
        run_search(SearchSettings(profile=profile_path, **FAST), straight_run.out_dir)
    with pytest.raises(UserInputError, match="lambda"):
        run_search(SearchSettings(profile=profile_path, **{**FAST, "lambda_": 0.5}), straight_run.out_dir, resume=True)
    assert (straight_run.out_dir / "genotype.json").read_bytes() == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"profile": Path("missing.json")}, "does not exist"),
        ({"metric": "params"}, "no 'params' costs"),
        ({"dataset": "kitti"}, "Unknown dataset"),
        ({"crop": (36, 64)}, "not divisible"),
        ({"stage": Stage.MS}, "backbone genotype"),
        ({"crop": (512, 1024)}, "crop"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(profile_path, tmp_path, changes, message) -> None:
    settings = SearchSettings(profile=profile_path, **FAST).replace(**changes)
    with pytest.raises(UserInputError, match=message):
        run_search(settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_settings_refuse_bad_values(profile_path: Path) -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(UserInputError, match="lambda"):
            SearchSettings(profile=profile_path, lambda_=bad)
    with pytest.raises(UserInputError, match="stage"):
        SearchSettings(profile=profile_path, stage="everything")


def test_dataset_classes_must_match_the_network(tmp_path: Path) -> None:
    five = NetworkConfig(stem_channels=(4, 4, 8), channels=4, ms_channels=4, num_classes=5, layout="NNRN", nodes=2, ms_nodes=2)
    path = write_profile(tmp_path / "five.json", config=five)
    with pytest.raises(UserInputError, match="19 classes"):
        run_search(SearchSettings(profile=path, **FAST), tmp_path / "out")


def test_large_lambda_gives_a_cheaper_network_than_lambda_zero(profile_path: Path, tmp_path: Path) -> None:
    costs = {}
    for lam in (0.0, 50.0):
        result = run_search(SearchSettings(profile=profile_path, **{**FAST, "iters": 4, "lambda_": lam}), tmp_path / str(lam))
        costs[lam] = result.predicted_cost
    assert costs[50.0] < costs[0.0]


def test_budget_run_ends_under_the_target(profile_path: Path, tmp_path: Path) -> None:
    profile = make_profile()
    target = profile.baseline["latency_ms"].value + 2.0  # far below what 4 iterations at lambda 0 reach
    settings = SearchSettings(profile=profile_path, **{**FAST, "iters": 4, "lambda_": 0.0, "target": target, "budget_every": 2})
    result = run_search(settings, tmp_path / "budget")
    assert result.predicted_cost <= target and result.genotype.search.budget == target
    assert result.budget_swaps and any("budget-aware" in w for w in result.warnings)
    blob = torch.load(tmp_path / "budget" / "checkpoint.pt", weights_only=True)
    assert blob["controller"]["updates"] == 2 and blob["controller"]["lambda"] > 0


def test_ms_stage_searches_on_a_fixed_backbone_with_second_order(straight_run, profile_path, tmp_path) -> None:
    settings = SearchSettings(profile=profile_path, **{**FAST, "iters": 2}, stage=Stage.MS,
                              backbone=straight_run.genotype_path, order=ArchOrder.SECOND)
    result = run_search(settings, tmp_path / "ms")
    assert (result.genotype.normal, result.genotype.reduce) == (straight_run.genotype.normal, straight_run.genotype.reduce)
    blob = torch.load(tmp_path / "ms" / "checkpoint.pt", weights_only=True)
    assert [k for k in blob["model"] if k.startswith("alpha_")] == ["alpha_ms"]
