"""The benchmark scripts' GPU-profile paths, run as real subprocesses on committed H100 profiles.

A GPU profile is compared with the registry's spec-sheet roofline of its device (no GPU needed);
the CPU-only parts of these scripts are exercised by running them (see README).
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
