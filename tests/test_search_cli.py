"""``cas search`` and ``cas search sweep``: option parsing, bad input, resume, a sweep, and a real subprocess.

Bad-input and sweep tests use the in-memory made-up profiles of ``tests/_search_support.py``
(19 classes like the synthetic scenes, a few milliseconds to write); the end-to-end subprocess
test uses the real measured torch profile of ``conftest.tiny_profile_path``, relabelled for 19
classes (its c_o are differences of two networks with the same classifier, so they do not
depend on the class count; its baseline is a 5-class network's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cas.cli import app
from casprof.errors import UserInputError
from casprof.genotype import Genotype, random_genotype
from casprof.profile import Method, Profile
from search.cli import default_out_dir, parse_crop, parse_target
from search.run import CHECKPOINT_VERSION
from search.settings import SearchSettings
from search.sweep import SweepRow, run_sweep
from tests._search_support import TINY19, write_profile

runner = CliRunner()
TINY_ARGS = ["--iters", "2", "--batch-size", "2", "--crop", "32x64", "--log-every", "1"]


@pytest.fixture(scope="module")
def made_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A made-up MINI19 profile with latency_ms and macs (no params)."""
    return write_profile(tmp_path_factory.mktemp("profiles") / "mini19.json")


@pytest.fixture(scope="module")
def estimated_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_profile(tmp_path_factory.mktemp("profiles") / "mini19-estimated.json", method=Method.ESTIMATED)


def _refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in result.output, result.output


# --- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, metric, expected",
    [
        ("8ms", "latency_ms", 8.0), ("8", "latency_ms", 8.0), ("0.5s", "latency_ms", 500.0), ("250us", "latency_ms", 0.25),
        ("12.5 MS", "latency_ms", 12.5), ("1.2M", "params", 1.2e6), ("1200000", "params", 1.2e6), ("800k", "params", 8e5),
        ("3.5G", "macs", 3.5e9), ("3.5g", "macs", 3.5e9), ("2e9", "macs", 2e9),
    ],
)
def test_parse_target(text: str, metric: str, expected: float) -> None:
    assert parse_target(text, metric) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text, metric, message",
    [
        ("3.5G", "latency_ms", "is a count"), ("8ms", "params", "is a time"), ("8s", "macs", "is a time"),
        ("8 parsecs", "latency_ms", "unknown time unit"), ("1.2X", "params", "unknown unit"),
        ("fast", "latency_ms", "not a number"), ("0", "params", "positive"), ("-3ms", "latency_ms", "not a number"),
    ],
)
def test_parse_target_refuses(text: str, metric: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_target(text, metric)


def test_parse_crop_and_default_out() -> None:
    assert parse_crop("64x128") == (64, 128) and parse_crop("64×128") == (64, 128)
    for bad in ("64", "64x", "axb", "0x64", "64x128x3"):
        with pytest.raises(UserInputError):
            parse_crop(bad)
    s = SearchSettings(profile=Path("profiles/cpu-x.json"), lambda_=0.01, seed=3)
    assert default_out_dir(s) == Path("runs/cpu-x-latency_ms-lam0.01-s3")
    assert default_out_dir(s.replace(target=8.0)) == Path("runs/cpu-x-latency_ms-target8-s3")
    assert default_out_dir(s, sweep=True) == Path("runs/cpu-x-latency_ms-sweep-s3")


# --- bad input: exit 2, one sentence, nothing written ----------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--profile", "{missing}"], "does not exist"),
        ([], "Say which cost profile"),
        (["--profile", "{badfp}"], "does not match its configuration"),
        (["--profile", "{profile}", "--metric", "flops"], "flops"),
        (["--profile", "{profile}", "--metric", "params"], "params"),
        (["--profile", "{profile}", "--dataset", "kitti"], "Unknown dataset 'kitti'"),
        (["--profile", "{profile}", "--dataset", "cityscapes", "--data-root", "{empty}"], "leftImg8bit"),
        (["--profile", "{profile}", "--dataset", "camvid"], "11 classes"),
        (["--profile", "{profile}", "--lambda", "-1"], "lambda must be a finite number >= 0, got -1"),
        (["--profile", "{profile}", "--lambda", "abc"], "The lambda 'abc' is not a number"),
        (["--profile", "{profile}", "--lambda", "nan"], "finite number >= 0"),
        (["--profile", "{profile}", "--lambda", "0.1,1"], "takes one number"),
        (["--profile", "{profile}", "--crop", "36x64"], "not divisible by the network's total stride 8"),
        (["--profile", "{profile}", "--crop", "32by64"], "not of the form HxW"),
        (["--profile", "{profile}", "--target", "3.5G"], "is a count"),
        (["--profile", "{profile}", "--metric", "macs", "--target", "8ms"], "is a time"),
        (["--profile", "{profile}", "--stage", "ms"], "needs the backbone genotype"),
        (["--profile", "{profile}", "--stage", "ms", "--backbone", "{tiny_genotype}"], "was made for network"),
        (["--profile", "{profile}", "--stage", "joint", "--backbone", "{tiny_genotype}"], "--backbone goes with --stage ms"),
        (["--profile", "{profile}", "--batch-size", "1"], "needs at least 2 images per process"),
        (["--profile", "{profile}", "--stage", "backbone", "--backbone", "{tiny_genotype}"], "--backbone goes with --stage ms"),
        (["--profile", "{profile}", "--order", "third"], "third"),
        (["--profile", "{profile}", "--device", "tpu"], "tpu"),
    ],
)
def test_search_bad_input(tmp_path: Path, made_profile: Path, args: list[str], message: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    badfp = tmp_path / "badfp.json"
    raw = json.loads(made_profile.read_text())
    raw["network"]["fingerprint"] = "0123456789abcdef"
    badfp.write_text(json.dumps(raw))
    tiny_genotype = tmp_path / "tiny.json"
    random_genotype(0, TINY19).save(tiny_genotype)
    names = {"missing": tmp_path / "nope.json", "badfp": badfp, "profile": made_profile, "empty": empty,
             "tiny_genotype": tiny_genotype}
    out = tmp_path / "run"
    argv = ["search", *TINY_ARGS, *(a.format(**names) for a in args), "--out", str(out)]
    _refused(runner.invoke(app, argv), message)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lambdas", "0,abc"], "'abc' is not a number"),
        (["--lambdas", "0,-0.1"], ">= 0"),
        (["--lambdas", "0,0"], "listed twice"),
        (["--lambdas", "0,1", "--target", "8ms"], "cannot take --target"),
        (["--lambdas", "0,1", "--crop", "36x64"], "not divisible"),
    ],
)
def test_sweep_bad_input(tmp_path: Path, made_profile: Path, args: list[str], message: str) -> None:
    out = tmp_path / "sweep"
    _refused(runner.invoke(app, ["search", "sweep", "--profile", str(made_profile), *TINY_ARGS, *args, "--out", str(out)]), message)
    assert not out.exists() or not any(out.iterdir())


