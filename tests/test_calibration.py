"""casprof calibrate: a latency offset measured on real derived networks, stored in the profile."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casprof.calibration import CALIBRATION_SEED_BASE, Calibration, CalibrationSettings, run_calibration
from casprof.cli.app import app
from casprof.compare import check_profile
from casprof.genotype import random_genotype
from casprof.hardware import detect_hardware
from casprof.predict import predict
from casprof.profile import PROFILE_SCHEMA_VERSION, Profile

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
CASPROF = str(Path(sys.executable).with_name("casprof"))


@pytest.fixture(scope="module")
def calibrated_path(tiny_profile_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny profile calibrated through the console script (3 networks, 2 rounds, 1 sweep)."""
    out = tmp_path_factory.mktemp("calibrated") / "tiny-calibrated.json"
    before = tiny_profile_path.read_bytes()
    proc = subprocess.run([CASPROF, "calibrate", "--profile", str(tiny_profile_path), "--networks", "3", "--rounds", "2",
                           "--sweeps", "1", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "latency offset" in proc.stdout
    assert sum(line.startswith("  seed ") and "residual" in line for line in proc.stdout.splitlines()) == 3  # one per network
    assert tiny_profile_path.read_bytes() == before  # --out: the input profile is left alone
    return out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"networks": 2}, "at least 3 networks"),
        ({"rounds": 3}, "even number"),
        ({"rounds": 4, "sweeps": 5}, "sweeps must be between 1"),
        ({"seed": -1}, "seed must be between"),
        ({"seed": 1_000_000}, "seed must be between"),
    ],
)
def test_settings_refuse_what_cannot_calibrate(kwargs: dict, message: str) -> None:
    with pytest.raises(Exception, match=message):
        CalibrationSettings(**kwargs)


def test_seeds_are_apart_from_a_fidelity_checks() -> None:
    s = CalibrationSettings(networks=4, seed=2)
    assert [s.genotype_seed(k) for k in range(4)] == [CALIBRATION_SEED_BASE + 2000 + k for k in range(4)]


def test_offset_is_the_median_residual_and_moves_only_the_latency(calibrated_path: Path, tiny_profile_path: Path) -> None:
    bare, cal_profile = Profile.load(tiny_profile_path), Profile.load(calibrated_path)
    cal = cal_profile.calibration
    assert bare.calibration is None and cal is not None
    assert json.loads(calibrated_path.read_text())["schema_version"] == PROFILE_SCHEMA_VERSION == 3
    assert sorted(n.seed for n in cal.networks) == [CALIBRATION_SEED_BASE + k for k in range(3)]
    for n in cal.networks:  # each residual is measured minus the bare profile's own prediction
        assert n.predicted_ms == pytest.approx(predict(bare, random_genotype(n.seed, bare.network))["latency_ms"].value)
        assert n.measured_ms > 0
    assert cal.offset.value == pytest.approx(statistics.median(n.measured_ms - n.predicted_ms for n in cal.networks))
    for k in range(4):
        g = random_genotype(k, bare.network)
        a, b = predict(bare, g), predict(cal_profile, g)
        assert b["latency_ms"].value == pytest.approx(a["latency_ms"].value + cal.offset.value)
        assert b["latency_ms"].calibration == cal.offset.value and "calibration" in b["latency_ms"].method
        assert (b["params"].value, b["macs"].value) == (a["params"].value, a["macs"].value)
        assert b["params"].calibration == 0.0
    # everything but the calibration block is the profile it came from
    assert dataclasses.replace(cal_profile, calibration=None).to_dict() == bare.to_dict()


def test_calibrating_a_calibrated_profile_starts_from_the_bare_prediction(calibrated_path: Path) -> None:
    p = Profile.load(calibrated_path)
    again = run_calibration(p, detect_hardware(), CalibrationSettings(networks=3, rounds=2, sweeps=1, seed=1))
    bare = dataclasses.replace(p, calibration=None)
    for n in again.networks:
        assert n.predicted_ms == pytest.approx(predict(bare, random_genotype(n.seed, p.network))["latency_ms"].value)


