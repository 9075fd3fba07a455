"""Benchmark scripts that need no timing, run as real subprocesses on committed profiles and results.

A GPU profile is compared with the registry's spec-sheet roofline of its device (no GPU needed), and
a recorded fidelity check is rescored with another calibration; the parts of the scripts that time
things are exercised by running them (see README).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