def test_search_warns_resumes_and_refuses_other_settings(tmp_path: Path, estimated_profile: Path) -> None:
    out = tmp_path / "run"
    base = ["search", "--profile", str(estimated_profile), *TINY_ARGS, "--out", str(out)]
    first = runner.invoke(app, [*base, "--resume"])  # nothing there yet: a fresh run, and it says so
    assert first.exit_code == 0, first.output
    assert f"No search run in {out} to resume: starting afresh." in first.output
    assert "Warning:" in first.output and "estimated" in first.output
    assert f"Derived genotype: {out / 'genotype.json'}" in first.output
    snapshot = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    _refused(runner.invoke(app, base), "already holds a search run")
    _refused(runner.invoke(app, [*base, "--resume", "--seed", "1"]), "seed")
    _refused(runner.invoke(app, [*base, "--resume", "--lambda", "0.5"]), "lambda")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == snapshot  # untouched

    longer = runner.invoke(app, [*base, "--iters", "3", "--resume"])
    assert longer.exit_code == 0, longer.output
    assert "starting afresh" not in longer.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log] == [1, 2, 3]
    assert Genotype.load(out / "genotype.json").search.iterations == 3


# --- the sweep ----------------------------------------------------------------------------------
def test_sweep_through_the_cli(tmp_path: Path, made_profile: Path) -> None:
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["search", "sweep", "--profile", str(made_profile), "--lambdas", "0,100", *TINY_ARGS,
                                 "--iters", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "sweep.json").read_text())
    rows = [SweepRow.from_dict(r) for r in table["rows"]]
    assert [r.lambda_ for r in rows] == [0.0, 100.0]
    for row in rows:
        g = Genotype.load(out / row.run_dir / "genotype.json")
        assert g.search.lambda_ == row.lambda_ and g.search.predicted_cost == pytest.approx(row.predicted_cost)
    assert rows[1].predicted_cost < rows[0].predicted_cost  # a heavy cost weight picks cheaper operations
    assert (out / "sweep.png").stat().st_size > 5000
    md = (out / "sweep.md").read_text()
    assert "| 100 |" in md and "supernet" in md and md in result.output


