"""casprof fidelity: the agreement figures on hand-computed inputs, refusals, and a real run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casprof.cli.app import app
from casprof.fidelity import FidelitySettings, draw_candidates
from casprof.fidelity_metrics import agreement, linear_fit, proxy_agreement, retest_error
from casprof.hardware import HardwareFingerprint
from casprof.ops import CELL_TYPES
from casprof.profile import Profile

runner = CliRunner()


def test_agreement_on_hand_computed_errors() -> None:
    a = agreement([105.0, 190.0, 330.0, 360.0], [100.0, 200.0, 300.0, 400.0])  # errors +5, -5, +10, -10 %
    assert a.mape == pytest.approx(7.5)
    assert a.worst == pytest.approx(10.0)
    assert a.within_5 == pytest.approx(0.5) and a.within_10 == pytest.approx(1.0)
    assert a.kendall_tau == pytest.approx(1.0) and a.spearman_rho == pytest.approx(1.0)
    flipped = agreement([4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert flipped.kendall_tau == pytest.approx(-1.0) and flipped.mape == pytest.approx((300 + 50 + 100 / 3 + 75) / 4)
    with pytest.raises(ValueError):
        agreement([1.0, 2.0], [0.0, 1.0])


def test_proxies_are_fitted_linearly_before_comparison() -> None:
    fit = linear_fit([1.0, 2.0, 3.0], [3.0, 5.0, 7.0])
    assert fit.slope == pytest.approx(2.0) and fit.intercept == pytest.approx(1.0)
    # a proxy proportional to latency up to an offset is a perfect predictor once fitted
    a, f = proxy_agreement([10.0, 20.0, 40.0], [101.0, 201.0, 401.0])
    assert a.mape == pytest.approx(0.0, abs=1e-9) and f.slope == pytest.approx(10.0)
    # least squares through (0, 0), (1, 1), (2, 1): slope 0.5, intercept 1/6
    f2 = linear_fit([0.0, 1.0, 2.0], [0.0, 1.0, 1.0])
    assert f2.slope == pytest.approx(0.5) and f2.intercept == pytest.approx(1 / 6)
    assert linear_fit([2.0, 2.0], [1.0, 3.0]).intercept == pytest.approx(2.0)


def test_retest_error_is_mean_relative_disagreement() -> None:
    assert retest_error([100.0, 200.0], [110.0, 180.0]) == pytest.approx(100 * (10 / 105 + 20 / 190) / 2)
    assert retest_error([5.0], [5.0]) == 0.0


def test_candidates_are_seeded_and_include_the_extremes(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    a = draw_candidates(p, FidelitySettings(samples=5, seed=3))
    b = draw_candidates(p, FidelitySettings(samples=5, seed=3))
    assert [c.genotype for c in a] == [c.genotype for c in b] and len(a) == 7
    assert len({c.genotype.cells().__repr__() for c in a}) == 7
    lat = "latency_ms"
    cheapest = a[-2].genotype
    for t in CELL_TYPES:
        ops = {op for node in cheapest.cell(t) for op, _ in node}
        assert len(ops) == 1
        (op,) = ops
        assert p.cost(t, op, lat).value == min(v[lat].value for v in p.costs[t].values())


def _edited(src: Path, dst: Path, edit) -> Path:
    d = json.loads(src.read_text())
    edit(d)
    dst.write_text(json.dumps(d))
    return dst


def _other_hardware(d: dict) -> None:
    d["hardware"]["cpu"]["model"] = "Imaginary CPU 9000"
    d["hardware"]["digest"] = HardwareFingerprint.from_dict(d["hardware"]).digest()


@pytest.mark.parametrize(
    "edit, args, message",
    [
        (None, ["--samples", "4"], "at least 5 random genotypes"),
        (lambda d: d.__setitem__("method", "estimated"), [], "is an estimate"),
        (_other_hardware, [], "Imaginary CPU 9000"),
        (None, ["--rounds", "3"], "even number"),
    ],
)
def test_fidelity_bad_input_exits_2_and_writes_nothing(tiny_profile_path: Path, tmp_path: Path, edit, args, message) -> None:
    profile = tiny_profile_path if edit is None else _edited(tiny_profile_path, tmp_path / "p.json", edit)
    report = tmp_path / "report"
    report.mkdir()
    result = runner.invoke(app, ["fidelity", "--profile", str(profile), "--report", str(report), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(report.iterdir()) == []


def test_fidelity_refuses_a_missing_report_folder(tiny_profile_path: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["fidelity", "--profile", str(tiny_profile_path), "--report", str(tmp_path / "no")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_fidelity_console_script_measures_and_reports(tiny_profile_path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).with_name("casprof")
    cmd = [str(exe), "fidelity", "--profile", str(tiny_profile_path), "--samples", "5", "--rounds", "2",
           "--seed", "1", "--report", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| profile (c'_id + Σ edge costs) |" in proc.stdout and "Test-retest error" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fidelity.json", "fidelity.md", "fidelity.png"]
    report = json.loads((tmp_path / "fidelity.json").read_text())
    nets = report["networks"]
    assert len(nets) == 7 and {n["name"] for n in nets} >= {"all-cheapest", "all-most-expensive"}
    for n in nets:
        assert len(n["samples_ms"][0]) == 1 and len(n["samples_ms"][1]) == 1  # 2 rounds alternate instances
        assert n["measured_ms"] > 0 and n["macs"] > 0 and n["params"] > 0
        assert math.isclose(n["error_pct"], 100 * (n["predicted_ms"] - n["measured_ms"]) / n["measured_ms"])
    s = report["summary"]
    assert 0 <= s["profile"]["within_5"] <= s["profile"]["within_10"] <= 1
    assert s["test_retest_pct"] >= 0
    assert (tmp_path / "fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_networks_are_timed_in_blocks_that_cover_every_candidate(tiny_profile_path: Path) -> None:
    """A block size smaller than the candidate count still measures every network, twice over."""
    from casprof.fidelity import run_fidelity
    from casprof.hardware import detect_hardware

    with pytest.raises(Exception, match="at least 2 networks"):
        FidelitySettings(samples=5, block_size=1)
    p = Profile.load(tiny_profile_path)
    settings = FidelitySettings(samples=5, seed=1, rounds=2, block_size=3)
    report = run_fidelity(p, detect_hardware(), settings)
    names = [c.name for c in draw_candidates(p, settings)]
    assert [r.name for r in report.networks] == names  # 7 networks in blocks of 3, 3 and 1
    assert all(r.first_ms > 0 and r.second_ms > 0 for r in report.networks)
