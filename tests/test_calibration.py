"""casprof calibrate: a latency calibration (affine, or an offset) fitted on real derived networks, stored in the profile."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linprog
from typer.testing import CliRunner

from casprof.calibration import (
    CALIBRATION_SEED_BASE,
    LEVERAGE_NETWORKS,
    Calibration,
    CalibrationForm,
    CalibrationNetwork,
    CalibrationSettings,
    NetworkKind,
    bootstrap_lad,
    check_baseline_drift,
    lad_line,
    leverage_ops,
    run_calibration,
)
from casprof.cli.app import app
from casprof.compare import calibration_drift_pct, check_profile
from casprof.errors import MeasurementError
from casprof.genotype import Genotype, random_genotype
from casprof.hardware import detect_hardware
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.predict import predict
from casprof.profile import PROFILE_SCHEMA_VERSION, Profile

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
CASPROF = str(Path(sys.executable).with_name("casprof"))


#: The tiny network's sub-millisecond timings move by more than a real profile's between its measurement and a
#: calibration on a busy test machine: these fixtures test the fit, not the drift guard (tested on its own below).
ANY_DRIFT = ("--max-drift", "1000")


def _calibrate(profile: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CASPROF, "calibrate", "--profile", str(profile), "--networks", "3", "--rounds", "8",
                           "--sweeps", "1", "--out", str(out), *ANY_DRIFT, *extra], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def calibrated_path(tiny_profile_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny profile calibrated through the console script (affine: 3 random + 4 leverage networks, 8 rounds, 1 sweep)."""
    out = tmp_path_factory.mktemp("calibrated") / "tiny-calibrated.json"
    before = tiny_profile_path.read_bytes()
    proc = _calibrate(tiny_profile_path, out, "--form", "affine")
    assert "latency calibration affine: " in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("  seed ")]
    assert len(lines) == 3 + LEVERAGE_NETWORKS and all("after calibration" in line for line in lines)  # one per network
    assert sum("(cheapest-quarter)" in line for line in lines) == sum("(costliest-quarter)" in line for line in lines) == 2
    assert tiny_profile_path.read_bytes() == before  # --out: the input profile is left alone
    return out