def test_interrupted_sweep_resumes(tmp_path: Path, made_profile: Path) -> None:
    """Stop the second search after its first checkpoint; the resumed sweep skips lambda 0 and continues lambda 1."""
    base = SearchSettings(profile=made_profile, iters=4, batch_size=2, crop=(32, 64), log_every=1, checkpoint_every=2)
    out = tmp_path / "sweep"

    def stop(lam: float, p) -> None:
        if lam == 1.0 and p.iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(base, (0.0, 1.0), out, progress=stop)
    first_genotype = (out / "lam0" / "genotype.json").read_bytes()
    assert not (out / "lam1" / "genotype.json").exists()
    assert [r["lambda"] for r in json.loads((out / "sweep.json").read_text())["rows"]] == [0.0]

    with pytest.raises(UserInputError, match="not empty"):
        run_sweep(base, (0.0, 1.0), out)
    with pytest.raises(UserInputError, match="other settings"):
        run_sweep(base.replace(seed=5), (0.0, 1.0), out, resume=True)

    seen: list[tuple[float, int]] = []
    result = run_sweep(base, (0.0, 1.0), out, resume=True, progress=lambda lam, p: seen.append((lam, p.iteration)))
    assert result.skipped == (0.0,)
    assert seen == [(1.0, 3), (1.0, 4)]  # resumed from the checkpoint at iteration 2
    assert (out / "lam0" / "genotype.json").read_bytes() == first_genotype
    log = [json.loads(line)["iteration"] for line in (out / "lam1" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]
    assert [r.lambda_ for r in result.rows] == [0.0, 1.0]
    assert result.png_path.exists() and result.md_path.exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli_settings(profile: Path) -> SearchSettings:
    """The settings ``cas search --profile PROFILE *TINY_ARGS`` runs with."""
    return SearchSettings(profile=profile, iters=2, batch_size=2, crop=(32, 64), log_every=1)


def _sweep_folder(out: Path, base: dict, table: object | None) -> None:
    out.mkdir()
    (out / "sweep_settings.json").write_text(json.dumps({"schema_version": 1, "lambdas": [0.0], "base": base}))
    if table is not None:
        (out / "sweep.json").write_text(json.dumps(table))


@pytest.mark.parametrize(
    "table, message",
    [
        ({"rows": 5}, "sweep.json is malformed: its rows must be a list"),
        ({"rows": {"lambda": 0}}, "sweep.json is malformed: its rows must be a list"),
        ([1, 2], "sweep.json is malformed: its rows must be a list"),
        ({"rows": [5]}, "A row of the sweep table {out}/sweep.json is malformed"),
    ],
)
def test_sweep_resume_refuses_a_malformed_table(tmp_path: Path, made_profile: Path, table: object, message: str) -> None:
    out = tmp_path / "sweep"
    _sweep_folder(out, _cli_settings(made_profile).replace(lambda_=0.0).to_dict(), table)
    before = _snapshot(out)
    argv = ["search", "sweep", "--profile", str(made_profile), "--lambdas", "0", *TINY_ARGS, "--out", str(out), "--resume"]
    _refused(runner.invoke(app, argv), message.format(out=out))
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    "field, value",
    [("iters", "abc"), ("batch_size", "two"), ("scale", []), ("crop", "ab")],
)
def test_sweep_resume_refuses_malformed_base_settings(tmp_path: Path, made_profile: Path, field: str, value: object) -> None:
    out = tmp_path / "sweep"
    _sweep_folder(out, {**_cli_settings(made_profile).replace(lambda_=0.0).to_dict(), field: value}, None)
    before = _snapshot(out)
    argv = ["search", "sweep", "--profile", str(made_profile), "--lambdas", "0", *TINY_ARGS, "--out", str(out), "--resume"]
    _refused(runner.invoke(app, argv), f"The search settings in {out / 'sweep_settings.json'} are malformed")
    assert _snapshot(out) == before


