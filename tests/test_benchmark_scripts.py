"""Benchmark scripts that need no timing, run as real subprocesses on committed profiles and results.

A GPU profile is compared with the registry's spec-sheet roofline of its device (no GPU needed), and
a recorded fidelity check is rescored with another calibration; the parts of the scripts that time
things are exercised by running them (see README).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from casprof.devices import get_device

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_estimate_vs_measured_compares_a_gpu_profile_with_its_spec_sheet(tmp_path: Path) -> None:
    profile = "profiles/h100-ca448965-torch-fp16-768x1536.json"
    run = subprocess.run([sys.executable, "benchmarks/estimate_vs_measured.py", "--profiles", profile, "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "estimate_vs_measured.json").read_text())
    (c,) = report["comparisons"]
    assert (c["device"], c["precision"], c["gpu"]) == ("h100", "fp16", ["NVIDIA H100 80GB HBM3"])
    h100 = get_device("h100")
    assert c["roofline"]["peak_tflops"] == pytest.approx(h100.peak_fp16_tflops)
    assert c["roofline"]["bandwidth_gbs"] == pytest.approx(h100.memory_bandwidth_gbs)
    assert len(c["rows"]) == 29 and all(r["measured_ms"] is not None for r in c["rows"])
    assert -1 <= c["overall"]["estimate"]["kendall_tau"] <= 1
    md = (tmp_path / "estimate_vs_measured.md").read_text()
    assert f"{h100.peak_fp16_tflops:.1f} TFLOP/s" in md and "SPEC-SHEET" in md


def test_fidelity_rescore_replaces_the_offset_by_a_proportional_calibration(tmp_path: Path) -> None:
    """`fidelity_rescore.py --op-scale` on a committed torch check and its calibrated profile (real data, nothing timed)."""
    import statistics

    stem = "benchmarks/results/fidelity_cpu_torch-keep_6d78dc8361ef86df_keep-calibrated-48-rounds"
    profile = json.loads((ROOT / f"{stem}.profile.json").read_text())
    check = json.loads((ROOT / f"{stem}.json").read_text())
    c_id, offset = profile["baseline"]["latency_ms"]["value"], profile["calibration"]["offset"]["value"]
    expected_scale = statistics.median((n["measured_ms"] - c_id) / (n["predicted_ms"] - c_id)
                                       for n in profile["calibration"]["networks"])
    for extra, tag in (([], "offset"), (["--op-scale"], "scale")):
        run = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", f"{stem}.profile.json", f"{stem}.json",
                              "--tag", tag, "--results", str(tmp_path), *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        report = json.loads((tmp_path / f"fidelity_rescore_6d78dc8361ef86df_{tag}.json").read_text())
        (row,) = report["checks"]
        cheapest = next(n for n in check["networks"] if n["name"] == "all-cheapest")
        if tag == "offset":  # the profile's own predictions: the check's recorded errors come back
            assert report["op_scale"] is None
            assert row["extremes_error_pct"]["all-cheapest"] == pytest.approx(cheapest["error_pct"])
            assert row["agreement"]["mape"] == pytest.approx(check["summary"]["profile"]["mape"])
        else:
            assert report["op_scale"] == pytest.approx(expected_scale)
            predicted = c_id + expected_scale * (cheapest["predicted_ms"] - offset - c_id)
            assert row["extremes_error_pct"]["all-cheapest"] == pytest.approx(
                100 * (predicted - cheapest["measured_ms"]) / cheapest["measured_ms"])
        assert row["agreement"]["kendall_tau"] == pytest.approx(check["summary"]["profile"]["kendall_tau"])  # a calibration cannot reorder


def test_fidelity_rescore_refits_the_calibration_in_either_form(tmp_path: Path) -> None:
    """`fidelity_rescore.py --refit offset|affine` on the same committed calibration networks and check."""
    from casprof.calibration import lad_line

    stem = "benchmarks/results/fidelity_cpu_torch-keep_6d78dc8361ef86df_keep-calibrated-48-rounds"
    profile = json.loads((ROOT / f"{stem}.profile.json").read_text())
    check = json.loads((ROOT / f"{stem}.json").read_text())
    c_id = profile["baseline"]["latency_ms"]["value"]
    nets = profile["calibration"]["networks"]
    reports = {}
    for form in ("offset", "affine"):
        run = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", f"{stem}.profile.json", f"{stem}.json",
                              "--tag", form, "--results", str(tmp_path), "--refit", form], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        reports[form] = json.loads((tmp_path / f"fidelity_rescore_6d78dc8361ef86df_{form}.json").read_text())
        assert reports[form]["refit"] == form and reports[form]["calibration"]["form"] == form
    # refitting the offset gives back the profile's own offset, so the check's own figures
    assert reports["offset"]["calibration"]["offset"]["value"] == pytest.approx(profile["calibration"]["offset"]["value"])
    assert reports["offset"]["checks"][0]["agreement"]["mape"] == pytest.approx(check["summary"]["profile"]["mape"])
    # the affine refit is the least-absolute-deviations line through the same networks
    a, b = lad_line([n["predicted_ms"] - c_id for n in nets], [n["measured_ms"] - c_id for n in nets])
    assert reports["affine"]["calibration"]["offset"]["value"] == pytest.approx(a)
    assert reports["affine"]["calibration"]["factor"]["value"] == pytest.approx(b)
    row = reports["affine"]["checks"][0]
    cheapest = next(n for n in check["networks"] if n["name"] == "all-cheapest")
    bare = cheapest["predicted_ms"] - profile["calibration"]["offset"]["value"]
    assert row["extremes_error_pct"]["all-cheapest"] == pytest.approx(
        100 * (c_id + a + b * (bare - c_id) - cheapest["measured_ms"]) / cheapest["measured_ms"])
    assert row["agreement"]["kendall_tau"] == pytest.approx(check["summary"]["profile"]["kendall_tau"])
    both = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", f"{stem}.profile.json", f"{stem}.json",
                           "--results", str(tmp_path), "--refit", "affine", "--op-scale"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert both.returncode == 2 and "pick one" in both.stderr


def test_fidelity_rescore_reanchors_a_check_at_another_profiles_baseline(tmp_path: Path) -> None:
    """`--reanchor --bare`: a committed check scored with the other of two back-to-back profiles (real data)."""
    from casprof.genotype import Genotype
    from casprof.predict import predict
    from casprof.profile import Profile

    check_path = "benchmarks/results/fidelity_cpu_onnxruntime_f86dc8a82d88c3a6_0317-profile-a.json"
    other = "benchmarks/results/profiles/cpu-f86dc8a8-onnxruntime-20261127T0329-b.json"
    check = json.loads((ROOT / check_path).read_text())
    refused = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", other, check_path,
                              "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "--reanchor" in refused.stderr  # anchored at profile A's c'_id, not B's
    run = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", other, check_path, "--reanchor",
                          "--bare", "--tag", "b", "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "fidelity_rescore_f86dc8a82d88c3a6_b.json").read_text())
    assert report["reanchor"] is True and report["calibration"] is None
    b = Profile.load(ROOT / other)
    shift = b.baseline["latency_ms"].value - check["summary"]["baseline_profile_ms"]
    assert abs(shift) > 1.0  # the two profiles' baselines differ, so re-anchoring moves something
    cheapest = next(n for n in check["networks"] if n["name"] == "all-cheapest")
    predicted = predict(b, Genotype.from_dict(cheapest["genotype"]))["latency_ms"].value
    measured = cheapest["measured_ms"] + shift
    (row,) = report["checks"]
    assert row["extremes_error_pct"]["all-cheapest"] == pytest.approx(100 * (predicted - measured) / measured)


def test_fidelity_rescore_pools_checks_of_the_same_networks(tmp_path: Path) -> None:
    """`--pool-checks`: two committed checks of the same random networks scored as one (real data, nothing timed)."""
    import numpy as np

    from casprof.genotype import Genotype
    from casprof.predict import predict
    from casprof.profile import Profile

    stem = "benchmarks/results/fidelity_cpu_onnxruntime_f86dc8a82d88c3a6"
    paths = [f"{stem}_affine.json", f"{stem}_0317-profile-a.json"]
    profile_path = "benchmarks/results/profiles/cpu-f86dc8a8-onnxruntime-20261127T0329-b.json"
    checks = [json.loads((ROOT / p).read_text()) for p in paths]
    run = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", profile_path, *paths, "--reanchor",
                          "--bare", "--pool-checks", "--tag", "pool", "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "fidelity_rescore_f86dc8a82d88c3a6_pool.json").read_text())
    single_a, single_b, pooled = report["checks"]
    assert pooled["pooled"] is True and "pooled" not in single_a
    # the two checks' profiles chose different cheapest reduce operations: that network is left out, the rest kept
    assert pooled["left_out"] == ["all-cheapest"] and pooled["networks"] == len(checks[0]["networks"]) - 1
    # the dearest network by hand: all 48 paired differences of both checks, anchored at the first check's c'_id,
    # then moved to the profile's
    b = Profile.load(ROOT / profile_path)
    nets = [next(n for n in c["networks"] if n["name"] == "all-most-expensive") for c in checks]
    diffs = [t - k for n in nets for ts, bs in zip(n["samples_ms"], n["brackets_ms"]) for t, k in zip(ts, bs)]
    assert len(diffs) == 48
    measured = b.baseline["latency_ms"].value + float(np.median(diffs))
    predicted = predict(b, Genotype.from_dict(nets[0]["genotype"]))["latency_ms"].value
    assert pooled["extremes_error_pct"]["all-most-expensive"] == pytest.approx(100 * (predicted - measured) / measured)
    assert pooled["extremes_error_pct"]["all-most-expensive"] != pytest.approx(single_a["extremes_error_pct"]["all-most-expensive"])
    assert "2 checks pooled (48 runs per network)" in (tmp_path / "fidelity_rescore_f86dc8a82d88c3a6_pool.md").read_text()
    # checks of another machine (other networks too) are refused in one sentence
    other = "benchmarks/results/fidelity_cpu_onnxruntime_6d78dc8361ef86df.json"
    refused = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", profile_path, paths[0], other,
                              "--reanchor", "--pool-checks", "--results", str(tmp_path / "x")],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and refused.stderr.count("\n") <= 1 and "pooled" in refused.stderr
    assert not (tmp_path / "x").exists()


def test_fidelity_rescore_anchors_runs_as_ratios_to_their_brackets(tmp_path: Path) -> None:
    """`--ratio-anchor`: measured = the profile's c'_id x median of (time / bracket), by hand on a committed check."""
    import numpy as np

    from casprof.profile import Profile

    check_path = "benchmarks/results/fidelity_cpu_onnxruntime_f86dc8a82d88c3a6_0317-profile-a.json"
    profile_path = "benchmarks/results/profiles/cpu-f86dc8a8-onnxruntime-20261127T0317-a.json"
    check = json.loads((ROOT / check_path).read_text())
    outs = {}
    for tag, extra in (("diff", []), ("ratio", ["--ratio-anchor"])):
        run = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", profile_path, check_path, "--bare",
                              "--tag", tag, "--results", str(tmp_path), *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        outs[tag] = json.loads((tmp_path / f"fidelity_rescore_f86dc8a82d88c3a6_{tag}.json").read_text())
    c_id = Profile.load(ROOT / profile_path).baseline["latency_ms"].value
    dear = next(n for n in check["networks"] if n["name"] == "all-most-expensive")
    ratios = [t / b for ts, bs in zip(dear["samples_ms"], dear["brackets_ms"]) for t, b in zip(ts, bs)]
    measured = c_id * float(np.median(ratios))
    # the check ran with this profile, so the difference-anchored error is the recorded one and the ratio-anchored
    # one follows from the same prediction
    (diff,), (ratio,) = outs["diff"]["checks"], outs["ratio"]["checks"]
    predicted = dear["measured_ms"] * (1 + diff["extremes_error_pct"]["all-most-expensive"] / 100)
    assert check["profile"]["calibration_offset_ms"] is None and predicted == pytest.approx(dear["predicted_ms"])
    assert ratio["extremes_error_pct"]["all-most-expensive"] == pytest.approx(100 * (predicted - measured) / measured)
    assert abs(measured - dear["measured_ms"]) > 0.5  # the two anchorings differ on this noisy VM
    assert outs["ratio"]["ratio_anchor"] is True and "ratios" in (tmp_path / "fidelity_rescore_f86dc8a82d88c3a6_ratio.md").read_text()


def test_estimate_vs_measured_carries_over_another_machines_cpu_comparison(tmp_path: Path) -> None:
    """A CPU profile of another machine cannot be calibrated here: its comparison from the previous results is
    kept (with where and when it was made) while the profile is unchanged, and dropped once it differs."""
    from casprof.hardware import detect_hardware
    from casprof.profile import Profile

    hw = detect_hardware()
    here = hw.digest()
    previous = json.loads((ROOT / "benchmarks/results/estimate_vs_measured.json").read_text())
    # a profile this machine does not take for its own (an AVX-512 EPYC takes the legacy-digest 6d78dc83 profiles for its own)
    other = next(c for c in previous["comparisons"] if c["device"] == "cpu" and c["hardware_digest"] != here
                 and not hw.recorded_here(Profile.load(ROOT / c["profile"]).hardware))
    (tmp_path / "estimate_vs_measured.json").write_text(json.dumps(previous))

    def run() -> dict:
        done = subprocess.run([sys.executable, "benchmarks/estimate_vs_measured.py", "--profiles", other["profile"],
                               "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return {"stdout": done.stdout, "report": json.loads((tmp_path / "estimate_vs_measured.json").read_text())}

    first = run()
    (kept,) = first["report"]["comparisons"]
    assert kept["rows"] == other["rows"] and kept["overall"] == other["overall"]
    assert kept["compared_on"] == other["compared_on"] and kept["compared_on"]["hardware_digest"] != here
    assert first["report"]["hardware_digest"] == here
    assert "carried over" in first["stdout"] and kept["compared_on"]["hardware_digest"] in (tmp_path / "estimate_vs_measured.md").read_text()

    stale = first["report"] | {"comparisons": [kept | {"profile_created": "1999-01-01T00:00:00Z"}]}
    (tmp_path / "estimate_vs_measured.json").write_text(json.dumps(stale))
    second = run()
    assert second["report"]["comparisons"] == []
    assert "no comparison made there is on record" in second["stdout"]


def test_shared_input_cost_benchmark_runs_and_reports_every_variant(tmp_path: Path) -> None:
    """The benchmark behind the schema-5 probe, at a tiny size (its figures are only meaningful at full size)."""
    from casprof.hardware import detect_hardware

    run = subprocess.run([sys.executable, "benchmarks/shared_input_cost.py", "--rounds", "3", "--resolution", "64x128",
                          "--threads", "1", "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / f"shared_input_cost_onnxruntime_{detect_hardware().digest()}.json").read_text())
    assert set(report["variants"]) == {"one", "both", "same"} and report["rounds"] == 3
    assert [report["variants"][k]["additive_share"] for k in ("one", "both", "same")] == pytest.approx([5 / 6, 4 / 6, 4 / 6])
    for v in report["variants"].values():
        lo, hi = v["delta_ci95"]
        assert lo <= v["delta_ms"] <= hi
    assert "| both: [(0, 0), (1, 1)] |" in run.stdout


def test_bracket_spacing_prices_a_wider_bracket_by_the_drift_it_misses(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bracket_spacing import spacing
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rng = np.random.default_rng(0)
    white = spacing(100 + rng.normal(0, 5, 4000))  # no drift: a further neighbour predicts as well
    assert white["price"] == pytest.approx(1.0, abs=0.05) and abs(white["autocorrelation_lag1"]) < 0.05
    drift = spacing(100 + np.cumsum(rng.normal(0, 1, 4000)) + rng.normal(0, 0.2, 4000))  # drift: it does not (pure walk: sqrt(1.5))
    assert drift["price"] > 1.15 and drift["autocorrelation_lag1"] > 0.9
    with pytest.raises(ValueError):
        spacing(np.ones(5))

    profile = "profiles/cpu-e6c8ed69-torch-fp32-768x1536.json"
    run = subprocess.run([sys.executable, "benchmarks/bracket_spacing.py", profile, "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (row,) = json.loads((tmp_path / "bracket_spacing.json").read_text())["rows"]
    assert row["runs"] == 576 and row["probes_per_bracket"] == 1 and row["backend"] == "torch"
    assert row["sd_adjacent_ms"] < row["sd_one_further_ms"] < row["sd_no_bracket_ms"]
    assert "cpu-e6c8ed69-torch-fp32-768x1536.json" in (tmp_path / "bracket_spacing.md").read_text()
    for bad in ("profiles/no-such-profile.json", "profiles/gtx1070.json"):  # missing; an estimate has no runs
        out = tmp_path / "bad"
        run = subprocess.run([sys.executable, "benchmarks/bracket_spacing.py", bad, "--results", str(out)],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and "Traceback" not in run.stderr and bad in run.stderr
        assert not out.exists()  # nothing written


def test_profile_benchmark_refuses_a_keep_dir_that_is_a_file_before_measuring(tmp_path: Path) -> None:
    """A bad --keep-dir is one sentence and status 2 at once, not a traceback after the first profile's minutes."""
    not_a_folder = tmp_path / "profiles"
    not_a_folder.write_text("")
    run = subprocess.run([sys.executable, "benchmarks/profile_cpu.py", "--keep-dir", str(not_a_folder), "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "is a file, not a folder" in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.glob("profile_cpu_*"))


@pytest.mark.slow
def test_profile_benchmark_keeps_both_profiles_in_a_new_folder(tmp_path: Path) -> None:
    """Two tiny torch profiles of the default network at 64x128: the --keep-dir folder is made, both copies land;
    too few rounds is one sentence and status 2."""
    from casprof.hardware import detect_hardware
    from casprof.profile import PROFILE_SCHEMA_VERSION, Profile

    keep = tmp_path / "new" / "profiles"
    few = subprocess.run([sys.executable, "benchmarks/profile_cpu.py", "--rounds", "2", "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert few.returncode == 2 and "At least 3 measurement rounds" in few.stderr and "Traceback" not in few.stderr
    run = subprocess.run([sys.executable, "benchmarks/profile_cpu.py", "--backend", "torch", "--resolution", "64x128",
                          "--rounds", "3", "--sweeps", "1", "--build-cache", "--keep-dir", str(keep), "--tag", "t",
                          "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    digest = detect_hardware().digest()
    first, repeat = (keep / f"cpu-{digest[:8]}-torch-fp32-64x128{s}.json" for s in ("", "-repeat"))
    profiles = [Profile.load(first), Profile.load(repeat)]
    assert all(p.read_schema_version == PROFILE_SCHEMA_VERSION and p.edge_model.has_measured_structure for p in profiles)
    report = json.loads((tmp_path / f"profile_cpu_torch_{digest}_t.json").read_text())
    assert report["build_cache"][0]["counts"]["cached"] == 0 and report["build_cache"][1]["counts"]["built"] == 0
    assert report["build_cache"][1]["counts"]["cached"] == report["build_cache"][0]["counts"]["built"] > 50
    if len(os.sched_getaffinity(0)) >= 2:  # the cold profile counted in worker processes, the warm one needed none
        assert "parallel_build" in report["phase_seconds"][0] and "parallel_build" not in report["phase_seconds"][1]


def test_fidelity_rescore_without_the_measured_structure(tmp_path: Path) -> None:
    """`--composed-structure`: the committed schema-6 check scored with its profile's structure composed from the
    identity probes instead of measured: every prediction moves by the same constant, the sum of the corrections."""
    from casprof.genotype import Genotype
    from casprof.ops import CELL_TYPES
    from casprof.predict import measured_structure_correction, predict
    from casprof.profile import Profile

    check_path = "benchmarks/results/fidelity_cpu_onnxruntime_ac888d45521e2bda_derived-pooled-a-b.json"
    profile_path = "benchmarks/results/profiles/cpu-ac888d45-onnxruntime-pooled-derived-a-b.json"
    old = "benchmarks/results/profiles/cpu-e6c8ed69-onnxruntime-pooled-arena-a-b.json"  # schema 5: nothing to take out
    refused = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", old, "--composed-structure",
                              "benchmarks/results/fidelity_cpu_onnxruntime_e6c8ed69971cdf74_arena-pooled-a-b.json",
                              "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "no derived_identity probe" in refused.stderr
    outs = {}
    for tag, extra in (("measured", []), ("composed", ["--composed-structure"])):
        run = subprocess.run([sys.executable, "benchmarks/fidelity_rescore.py", "--profile", profile_path, check_path, "--bare",
                              "--tag", tag, "--results", str(tmp_path), *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        outs[tag] = json.loads((tmp_path / f"fidelity_rescore_ac888d45521e2bda_{tag}.json").read_text())
    assert outs["composed"]["composed_structure"] is True and outs["measured"]["composed_structure"] is False
    check = json.loads((ROOT / check_path).read_text())
    (measured,), (composed,) = outs["measured"]["checks"], outs["composed"]["checks"]
    assert measured["agreement"]["bias"] == pytest.approx(check["summary"]["profile"]["bias"])  # the check's own score
    profile = Profile.load(ROOT / profile_path)
    correction = sum(measured_structure_correction(profile, t, "latency_ms") for t in CELL_TYPES)
    assert abs(correction) > 0.5  # measuring the structure moves this profile's predictions
    cheapest = next(n for n in check["networks"] if n["name"] == "all-cheapest")
    assert predict(profile, Genotype.from_dict(cheapest["genotype"]))["latency_ms"].value == pytest.approx(cheapest["predicted_ms"])
    expected = 100 * (cheapest["predicted_ms"] - correction - cheapest["measured_ms"]) / cheapest["measured_ms"]
    assert composed["extremes_error_pct"]["all-cheapest"] == pytest.approx(expected)
    assert measured["agreement"]["kendall_tau"] == pytest.approx(composed["agreement"]["kendall_tau"])  # a constant per cell type


@pytest.mark.slow
def test_build_workers_benchmark_times_both_paths_of_every_network(tmp_path: Path) -> None:
    """The worker-process benchmark at a tiny size (its figures mean something only at full size); too few
    workers is one sentence and status 2."""
    from casprof.hardware import detect_hardware

    few = subprocess.run([sys.executable, "benchmarks/build_workers.py", "--workers", "1", "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert few.returncode == 2 and "--workers must be at least 2" in few.stderr and "Traceback" not in few.stderr
    run = subprocess.run([sys.executable, "benchmarks/build_workers.py", "--resolution", "64x128", "--workers", "2",
                          "--repeats", "1", "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / f"build_workers_{detect_hardware().digest()}.json").read_text())
    assert report["networks"] > 50 and report["resolution"] == [64, 128] and report["workers"] == 2
    assert [len(v) for v in report["seconds"].values()] == [1, 1] and all(v[0] > 0 for v in report["seconds"].values())
    assert report["saved_s"] == pytest.approx(report["median_one_process_s"] - report["median_workers_s"])
    assert "| 2 processes of" in run.stdout


def test_additivity_benchmark_times_every_design_of_a_random_genotype(tmp_path: Path) -> None:
    """--short: a real TINY profile at 64x128, then the structure-only networks and the four operation x wiring
    variants of random genotype 0, timed as fidelity times them; the variants keep what they claim to keep."""
    run = subprocess.run([sys.executable, "benchmarks/additivity_cpu.py", "--short", "--backend", "torch", "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    (path,) = tmp_path.glob("additivity_cpu_torch_*_short.json")
    data = json.loads(path.read_text())
    assert [g["group"] for g in data["groups"]] == ["id-C", "id-chain", "id-inputs", "id-rand", "rand-mixed", "rand-pure",
                                                    "chain-mixed", "chain-pure"]
    nets = {n["name"]: n for n in data["networks"]}
    assert all(nets[n]["measured_ms"] > 0 and nets[n]["group"] in n for n in nets)
    for g in data["groups"]:  # each group's means are those of its networks
        mine = [n for n in nets.values() if n["group"] == g["group"]]
        assert g["n"] == len(mine) and math.isclose(
            g["mean_error_ms"], sum(n["measured_ms"] - n["predicted_ms"] for n in mine) / len(mine), abs_tol=1e-9)
        assert math.isclose(g["ratio_anchored_mean_error_ms"],
                            sum(n["ratio_anchored_ms"] - n["predicted_ms"] for n in mine) / len(mine), abs_tol=1e-9)

    def edges(name: str, cell: str) -> list[tuple[str, int]]:
        return [(op, i) for node in nets[name]["genotype"][cell] for op, i in node]

    for cell in ("normal", "reduce", "ms"):
        mixed, pure = edges("rand-mixed-0", cell), edges("rand-pure-0", cell)
        chain_mixed, chain_pure = edges("chain-mixed-0", cell), edges("chain-pure-0", cell)
        assert [i for _, i in pure] == [i for _, i in mixed] == [i for _, i in edges("id-rand-0", cell)]  # its wiring
        assert len({op for op, _ in pure}) == 1 and len({op for op, _ in chain_pure}) == 1
        assert [op for op, _ in chain_mixed] == [op for op, _ in mixed]  # its operations, in edge order
        assert [i for _, i in chain_mixed] == [i for _, i in chain_pure] == [i for _, i in edges("id-chain", cell)]
        assert [i for _, i in chain_pure] == [i for j in range(len(chain_pure) // 2) for i in (j, j + 1)]  # the chain
        assert all(op == "identity" for n in nets if n.startswith("id-") for op, _ in edges(n, cell))
        assert [i for _, i in edges("id-inputs", cell)] == [0, 1] * (len(chain_pure) // 2)
    md = path.with_suffix(".md").read_text()
    assert "| rand-mixed | 1 |" in md and "| chain-pure-0 |" in md
    out = tmp_path / "refused"
    refused = subprocess.run([sys.executable, "benchmarks/additivity_cpu.py", "--short", "--pairs", "0", "--results", str(out)],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--pairs must be at least 1" in refused.stderr and "Traceback" not in refused.stderr
    assert not out.exists()
