"""casprof fidelity: the agreement figures on hand-computed inputs, refusals, and a real run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casprof.cli.app import app
from casprof.fidelity import FidelitySettings, block_order, draw_candidates
from casprof.fidelity_metrics import agreement, linear_fit, proxy_agreement, retest_error, retest_kendall_tau
from casprof.fidelity_report import report_markdown
from casprof.hardware import HardwareFingerprint
from casprof.ops import CELL_TYPES
from casprof.profile import Profile
from tests._fidelity_support import two_sweep_order, warmed_blocks
from tests._runner_support import ScriptedRunner

runner = CliRunner()


def test_agreement_on_hand_computed_errors() -> None:
    a = agreement([105.0, 190.0, 330.0, 360.0], [100.0, 200.0, 300.0, 400.0])  # errors +5, -5, +10, -10 %
    assert a.mape == pytest.approx(7.5)
    assert a.worst == pytest.approx(10.0)
    assert a.within_5 == pytest.approx(0.5) and a.within_10 == pytest.approx(1.0)
    assert a.kendall_tau == pytest.approx(1.0) and a.spearman_rho == pytest.approx(1.0)
    assert a.bias == pytest.approx(0.0) and a.spread == pytest.approx(62.5 ** 0.5)  # mean of 25, 25, 100, 100
    shifted = agreement([104.0, 208.0, 312.0], [100.0, 200.0, 300.0])  # all +4 %: a level shift, no scatter
    assert shifted.bias == pytest.approx(4.0) and shifted.spread == pytest.approx(0.0, abs=1e-9)
    assert shifted.mape == pytest.approx(4.0) and shifted.kendall_tau == pytest.approx(1.0)
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


def test_retest_kendall_tau_counts_the_pairs_the_two_measurements_order_alike() -> None:
    # 4 networks, 6 pairs; the second measurement swaps the order of the first two: 5 concordant, 1 discordant
    assert retest_kendall_tau([100.0, 110.0, 200.0, 300.0], [112.0, 108.0, 210.0, 290.0]) == pytest.approx(4 / 6)
    assert retest_kendall_tau([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert retest_kendall_tau([5.0], [5.0]) is None
    assert retest_kendall_tau([5.0, 5.0], [4.0, 6.0]) is None


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


def _as_recorded_before_signatures(d: dict, capability: str) -> None:
    """The block as profiles recorded it before the CPU's signature and vector extension were."""
    cpu = d["hardware"]["cpu"]
    cpu.pop("signature", None)
    cpu.pop("vector_isa", None)
    cpu["capability"] = capability
    d["hardware"]["digest"] = HardwareFingerprint.from_dict(d["hardware"]).digest()


def _other_generation_recorded_before_signatures(d: dict) -> None:
    # same brand string and cores, other torch kernels: the AVX-512 EPYC profiles against an AVX2 EPYC
    present = d["hardware"]["cpu"]["capability"]
    _as_recorded_before_signatures(d, "AVX2" if present == "AVX512" else "AVX512")


@pytest.mark.parametrize(
    "edit, args, message",
    [
        (None, ["--samples", "4"], "at least 5 random genotypes"),
        (lambda d: d.__setitem__("method", "estimated"), [], "is an estimate"),
        (lambda d: d["settings"].__setitem__("backend", "foo"), [], "settings.backend 'foo' disagrees with its backend block ('torch')"),
        (lambda d: d["settings"].__setitem__("seed", "x"), [], "settings block is malformed"),
        (lambda d: d["baseline"].__setitem__("latency_ms", {"value": -1.0}), [], "c'_id is -1 ms"),
        (_other_hardware, [], "Imaginary CPU 9000"),
        (_other_generation_recorded_before_signatures, [], "kernels) and "),  # "... and no CUDA GPU" or "... and CUDA GPU 'X'"
        (None, ["--rounds", "3"], "even number"),
        (None, ["--rounds", "4", "--sweeps", "5"], "between 1 and the number of rounds (4)"),
        (None, ["--sweeps", "0"], "between 1 and the number of rounds"),
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


def test_profile_recorded_before_signatures_is_still_this_machine(tiny_profile_path: Path, tmp_path: Path) -> None:
    from casprof.fidelity import check_can_measure
    from casprof.hardware import detect_hardware

    here = detect_hardware()
    d = json.loads(tiny_profile_path.read_text())
    assert d["hardware"]["digest"] == here.digest() and d["hardware"]["cpu"]["signature"] == here.cpu.signature
    _as_recorded_before_signatures(d, here.cpu.capability)
    assert d["hardware"]["digest"] == here.digest(legacy=True)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))
    check_can_measure(Profile.load(path), here)  # accepted: same identity, same kernels