@pytest.fixture(scope="module")
def offset_path(tiny_profile_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny profile calibrated with the default form, offset (3 random networks, no leverage networks)."""
    out = tmp_path_factory.mktemp("calibrated") / "tiny-offset.json"
    proc = _calibrate(tiny_profile_path, out)
    assert "ms added to every latency prediction" in proc.stdout
    assert sum(line.startswith("  seed ") for line in proc.stdout.splitlines()) == 3
    return out


def _lad_by_linear_programming(x: np.ndarray, y: np.ndarray) -> float:
    """The least sum of absolute deviations of a line, solved as a linear programme (an independent solver)."""
    n = len(x)
    # variables a, b, u_1..u_n, v_1..v_n >= 0 (a, b free): a + b x_i + u_i - v_i = y_i, minimise sum(u + v)
    c = np.concatenate([[0.0, 0.0], np.ones(2 * n)])
    a_eq = np.hstack([np.ones((n, 1)), x[:, None], np.eye(n), -np.eye(n)])
    res = linprog(c, A_eq=a_eq, b_eq=y, bounds=[(None, None)] * 2 + [(0, None)] * (2 * n), method="highs")
    assert res.success
    return float(res.fun)


@pytest.mark.parametrize("seed", range(5))
def test_lad_line_reaches_the_linear_programmes_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=12) * 100
    y = 3.0 + 0.8 * x + rng.standard_t(2, size=12) * 5
    a, b = lad_line(x, y)
    assert np.abs(y - a - b * x).sum() == pytest.approx(_lad_by_linear_programming(x, y), rel=1e-9, abs=1e-9)


def test_lad_line_is_exact_on_a_line_and_ignores_one_wild_point() -> None:
    x = np.arange(8.0)
    assert lad_line(x, 2.0 + 0.5 * x) == pytest.approx((2.0, 0.5))
    y = 2.0 + 0.5 * x
    y[3] += 1000.0  # least squares would move by over 100; LAD stays on the other seven points
    assert lad_line(x, y) == pytest.approx((2.0, 0.5))
    with pytest.raises(ValueError, match="different x"):
        lad_line([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


def test_lad_line_does_not_depend_on_the_order_of_the_points_to_the_last_bit() -> None:
    """A bootstrap resample holds the same points in another order; its line must be the same floats, or the
    point estimate can sit an ulp outside its own 95 % interval (seen on 7 networks: 6-9 % of fits)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y = rng.uniform(0.0, 50.0, 7), rng.uniform(-5.0, 60.0, 7)
        perm = rng.permutation(7)
        assert lad_line(x, y) == lad_line(x[perm], y[perm])  # exact, not approx


def test_bootstrap_intervals_hold_the_fit_and_resample_within_kinds() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(100, 300, 20), [-150.0, -140.0, 600.0, 650.0]])
    y = 5.0 + 0.8 * x + rng.normal(0, 4, x.size)
    strata = ["random"] * 20 + ["cheap", "cheap", "costly", "costly"]
    (alo, ahi), (blo, bhi) = bootstrap_lad(x, y, strata)
    a, b = lad_line(x, y)
    assert alo <= a <= ahi and blo <= b <= bhi and 0.75 < blo < bhi < 0.85
    assert bootstrap_lad(x, y, strata) == ((alo, ahi), (blo, bhi))  # seeded: the same networks give the same file
    # without the strata some resamples lose every leverage point and the factor's interval widens
    assert np.diff(bootstrap_lad(x, y, ["all"] * x.size)[1])[0] > bhi - blo


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"networks": 2}, "at least 3 networks"),
        ({"rounds": 3}, "even number"),
        ({"rounds": 4, "sweeps": 5}, "sweeps must be between 1"),
        ({"seed": -1}, "seed must be between"),
        ({"seed": 1_000_000}, "seed must be between"),
        ({"max_drift_pct": 0.0}, "positive number of percent"),
        ({"max_drift_pct": float("nan")}, "positive number of percent"),
    ],
)
def test_settings_refuse_what_cannot_calibrate(kwargs: dict, message: str) -> None:
    with pytest.raises(Exception, match=message):
        CalibrationSettings(**kwargs)


def test_seeds_are_apart_from_a_fidelity_checks() -> None:
    s = CalibrationSettings(networks=4, seed=2, form=CalibrationForm.AFFINE)
    assert [s.genotype_seed(k) for k in range(4)] == [CALIBRATION_SEED_BASE + 2000 + k for k in range(4)]
    assert [s.leverage_seed(k) for k in range(s.leverage_networks)] == [CALIBRATION_SEED_BASE + 2999 - k for k in range(4)]
    assert CalibrationSettings(networks=4).leverage_networks == 0  # the default form is the offset


def test_affine_fit_predicts_offset_plus_factor_on_the_operations_part(calibrated_path: Path, tiny_profile_path: Path) -> None:
    bare, cal_profile = Profile.load(tiny_profile_path), Profile.load(calibrated_path)
    cal = cal_profile.calibration
    assert bare.calibration is None and cal is not None and cal.form is CalibrationForm.AFFINE
    assert json.loads(calibrated_path.read_text())["schema_version"] == PROFILE_SCHEMA_VERSION == 6
    c_id = bare.baseline["latency_ms"].value
    random_nets = [n for n in cal.networks if n.kind is NetworkKind.RANDOM]
    assert sorted(n.seed for n in random_nets) == [CALIBRATION_SEED_BASE + k for k in range(3)]
    for n in cal.networks:  # each network: the bare profile's own prediction, its operations' part, a measurement
        ops = None if n.kind is NetworkKind.RANDOM else leverage_ops(bare, n.kind)
        g = random_genotype(n.seed, bare.network, ops)
        assert n.predicted_ms == pytest.approx(predict(bare, g)["latency_ms"].value)
        assert n.operations_ms == pytest.approx(n.predicted_ms - c_id) and n.measured_ms > 0
        if ops is not None:  # a leverage network uses only its quarter of the operations
            for t in CELL_TYPES:
                assert {op for node in g.cell(t) for op, _ in node} <= set(ops[t])
    x = np.array([n.operations_ms for n in cal.networks])
    y = np.array([n.measured_ms for n in cal.networks]) - c_id
    assert (cal.offset, cal.factor) == pytest.approx(lad_line(x, y))
    assert cal.offset_ci95[0] <= cal.offset <= cal.offset_ci95[1] and cal.factor_ci95[0] <= cal.factor <= cal.factor_ci95[1]
    # y here is measured - c'_id, the library's residual + operations' part: equal up to the last bit, not always to it
    np.testing.assert_allclose(np.array([cal.offset_ci95, cal.factor_ci95]),
                               np.array(bootstrap_lad(x, y, [n.kind.value for n in cal.networks])), rtol=1e-9, atol=1e-12)
    for k in range(4):
        g = random_genotype(k, bare.network)
        a, b = predict(bare, g), predict(cal_profile, g)
        ops_part = a["latency_ms"].value - c_id
        assert b["latency_ms"].value == pytest.approx(c_id + cal.offset + cal.factor * ops_part)
        assert b["latency_ms"].calibration == pytest.approx(cal.offset + (cal.factor - 1) * ops_part)
        assert "calibration" in b["latency_ms"].method
        assert (b["params"].value, b["macs"].value) == (a["params"].value, a["macs"].value)
        assert b["params"].calibration == 0.0
    # everything but the calibration block is the profile it came from
    assert dataclasses.replace(cal_profile, calibration=None).to_dict() == bare.to_dict()