def test_search_resume_refuses_malformed_settings(tmp_path: Path, made_profile: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({**_cli_settings(made_profile).to_dict(), "iters": "abc"}))
    before = _snapshot(out)
    argv = ["search", "--profile", str(made_profile), *TINY_ARGS, "--out", str(out), "--resume"]
    _refused(runner.invoke(app, argv), f"The search settings in {out / 'settings.json'} are malformed")
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    "blob, message",
    [
        ([1, 2], "is not a cas search checkpoint (it holds a list)"),
        ("digest", "is incomplete (no iteration, model, w_opt, sched, a_opt, controller, last_val_loss, rng)"),
    ],
)
def test_search_resume_refuses_a_checkpoint_of_the_wrong_shape(tmp_path: Path, made_profile: Path, blob: object, message: str) -> None:
    settings = _cli_settings(made_profile)
    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps(settings.to_dict()))
    if blob == "digest":  # the right version and settings digest, but nothing else
        blob = {"version": CHECKPOINT_VERSION, "digest": settings.config_digest()}
    torch.save(blob, out / "checkpoint.pt")
    before = _snapshot(out)
    argv = ["search", "--profile", str(made_profile), *TINY_ARGS, "--out", str(out), "--resume"]
    _refused(runner.invoke(app, argv), f"The checkpoint {out / 'checkpoint.pt'} {message}")
    assert _snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "settings.json"]


def test_search_refuses_a_run_folder_it_cannot_make_or_resume(tmp_path: Path, made_profile: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "run"
    _refused(runner.invoke(app, ["search", "--profile", str(made_profile), *TINY_ARGS, "--out", str(out)]),
             f"Cannot make the output folder {out}: {blocker} is not a folder.")
    sweep = ["search", "sweep", "--profile", str(made_profile), "--lambdas", "0,1", *TINY_ARGS, "--out", str(out)]
    _refused(runner.invoke(app, sweep), f"Cannot make the output folder {out}: {blocker} is not a folder.")
    # files of a run but no settings.json: --resume cannot tell what run it was, so it refuses (not a fresh start over them)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"junk")
    before = _snapshot(run)
    argv = ["search", "--profile", str(made_profile), *TINY_ARGS, "--out", str(run), "--resume"]
    _refused(runner.invoke(app, argv), f"The folder {run} holds checkpoint.pt but no settings.json, so its run cannot be resumed")
    assert _snapshot(run) == before


# --- a real `cas search` subprocess ---------------------------------------------------------------
def _relabelled(tiny_profile_path: Path, folder: Path) -> Path:
    profile = Profile.load(tiny_profile_path)
    path = folder / "tiny19-torch.json"
    dataclasses.replace(profile, network=dataclasses.replace(profile.network, num_classes=19)).save(path)
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cas_search_subprocess_end_to_end(tmp_path: Path, tiny_profile_path: Path) -> None:
    profile_path = _relabelled(tiny_profile_path, tmp_path)
    profile = Profile.load(profile_path)
    cas = str(Path(sys.executable).with_name("cas"))
    done = _run(cas, "search", "--profile", str(profile_path), "--lambda", "0.5", "--iters", "3", "--batch-size", "2",
                "--crop", "32x64", "--log-every", "1", "--seed", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    relative = Path("runs") / "tiny19-torch-latency_ms-lam0.5-s4"  # the documented default --out
    run = tmp_path / relative
    g = Genotype.load(run / "genotype.json")
    assert g.network == profile.network
    assert (g.search.method, g.search.profile_fingerprint, g.search.metric) == ("cas", profile.fingerprint, "latency_ms")
    assert (g.search.lambda_, g.search.iterations, g.search.seed) == (0.5, 3, 4)
    assert g.search.profile_path == str(profile_path)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log] == [1, 2, 3] and all(row["unit"] == "ms" for row in log)
    for cell_type in ("normal", "reduce", "ms"):
        assert (run / "cells" / f"{cell_type}.png").read_bytes().startswith(b"\x89PNG")
    assert f"Derived genotype: {relative / 'genotype.json'}" in done.stdout
    assert "it/s" in done.stderr  # the progress bar

    predicted = _run(sys.executable, "-m", "casprof", "predict", "--profile", str(profile_path), "--genotype",
                     str(run / "genotype.json"), "--json", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["latency_ms"]["value"] == pytest.approx(g.search.predicted_cost, rel=1e-9)

    again = _run(cas, "search", "--profile", str(profile_path), "--lambda", "0.5", "--iters", "3", "--seed", "4",
                 "--crop", "32x64", cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr and "already holds a search run" in again.stderr