def test_predict_show_and_check_report_the_calibration(calibrated_path: Path) -> None:
    g = calibrated_path.parent / "g.json"
    p = Profile.load(calibrated_path)
    random_genotype(4, p.network).save(g)
    out = runner.invoke(app, ["predict", "--profile", str(calibrated_path), "--genotype", str(g), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["latency_ms"]["calibration"] == p.calibration.offset.value  # type: ignore[union-attr]
    shown = runner.invoke(app, ["show", str(calibrated_path)])
    assert shown.exit_code == 0 and "calibration:" in shown.output
    checked = runner.invoke(app, ["check", str(calibrated_path)])
    assert checked.exit_code == 0 and "valid schema v3 profile" in checked.output and "calibrated: " in checked.output


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["calibration"]["networks"][0].__setitem__("measured_ms", 1e6), "does not come from its networks"),
        (lambda d: d["calibration"].__setitem__("networks", d["calibration"]["networks"][:2]), "at least 3 networks"),
        (lambda d: d["calibration"]["networks"][0].pop("seed"), "need a seed"),
        (lambda d: d["calibration"].pop("offset"), "needs an offset"),
    ],
)
def test_a_tampered_calibration_block_is_refused(calibrated_path: Path, tmp_path: Path, edit, message: str) -> None:
    raw = json.loads(calibrated_path.read_text())
    edit(raw)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    result = runner.invoke(app, ["check", str(bad)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--networks", "2"], "at least 3 networks"),
        (["--rounds", "3"], "even number"),
        (["--out", "/no/such/folder/p.json"], "does not exist"),
    ],
)
def test_calibrate_bad_input_exits_2_and_writes_nothing(tiny_profile_path: Path, tmp_path: Path, args: list[str],
                                                       message: str) -> None:
    before = tiny_profile_path.read_bytes()
    result = runner.invoke(app, ["calibrate", "--profile", str(tiny_profile_path), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert tiny_profile_path.read_bytes() == before


def test_calibrate_refuses_an_estimated_profile() -> None:
    result = runner.invoke(app, ["calibrate", "--profile", str(ROOT / "profiles" / "gtx1070.json")])
    assert result.exit_code == 2 and "is an estimate" in result.output


def test_fidelity_refuses_to_check_on_the_calibration_networks(calibrated_path: Path, tmp_path: Path) -> None:
    raw = json.loads(calibrated_path.read_text())
    raw["calibration"]["networks"][1]["seed"] = 3  # as if calibrated on fidelity's random genotype 3
    overlapping = tmp_path / "overlap.json"
    overlapping.write_text(json.dumps(raw))
    result = runner.invoke(app, ["fidelity", "--profile", str(overlapping), "--samples", "5", "--rounds", "2"])
    assert result.exit_code == 2 and "reuse 1 of the profile's calibration networks" in result.output
    ok = runner.invoke(app, ["fidelity", "--profile", str(calibrated_path), "--samples", "5", "--rounds", "2",
                             "--sweeps", "1", "--no-extremes", "--no-retime-structure"])
    assert ok.exit_code == 0, ok.output
    assert "| same profile without its calibration offset |" in ok.output


def test_calibration_round_trips(calibrated_path: Path) -> None:
    cal = Profile.load(calibrated_path).calibration
    assert cal is not None and Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def test_check_warns_when_the_offset_is_not_distinguishable_from_zero() -> None:
    """Shipped profiles: the H100 fp32 offset's interval spans 0 (a warning); the CPU ORT one does not."""
    root = Path(__file__).resolve().parent.parent / "profiles"
    doubtful = Profile.load(root / "h100-7ca37dc8-torch-fp32-768x1536.json")
    clear = Profile.load(root / "cpu-6d78dc83-onnxruntime-fp32-768x1536.json")
    assert doubtful.calibration is not None and clear.calibration is not None
    lo, hi = doubtful.calibration.offset.interval
    assert lo <= 0 <= hi and doubtful.calibration.offset.interval_includes_zero
    assert not clear.calibration.offset.interval_includes_zero
    assert "not distinguishable from none" in doubtful.calibration.summary()
    assert "not distinguishable" not in clear.calibration.summary()
    levels = {f.level for f in check_profile(doubtful) if f.message.startswith("calibrated:")}
    assert levels == {"warning"}
    assert {f.level for f in check_profile(clear) if f.message.startswith("calibrated:")} == {"info"}