def test_leverage_ops_are_the_cheapest_and_costliest_quarter(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    cheap, costly = leverage_ops(p, NetworkKind.CHEAPEST), leverage_ops(p, NetworkKind.COSTLIEST)
    for t in CELL_TYPES:
        costs = sorted(p.cost(t, op, "latency_ms").value for op in candidate_ops(t))
        k = math.ceil(len(costs) / 4)
        assert len(cheap[t]) == len(costly[t]) == k and not set(cheap[t]) & set(costly[t])
        assert sorted(p.cost(t, op, "latency_ms").value for op in cheap[t]) == costs[:k]
        assert sorted(p.cost(t, op, "latency_ms").value for op in costly[t]) == costs[-k:]


def test_offset_form_is_the_median_residual(offset_path: Path, tiny_profile_path: Path) -> None:
    bare, cal_profile = Profile.load(tiny_profile_path), Profile.load(offset_path)
    cal = cal_profile.calibration
    assert cal is not None and cal.form is CalibrationForm.OFFSET and cal.factor == 1.0
    assert [n.kind for n in cal.networks] == [NetworkKind.RANDOM] * 3
    assert cal.offset == pytest.approx(statistics.median(n.measured_ms - n.predicted_ms for n in cal.networks))
    g = random_genotype(7, bare.network)
    assert predict(cal_profile, g)["latency_ms"].value == pytest.approx(predict(bare, g)["latency_ms"].value + cal.offset)
    assert predict(cal_profile, g)["latency_ms"].calibration == pytest.approx(cal.offset)


def test_a_schema_3_offset_block_still_loads_and_is_written_as_schema_4(tmp_path: Path) -> None:
    shipped = ROOT / "profiles" / "cpu-6d78dc83-onnxruntime-fp32-768x1536.json"
    raw = json.loads(shipped.read_text())
    assert raw["schema_version"] == 3 and "form" not in raw["calibration"]
    p = Profile.load(shipped)
    cal = p.calibration
    assert cal is not None and cal.form is CalibrationForm.OFFSET and cal.factor == 1.0 and cal.factor_ci95 == (1.0, 1.0)
    assert cal.offset == raw["calibration"]["offset"]["value"]
    assert cal.offset_ci95 == pytest.approx(tuple(raw["calibration"]["offset"]["ci95"]))
    assert all(n.kind is NetworkKind.RANDOM and n.operations_ms is None for n in cal.networks)
    g = random_genotype(5, p.network)
    bare = dataclasses.replace(p, calibration=None)
    assert predict(p, g)["latency_ms"].value == pytest.approx(predict(bare, g)["latency_ms"].value + cal.offset)
    p.save(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["schema_version"] == PROFILE_SCHEMA_VERSION and again["calibration"]["form"] == "offset"
    assert Profile.load(tmp_path / "again.json").calibration == cal


def test_calibrating_a_calibrated_profile_starts_from_the_bare_prediction(calibrated_path: Path) -> None:
    p = Profile.load(calibrated_path)
    again = run_calibration(p, detect_hardware(), CalibrationSettings(networks=3, rounds=4, sweeps=1, seed=1,
                                                                      form=CalibrationForm.OFFSET, max_drift_pct=1000))
    bare = dataclasses.replace(p, calibration=None)
    assert len(again.networks) == 3
    for n in again.networks:
        assert n.predicted_ms == pytest.approx(predict(bare, random_genotype(n.seed, p.network))["latency_ms"].value)


def test_predict_show_and_check_report_the_calibration(calibrated_path: Path) -> None:
    g = calibrated_path.parent / "g.json"
    p = Profile.load(calibrated_path)
    random_genotype(4, p.network).save(g)
    out = runner.invoke(app, ["predict", "--profile", str(calibrated_path), "--genotype", str(g), "--json"])
    assert out.exit_code == 0, out.output
    g_value = predict(dataclasses.replace(p, calibration=None), Genotype.load(g))["latency_ms"].value
    added = p.calibration.adjustment(g_value - p.baseline["latency_ms"].value)  # type: ignore[union-attr]
    assert json.loads(out.output)["latency_ms"]["calibration"] == pytest.approx(added)
    shown = runner.invoke(app, ["show", str(calibrated_path)])
    assert shown.exit_code == 0 and "calibration:" in shown.output
    checked = runner.invoke(app, ["check", str(calibrated_path)])
    assert checked.exit_code == 0 and f"valid schema v{PROFILE_SCHEMA_VERSION} profile" in checked.output and "calibrated: " in checked.output


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: [n.update(measured_ms=n["measured_ms"] + 10, residual_ms=n["residual_ms"] + 10)
                    for n in d["calibration"]["networks"]], "does not come from its networks"),
        (lambda d: d["calibration"]["networks"][0].__setitem__("measured_ms", 1e6), "residual_ms is not"),
        (lambda d: d["calibration"]["factor"].__setitem__("value", 1.5), "does not come from its networks"),
        (lambda d: d["calibration"].__setitem__("networks", d["calibration"]["networks"][:2]), "at least 3 networks"),
        (lambda d: d["calibration"]["networks"][0].pop("seed"), "need a seed"),
        (lambda d: d["calibration"]["networks"][0].__setitem__("kind", "middling"), "known kind"),
        (lambda d: d["calibration"]["networks"][0].__setitem__("operations_ms", None), "every network's operations_ms"),
        (lambda d: d["calibration"].pop("offset"), "needs an offset"),
        (lambda d: d["calibration"].__setitem__("form", "quadratic"), "known form"),
        (lambda d: d["calibration"]["factor"].__setitem__("ci95", [2.0, 1.0]), "ci95 pair"),
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
        (["--form", "quadratic"], "quadratic"),
        (["--out", "/no/such/folder/p.json"], "does not exist"),
        (["--max-drift", "0"], "positive number of percent"),
        (["--max-drift", "-5"], "positive number of percent"),
    ],
)
def test_calibrate_bad_input_exits_2_and_writes_nothing(tiny_profile_path: Path, tmp_path: Path, args: list[str],
                                                       message: str) -> None:
    before = tiny_profile_path.read_bytes()
    result = runner.invoke(app, ["calibrate", "--profile", str(tiny_profile_path), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert tiny_profile_path.read_bytes() == before


def test_baseline_drift_beyond_the_limit_is_refused_either_way() -> None:
    assert check_baseline_drift(100.0, 119.0, 20.0) == pytest.approx(19.0)
    assert check_baseline_drift(100.0, 80.5, 20.0) == pytest.approx(-19.5)
    for now, shown in ((142.5, "+42.5 %"), (79.0, "-21.0 %")):
        with pytest.raises(MeasurementError, match=f"ran at {now:g} ms during the calibration against c'_id 100 ms") as e:
            check_baseline_drift(100.0, now, 20.0)
        assert shown in str(e.value) and "beyond the 20 % allowed" in str(e.value)
    with pytest.raises(MeasurementError):
        check_baseline_drift(100.0, float("nan"), 20.0)


def test_calibrate_on_a_machine_that_moved_exits_1_and_writes_nothing(tiny_profile_path: Path, tmp_path: Path) -> None:
    """A limit no real run can meet: the tiny network's baseline is timed afresh and never exactly at c'_id."""
    before = tiny_profile_path.read_bytes()
    out = tmp_path / "calibrated.json"
    result = runner.invoke(app, ["calibrate", "--profile", str(tiny_profile_path), "--networks", "3", "--rounds", "4",
                                 "--sweeps", "1", "--max-drift", "1e-9", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "during the calibration against c'_id" in result.output and "nothing was written" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and tiny_profile_path.read_bytes() == before


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
    ok = runner.invoke(app, ["fidelity", "--profile", str(calibrated_path), "--samples", "5", "--rounds", "6",
                             "--sweeps", "1", "--no-extremes", "--no-retime-structure"])
    assert ok.exit_code == 0, ok.output
    assert "| same profile without its calibration |" in ok.output


@pytest.mark.parametrize("fixture", ["calibrated_path", "offset_path"])
def test_calibration_round_trips(fixture: str, request: pytest.FixtureRequest) -> None:
    cal = Profile.load(request.getfixturevalue(fixture)).calibration
    assert cal is not None and Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def test_a_calibration_indistinguishable_from_none_says_so() -> None:
    nets = [CalibrationNetwork(k, 100.0 + 10 * k, 100.0 + 10 * k + r, NetworkKind.RANDOM, 10.0 * k)
            for k, r in enumerate([-1.0, 1.0, -0.5, 0.5, 0.0, 0.2])]
    loose = Calibration.fit(CalibrationForm.AFFINE, nets)
    assert loose.indistinguishable_from_none and "not distinguishable from none" in loose.summary()
    tight = Calibration.fit(CalibrationForm.AFFINE, [dataclasses.replace(n, measured_ms=n.predicted_ms + 5.0 + 0.1 * n.operations_ms)
                                                       for n in nets])
    assert tight.factor == pytest.approx(1.1) and tight.offset == pytest.approx(5.0)
    assert not tight.indistinguishable_from_none and "not distinguishable" not in tight.summary()


def test_check_warns_when_the_offset_is_not_distinguishable_from_zero() -> None:
    """Shipped profiles: the H100 fp32 offset's interval spans 0 (a warning); the CPU ORT one does not."""
    root = Path(__file__).resolve().parent.parent / "profiles"
    doubtful = Profile.load(root / "h100-7ca37dc8-torch-fp32-768x1536.json")
    clear = Profile.load(root / "cpu-6d78dc83-onnxruntime-fp32-768x1536.json")
    assert doubtful.calibration is not None and clear.calibration is not None
    lo, hi = doubtful.calibration.offset_ci95
    assert lo <= 0 <= hi and doubtful.calibration.indistinguishable_from_none
    assert not clear.calibration.offset_includes_zero
    assert "not distinguishable from none" in doubtful.calibration.summary()
    assert "not distinguishable" not in clear.calibration.summary()
    levels = {f.level for f in check_profile(doubtful) if f.message.startswith("calibrated:")}
    assert levels == {"warning"}
    assert {f.level for f in check_profile(clear) if f.message.startswith("calibrated:")} == {"info"}


def test_check_warns_about_a_calibration_timed_on_a_machine_that_had_moved() -> None:
    """The H100 fp32 calibration of 27 Nov (baseline 8.29 ms against c'_id 5.81 ms) is kept in the results with
    a warning; the shipped CPU calibration (+11.9 %) is within the limit."""
    moved = Profile.load(ROOT / "benchmarks" / "results" / "profiles"
                         / "h100-2677974b-torch-fp32-20261127T2211-calibrated-at-drift-plus42pct.json")
    within = Profile.load(ROOT / "profiles" / "cpu-6d78dc83-onnxruntime-fp32-768x1536.json")
    assert calibration_drift_pct(moved) == pytest.approx(42.5, abs=0.05)
    assert calibration_drift_pct(within) == pytest.approx(11.9, abs=0.05)
    warned = [f for f in check_profile(moved) if f.message.startswith("calibrated while the baseline")]
    assert [f.level for f in warned] == ["warning"] and "+42.5 %" in warned[0].message
    assert not any(f.message.startswith("calibrated while") for f in check_profile(within))
    assert calibration_drift_pct(dataclasses.replace(within, calibration=None)) is None
