"""Counting and exporting in worker processes before the timing (casprof.prebuild): the same
cache entries, counts and files as one network after the other in this process."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casprof._io import file_sha256
from casprof.backends.onnx_export import export_cache_key, export_onnx
from casprof.build_cache import BuildCache
from casprof.cli.app import app
from casprof.errors import UserInputError
from casprof.measure import network_counts
from casprof.prebuild import BuildJob, ExportRequest, default_workers, prebuild
from casprof.probes import BASELINE, Probe, build_probe
from conftest import MINI, TINY_RES

SHAPE = (1, 3, *TINY_RES)
PROBES = (BASELINE, Probe("normal", "conv_3x3"), Probe("reduce", "max_pool_3x3"))


def _jobs(probes: tuple[Probe, ...] = PROBES, seed: int = 0) -> list[BuildJob]:
    return [BuildJob(p.key, functools.partial(build_probe, MINI, p, seed)) for p in probes]


@pytest.mark.slow
def test_workers_count_and_export_what_this_process_would(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    got = prebuild(_jobs(), SHAPE, tmp_path, export=ExportRequest("torchscript"), workers=2, threads=2,
                   on_done=lambda done, total: seen.append((done, total)))
    assert got.workers == 2 and got.threads_per_worker == 1 and got.seconds > 0
    assert [b.key for b in got.built] == [p.key for p in PROBES]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    for probe, built in zip(PROBES, got.built):
        model = build_probe(MINI, probe, seed=0)
        assert built.counts == network_counts(model, SHAPE)  # counted in a worker, the same as here
        assert built.onnx_path is not None and built.onnx_path.parent == tmp_path
        here = export_onnx(model, SHAPE, tmp_path / "here.onnx")
        assert built.onnx_sha256 == here.sha256 == file_sha256(built.onnx_path)  # the same file, byte for byte
    counts_only = prebuild(_jobs(seed=1), SHAPE, tmp_path / "none", export=None, workers=2, threads=2)
    assert all(b.onnx_path is None for b in counts_only.built)
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_an_error_in_a_worker_is_raised_here_as_it_was_raised_there(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no-such-exporter"):
        prebuild(_jobs(), SHAPE, tmp_path, export=ExportRequest("no-such-exporter"), workers=2, threads=2)


def test_the_cache_answers_whether_it_holds_counts_and_exports_without_making_them(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    model = build_probe(MINI, Probe("normal", "conv_3x3"), seed=0)
    key = export_cache_key(cache, model, SHAPE)
    assert key is not None and not cache.holds_onnx(key) and cache.lookup_counts(model, SHAPE) is None
    info = export_onnx(model, SHAPE, tmp_path / "a.onnx", cache=cache)
    assert cache.holds_onnx(key)  # the key export_onnx used
    assert export_cache_key(cache, model, SHAPE, opset=18) != key
    cache.store_counts(model, SHAPE, {"params": 1.0, "macs": 2.0})
    assert cache.lookup_counts(build_probe(MINI, Probe("normal", "conv_3x3"), seed=0), SHAPE) == {"params": 1.0, "macs": 2.0}
    assert cache.fetch_onnx(key, tmp_path / "b.onnx") == info.sha256


def test_the_default_is_one_worker_per_thread_within_the_cpus_here() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert default_workers(1) == 1
    assert default_workers(64) == cpus
    assert default_workers(2) == min(2, cpus)


@pytest.mark.parametrize("command", [["measure", "--device", "cpu", "--resolution", "32x64"], ["fidelity", "--profile", "P"],
                                     ["calibrate", "--profile", "P"]])
def test_a_worker_count_below_one_is_one_sentence_and_exit_2(command: list[str], tmp_path: Path,
                                                            tiny_profile_path: Path) -> None:
    out = tmp_path / "p.json"
    args = [str(tiny_profile_path) if a == "P" else a for a in command] + ["--build-workers", "0"]
    result = CliRunner().invoke(app, args + (["--out", str(out)] if command[0] != "fidelity" else []),
                                env={"CASPROF_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 2, result.output
    assert "--build-workers must be at least 1, got 0." in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_measurement_with_build_workers_records_them_and_counts_the_same(tmp_path: Path,
                                                                             network_files: dict[str, Path]) -> None:
    """Two real ONNX Runtime measurements through the console entry point: one network after the
    other in the process, and with two worker processes into a fresh cache."""
    args = ["-m", "casprof", "measure", "--device", "cpu", "--backend", "onnxruntime", "--network",
            str(network_files["mini"]), "--resolution", "32x64", "--rounds", "3", "--sweeps", "1", "--warmup", "1",
            "--threads", "2", "--baseline-instances", "2"]
    runs = {}
    for name, workers, cache in (("serial", "1", "a"), ("workers", "2", "b"), ("again", "2", "b")):
        env = {**os.environ, "COLUMNS": "200", "CASPROF_CACHE_DIR": str(tmp_path / f"cache-{cache}")}
        done = subprocess.run([sys.executable, *args, "--build-workers", workers, "--out", str(tmp_path / f"{name}.json")],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    serial, parallel, again = runs["serial"], runs["workers"], runs["again"]
    networks = serial["settings"]["build_cache"]["onnx"]["built"]
    assert parallel["settings"]["build_cache"] == serial["settings"]["build_cache"] == {
        "counts": {"cached": 0, "built": networks}, "onnx": {"cached": 0, "built": networks}}
    assert parallel["settings"]["build_workers"] == {"processes": 2, "threads_each": 1}
    assert "build_workers" not in serial["settings"]
    assert "parallel_build" in parallel["settings"]["phase_seconds"]
    assert parallel["backend"]["details"]["export_cached"] is False  # made by this measurement's workers
    assert parallel["backend"]["details"]["onnx_sha256"] == serial["backend"]["details"]["onnx_sha256"]
    # the workers' counts and exports were kept under this process's keys: nothing to build the second time
    assert again["settings"]["build_cache"] == {"counts": {"cached": networks, "built": 0}, "onnx": {"cached": networks, "built": 0}}
    assert "build_workers" not in again["settings"] and "parallel_build" not in again["settings"]["phase_seconds"]
    assert again["backend"]["details"]["onnx_sha256"] == serial["backend"]["details"]["onnx_sha256"]
    for t, ops in serial["costs"].items():
        for op, metrics in ops.items():
            for run in (parallel, again):
                assert run["costs"][t][op]["macs"] == metrics["macs"] and run["costs"][t][op]["params"] == metrics["params"]


@pytest.mark.slow
def test_fidelity_and_calibration_time_the_networks_the_workers_built(tiny_profile_path: Path) -> None:
    """The tiny profile's check as ONNX Runtime would make it, with 2 build workers and with none: the same
    networks, counts and predictions; the workers' stage is reported; a calibration too (its drift check off: the
    torch profile's c'_id is not what ONNX Runtime takes)."""
    import dataclasses

    from casprof.calibration import CalibrationSettings, run_calibration
    from casprof.fidelity import FidelitySettings, run_fidelity
    from casprof.hardware import detect_hardware
    from casprof.profile import Profile

    torch_profile = Profile.load(tiny_profile_path)
    p = dataclasses.replace(torch_profile, settings={**torch_profile.settings, "backend": "onnxruntime"})
    settings = FidelitySettings(samples=5, seed=3, rounds=2, sweeps=1, extremes=False)
    hw = detect_hardware()
    stages: list[str] = []
    with_workers = run_fidelity(p, hw, settings, build_workers=2, progress=lambda e: stages.append(e.stage))
    alone = run_fidelity(p, hw, settings)
    assert "building networks in 2 processes" in stages
    assert [(n.name, n.macs, n.params, n.predicted_ms) for n in with_workers.networks] == \
        [(n.name, n.macs, n.params, n.predicted_ms) for n in alone.networks]
    assert all(n.first_ms > 0 and n.second_ms > 0 for n in with_workers.networks)
    stages.clear()
    cal = run_calibration(p, hw, CalibrationSettings(networks=4, rounds=2, sweeps=1, seed=5, max_drift_pct=1e6), build_workers=2,
                          progress=lambda e: stages.append(e.stage))
    assert "building networks in 2 processes" in stages and cal.networks