def test_fidelity_repeats_the_profiles_memory_arena(tiny_profile_path: Path) -> None:
    """A check measures as its profile did: the shared CPU arena when the profile used it, an arena
    per session for profiles that predate it."""
    from casprof.fidelity import measure_settings_of

    p = Profile.load(tiny_profile_path)
    older = dataclasses.replace(p, settings={k: v for k, v in p.settings.items() if k != "ort_shared_arena"})
    assert measure_settings_of(older).ort_shared_arena is False
    shared = dataclasses.replace(p, settings={**p.settings, "backend": "onnxruntime", "ort_shared_arena": True})
    assert measure_settings_of(shared).ort_shared_arena is True


def test_fidelity_refuses_a_missing_report_folder(tiny_profile_path: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["fidelity", "--profile", str(tiny_profile_path), "--report", str(tmp_path / "no")])
    assert result.exit_code == 2 and "does not exist" in result.output
    a_file = tmp_path / "report.md"
    a_file.write_text("x")
    result = runner.invoke(app, ["fidelity", "--profile", str(tiny_profile_path), "--report", str(a_file)])
    assert result.exit_code == 2 and f"The output folder {a_file} is a file." in result.output  # before any timing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_fidelity_console_script_measures_and_reports(tiny_profile_path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).with_name("casprof")
    cmd = [str(exe), "fidelity", "--profile", str(tiny_profile_path), "--samples", "5", "--rounds", "6",
           "--seed", "1", "--retime-structure", "--report", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| profile (c'_id + Σ edge costs) |" in proc.stdout and "Test-retest error" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fidelity.json", "fidelity.md", "fidelity.png"]
    report = json.loads((tmp_path / "fidelity.json").read_text())
    nets = report["networks"]
    assert report["settings"]["sweeps"] == 3  # no --sweeps: 4, fewer where a sweep would get under 2 of the 6 rounds
    assert len(nets) == 7 and {n["name"] for n in nets} >= {"all-cheapest", "all-most-expensive"}
    for n in nets:
        assert len(n["samples_ms"][0]) == 3 and len(n["samples_ms"][1]) == 3  # 6 rounds alternate instances
        assert n["measured_ms"] > 0 and n["macs"] > 0 and n["params"] > 0
        assert math.isclose(n["error_pct"], 100 * (n["predicted_ms"] - n["measured_ms"]) / n["measured_ms"])
        diffs = [t - b for ts, bs in zip(n["samples_ms"], n["brackets_ms"]) for t, b in zip(ts, bs)]
        assert math.isclose(n["measured_ms"], report["summary"]["baseline_profile_ms"] + statistics.median(diffs))
        assert math.isclose(n["raw_ms"], statistics.median(n["samples_ms"][0] + n["samples_ms"][1]))
        ratios = [t / b for ts, bs in zip(n["samples_ms"], n["brackets_ms"]) for t, b in zip(ts, bs)]
        assert math.isclose(n["ratio_anchored_ms"], report["summary"]["baseline_profile_ms"] * statistics.median(ratios))
    s = report["summary"]
    ratio_errors = [100 * (n["predicted_ms"] - n["ratio_anchored_ms"]) / n["ratio_anchored_ms"] for n in nets]
    assert s["ratio_anchored"]["bias"] == pytest.approx(statistics.mean(ratio_errors))
    assert "| profile vs ratio-anchored times |" in proc.stdout
    assert s["baseline_now_ms"] > 0 and s["raw"]["test_retest_pct"] >= 0
    assert math.isclose(s["baseline_drift_pct"], 100 * (s["baseline_now_ms"] / s["baseline_profile_ms"] - 1))
    assert "anchored" in proc.stdout and "Raw, for comparison" in proc.stdout
    assert 0 <= s["profile"]["within_5"] <= s["profile"]["within_10"] <= 1
    assert s["test_retest_pct"] >= 0
    first, second = [n["first_ms"] for n in nets], [n["second_ms"] for n in nets]
    assert s["test_retest_kendall_tau"] == pytest.approx(retest_kendall_tau(first, second))
    assert f"Test-retest Kendall τ (m1 against m2, each from half the runs): {s['test_retest_kendall_tau']:.3f}" in proc.stdout
    assert (tmp_path / "fidelity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --retime-structure: the structure terms timed beside the networks, each with its samples, and their effect
    terms = report["structure_terms"]
    # the three identity probes and the derived_identity probe of every cell type (schema 6)
    assert len(terms) == 4 * len(Profile.load(tiny_profile_path).edge_model.cells)  # type: ignore[union-attr]
    assert report["profile"]["schema_edge_model"].endswith("(schema 6)")
    for t in terms:
        assert len(t["now_samples_ms"]) == 6 and math.isclose(t["now_ms"], statistics.median(t["now_samples_ms"]))
        assert math.isclose(t["change_ms"], t["now_ms"] - t["profile_ms"])
    shifts = [100 * (n["predicted_structure_now_ms"] - n["predicted_ms"]) / n["predicted_ms"] for n in nets]
    assert math.isclose(s["structure_shift_pct"], statistics.mean(shifts))
    assert "Structure terms of the per-edge model" in proc.stdout


def test_fidelity_without_retiming_the_structure(tiny_profile_path: Path) -> None:
    result = runner.invoke(app, ["fidelity", "--profile", str(tiny_profile_path), "--samples", "5", "--rounds", "6",
                                 "--no-extremes", "--no-retime-structure"])
    assert result.exit_code == 0, result.output
    assert "| profile (c'_id + Σ edge costs) |" in result.output
    assert "Structure terms" not in result.output and "structure terms timed now" not in result.output


def test_runs_are_bracketed_by_rotating_baseline_instances() -> None:
    from casprof.fidelity import time_networks

    log: list[str] = []
    baselines = [ScriptedRunner("B0", [100.0, 104.0, 108.0], log), ScriptedRunner("B1", [102.0, 106.0, 110.0], log)]
    runners = {"a": [ScriptedRunner("a0", [150.0], log), ScriptedRunner("a1", [160.0], log)],
               "b": [ScriptedRunner("b0", [250.0], log), ScriptedRunner("b1", [260.0], log)]}
    got = time_networks(runners, baselines, rounds=range(2), seed=0, progress=lambda p: None)
    # each round is B n B n B: baseline runs at positions 0, 2, 4 and 5, 7, 9, the instances in turn
    assert [log[i] for i in (0, 2, 4, 5, 7, 9)] == ["B0", "B1", "B0", "B1", "B0", "B1"]
    assert sorted(log[i] for i in (1, 3)) == ["a0", "b0"] and sorted(log[i] for i in (6, 8)) == ["a1", "b1"]  # round r: instance r % 2
    assert got.baseline == [100.0, 102.0, 104.0, 106.0, 108.0, 110.0]
    first_a = log.index("a0")  # its bracket: the baseline runs just before and after it
    assert got.brackets["a"][0] == [(got.baseline[first_a // 2] + got.baseline[first_a // 2 + 1]) / 2]
    assert got.times["a"] == ([150.0], [160.0]) and got.times["b"] == ([250.0], [260.0])


def test_network_result_is_anchored_at_the_profile_baseline() -> None:
    from casprof.fidelity import Candidate, network_result
    from casprof.genotype import random_genotype

    from tests.conftest import TINY

    r = network_result(Candidate("n", random_genotype(0, TINY)), predicted=70.0, uniform=None, baseline_ms=50.0,
                       times=([110.0, 130.0], [120.0]), brackets=([100.0, 100.0], [105.0]), exact=(1e9, 1e6))
    assert (r.first_ms, r.second_ms, r.measured_ms) == (70.0, 65.0, 65.0)  # 50 + median(10, 30); 50 + 15; 50 + median(10, 30, 15)
    assert (r.raw_first_ms, r.raw_second_ms, r.raw_ms) == (120.0, 120.0, 120.0)
    assert r.ratio_ms == pytest.approx(50.0 * 120.0 / 105.0)  # 50 x median(1.1, 1.3, 120/105)
    assert r.error_pct == pytest.approx(100 * 5 / 65)


def test_networks_are_timed_in_blocks_that_cover_every_candidate(tiny_profile_path: Path) -> None:
    """A block size smaller than the candidate count still measures every network, twice over."""
    from casprof.fidelity import run_fidelity
    from casprof.hardware import detect_hardware

    with pytest.raises(Exception, match="at least 2 networks"):
        FidelitySettings(samples=5, block_size=1)
    with pytest.raises(Exception, match="At least one baseline instance"):
        FidelitySettings(samples=5, baseline_instances=0)
    p = Profile.load(tiny_profile_path)
    # no extremes: the all-cheapest network, cheaper than the baseline at this tiny size, is the one a slow
    # spell can take below 0 ms (a refusal, tested on its own); the console-script test keeps them
    settings = FidelitySettings(samples=7, seed=1, rounds=6, block_size=3, extremes=False)  # structure not re-timed
    report = run_fidelity(p, detect_hardware(), settings)
    names = [c.name for c in draw_candidates(p, settings)]
    assert [r.name for r in report.networks] == names and len(names) == 7  # in blocks of 3, 3 and 1
    # every network timed in both halves: real times, and anchored ones above 0 (else the check refuses)
    assert all(r.raw_first_ms is not None and r.raw_first_ms > 0 and r.raw_second_ms is not None and r.raw_second_ms > 0
               for r in report.networks)
    assert all(r.first_ms > 0 and r.second_ms > 0 and len(r.samples_ms[0]) == len(r.samples_ms[1]) == 3
               for r in report.networks)
    # not re-timed: no structure block, no diagnostic row, nothing in the JSON
    assert report.structure == () and report.structure_agreement is None and report.structure_shift_pct is None
    assert report.to_dict()["structure_terms"] == [] and "structure terms timed now" not in report_markdown(report)
    # the machine's state: a baseline far from the profile's c'_id is a warning in the JSON and the Markdown
    assert report.baseline_profile_ms is not None
    for drift, warned in ((9.9, False), (10.1, True), (-12.0, True), (0.0, False)):
        drifted = dataclasses.replace(report, baseline_now_ms=report.baseline_profile_ms * (1 + drift / 100))
        assert bool(drifted.warnings) is warned and drifted.to_dict()["warnings"] == list(drifted.warnings)
        assert ("**Warning:** The profile's baseline network ran" in report_markdown(drifted)) is warned
        if warned:
            assert f"{drift:+.1f} % from its c'_id" in drifted.warnings[0]


def test_sweeps_share_the_rounds_out_in_order() -> None:
    assert [list(FidelitySettings(samples=5, rounds=12).sweep_rounds(k)) for k in range(4)] == [
        list(range(k, k + 3)) for k in range(0, 12, 3)]  # 4 sweeps by default
    assert [list(FidelitySettings(samples=5, rounds=12, sweeps=2).sweep_rounds(k)) for k in range(2)] == [
        list(range(6)), list(range(6, 12))]
    parts = [FidelitySettings(samples=5, rounds=10, sweeps=3).sweep_rounds(k) for k in range(3)]
    assert [(r.start, r.stop) for r in parts] == [(0, 4), (4, 7), (7, 10)]
    assert [list(FidelitySettings(samples=5, rounds=2, sweeps=1).sweep_rounds(0))] == [[0, 1]]
    for bad in (0, 13):
        with pytest.raises(Exception, match="sweeps must be between 1 and the number of rounds"):
            FidelitySettings(samples=5, rounds=12, sweeps=bad)


def test_a_later_sweep_continues_the_rounds_of_each_block() -> None:
    """Round r uses instance r % 2 in every sweep; the times of a block's sweeps add up per instance."""
    from casprof.fidelity import time_networks

    log: list[str] = []
    base = [ScriptedRunner("B", [100.0] * 9, log)]
    first = time_networks({"a": [ScriptedRunner("a0", [150.0], log), ScriptedRunner("a1", [160.0], log)]}, base,
                          rounds=range(0, 2), seed=0, progress=lambda p: None)
    # a new sweep: new instances of the same network, rounds 2 and 3
    got = time_networks({"a": [ScriptedRunner("c0", [170.0], log), ScriptedRunner("c1", [180.0], log)]}, base,
                        rounds=range(2, 4), seed=0, progress=lambda p: None, into=first)
    assert got is first and got.times["a"] == ([150.0, 170.0], [160.0, 180.0])
    assert got.brackets["a"] == ([100.0, 100.0], [100.0, 100.0]) and len(got.baseline) == 8
    assert [x for x in log if x != "B"] == ["a0", "a1", "c0", "c1"]


def test_every_block_is_measured_once_per_sweep(tiny_profile_path: Path) -> None:
    from casprof.fidelity import run_fidelity
    from casprof.hardware import detect_hardware

    stages: list[str] = []
    p = Profile.load(tiny_profile_path)
    settings = FidelitySettings(samples=7, seed=1, rounds=8, block_size=4, sweeps=2, retime_structure=True, extremes=False)
    report = run_fidelity(p, detect_hardware(), settings, progress=lambda e: stages.append(e.stage))
    # every block once per sweep, the second sweep in the reverse order of the first
    assert warmed_blocks(stages) == two_sweep_order(["block 1/2", "block 2/2", "structure probes"], 1)
    assert block_order(3, 1, 1) == block_order(3, 1, 0)[::-1]
    assert all(len(r.samples_ms[0]) == len(r.samples_ms[1]) == 4 for r in report.networks)  # 8 rounds, 2 instances
    assert report.settings["sweeps"] == 2 and report.settings["retime_structure"] is True
    # the structure probes were timed in the same rounds: every term of the profile's edge model, 8 samples each
    assert p.edge_model is not None
    assert [t.probe.key for t in report.structure] == [
        f"{c}/identity@{v}" for c in p.edge_model.cells
        for v in ("inputs_only", "rest_on_input0", "rest_on_input1", "derived_identity")]
    assert all(t.now.measurement is not None and t.now.measurement.n == 8 for t in report.structure)
    assert all(t.profile is p.edge_model.cells[t.probe.cell_type].inputs_only["latency_ms"]
               for t in report.structure if t.probe.variant.value == "inputs_only")
    assert report.structure_agreement is not None and all(r.structure_now_ms is not None for r in report.networks)
    d = report.to_dict()
    assert len(d["structure_terms"]) == len(report.structure) and d["summary"]["structure_now"]["n"] == len(report.networks)
    md = report_markdown(report)
    assert "diagnostic: same profile, structure terms timed now" in md and f"| {report.structure[0].probe.key} |" in md


def test_a_network_that_ran_faster_than_its_brackets_by_c_id_is_refused() -> None:
    """Relative errors against an anchored latency <= 0 are undefined: one sentence, not a number."""
    from casprof.errors import MeasurementError
    from casprof.fidelity import Candidate, network_result, resolved_anchored_ms
    from casprof.genotype import random_genotype

    from tests.conftest import TINY

    assert resolved_anchored_ms("n", 1.0, ([2.0, 2.0], [2.0]), ([2.5, 2.5], [2.5])) == 0.5  # overall and per instance
    # overall 1 + median(-0.5, -0.5, -0.5, -1.5) = 0.5 ms, but instance 2 alone 1 - 1.5 = -0.5 ms
    with pytest.raises(MeasurementError, match=r"Network 'n' measured -0\.5 ms on instance 2 after anchoring .* "
                                               r"-1\.5 ms from its bracketing baseline runs over 1 run\(s\), the baseline "
                                               r"network taking 3\.5 ms around it\)"):
        resolved_anchored_ms("n", 1.0, ([2.0, 2.0, 2.0], [2.0]), ([2.5, 2.5, 2.5], [3.5]))
    resolved_anchored_ms("n", 1.0, ([2.0, 2.0, 2.0], [2.0]), ([2.5, 2.5, 2.5], [3.5]), per_instance=False)  # the median only
    with pytest.raises(MeasurementError, match=r"measured -0\.25 ms after anchoring"):  # 1 + median(-1, -1.5)
        resolved_anchored_ms("n", 1.0, ([2.0], [2.0]), ([3.0], [3.5]), per_instance=False)
    with pytest.raises(MeasurementError, match="Network 'm' measured 0 ms after anchoring"):  # exactly 0 is refused too
        network_result(Candidate("m", random_genotype(0, TINY)), predicted=7.0, uniform=None, baseline_ms=1.0,
                       times=([2.0], [2.0]), brackets=([3.0], [3.0]), exact=(1e9, 1e6))


def _slow_brackets(monkeypatch: pytest.MonkeyPatch, by_ms: float) -> None:
    """Time the networks for real, then lengthen every bracket by ``by_ms`` (a slow spell of the
    baseline runs, which no real run can be made to have on purpose)."""
    import casprof.fidelity as fidelity

    real = fidelity.time_blocks

    def slowed(*args, **kwargs):  # type: ignore[no-untyped-def]
        got = real(*args, **kwargs)
        got.brackets.update({k: tuple([b + by_ms for b in bs] for bs in v) for k, v in got.brackets.items()})
        return got

    monkeypatch.setattr(fidelity, "time_blocks", slowed)


@pytest.mark.parametrize("command", ["fidelity", "calibrate"])
def test_a_network_swamped_by_its_brackets_exits_1_with_one_sentence_and_writes_nothing(
        tiny_profile_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    _slow_brackets(monkeypatch, by_ms=10 * Profile.load(tiny_profile_path).baseline["latency_ms"].value)
    out = tmp_path / "out"
    out.mkdir()
    args = (["--samples", "5", "--report", str(out)] if command == "fidelity"
            else ["--networks", "3", "--max-drift", "1000", "--out", str(out / "calibrated.json")])  # not the drift guard
    result = runner.invoke(app, [command, "--profile", str(tiny_profile_path), "--rounds", "2", "--sweeps", "1",
                                 "--no-retime-structure" if command == "fidelity" else "--form=offset", *args])
    assert result.exit_code == 1, result.output
    assert "Error: Network '" in result.output and "after anchoring" in result.output and "more --rounds" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)  # the CLI's exit, not the error
    assert list(out.iterdir()) == []


def test_the_default_sweeps_give_every_sweep_both_instances() -> None:
    """4 sweeps (the default 24 rounds: 6 a sweep), fewer where a sweep would get under 2 rounds, so that
    every sweep times both instances of every network (round r runs instance r % 2)."""
    from casprof.calibration import CalibrationSettings
    from casprof.sweeps import NETWORK_SWEEPS, network_sweeps

    assert NETWORK_SWEEPS == FidelitySettings().sweeps == CalibrationSettings().sweeps == 4  # timed alike
    assert [network_sweeps(r) for r in (2, 4, 6, 8, 24, 48)] == [1, 2, 3, 4, 4, 4]
    for rounds in range(2, 30, 2):
        settings = FidelitySettings(samples=5, rounds=rounds, sweeps=network_sweeps(rounds))
        assert all({r % 2 for r in settings.sweep_rounds(k)} == {0, 1} for k in range(settings.sweeps))


def test_block_orders_balance_every_blocks_place_over_each_pair_of_sweeps() -> None:
    for n in (1, 2, 4, 5):
        for seed in (0, 7):
            orders = [block_order(n, seed, k) for k in range(6)]
            assert all(sorted(o) == list(range(n)) for o in orders)
            for k in range(0, 6, 2):  # a sweep and the next: one order and its reverse, so equal mean places
                assert orders[k + 1] == orders[k][::-1]
            assert block_order(n, seed, 0) == orders[0]  # seeded: the same every time
    assert block_order(4, 0, 2) != block_order(4, 0, 0)  # the next pair starts elsewhere


def test_the_baseline_instances_are_opened_once_per_sweep_for_all_its_blocks(tiny_profile_path: Path) -> None:
    from casprof.fidelity import run_fidelity
    from casprof.hardware import detect_hardware

    events: list[tuple[str, str]] = []
    settings = FidelitySettings(samples=6, seed=1, rounds=4, block_size=2, sweeps=2, extremes=False)  # 3 blocks
    run_fidelity(Profile.load(tiny_profile_path), detect_hardware(), settings,
                 progress=lambda e: events.append((e.stage, e.detail)))
    opened = [stage for stage, detail in events if stage.startswith("preparing networks") and detail == "baseline"]
    firsts = [f"preparing networks (block {block_order(3, 1, k)[0] + 1}/3, sweep {k + 1}/2)" for k in range(2)]
    assert opened == firsts  # by the first block of each sweep only; the others reuse them
    warmed = [stage for stage, detail in events if stage.startswith("warming up (") and detail == "baseline"]
    assert warmed == [f"warming up{f[len('preparing networks'):]}" for f in firsts]
