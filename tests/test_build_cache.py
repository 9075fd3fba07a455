"""The build cache: ONNX exports and parameter/MAC counts reused, verified, bounded; never timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from casprof.backends.onnx_export import export_onnx
from casprof.build_cache import BuildCache, default_build_cache, model_digest, software_digest
from casprof.cli.app import app
from casprof.errors import UserInputError
from casprof.measure import cached_counts, network_counts
from casprof.probes import BASELINE, Probe, build_probe
from conftest import MINI, TINY, TINY_RES

SHAPE = (1, 3, *TINY_RES)


def _ort_output(path: Path) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    return sess.run(None, {"input": x})[0]


def test_model_digest_follows_structure_and_weights() -> None:
    a = model_digest(build_probe(MINI, BASELINE, seed=0))
    assert a is not None and a == model_digest(build_probe(MINI, BASELINE, seed=0))
    assert a != model_digest(build_probe(MINI, BASELINE, seed=1))  # other weights
    assert a != model_digest(build_probe(MINI, Probe("normal", "conv_3x3"), seed=0))  # other cells
    assert software_digest() == software_digest() and len(software_digest()) == 64


def test_an_export_is_stored_then_copied_verified_and_runs_the_same(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    model = build_probe(MINI, Probe("normal", "conv_3x3"), seed=0)
    first = export_onnx(model, SHAPE, tmp_path / "a.onnx", cache=cache)
    assert not first.cached and len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    again = export_onnx(build_probe(MINI, Probe("normal", "conv_3x3"), seed=0), SHAPE, tmp_path / "b.onnx", cache=cache)
    assert again.cached and again.sha256 == first.sha256 and again.opset == first.opset
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    np.testing.assert_array_equal(_ort_output(tmp_path / "b.onnx"), _ort_output(tmp_path / "a.onnx"))
    # another request (shape, opset, weights) is another entry
    other = export_onnx(build_probe(MINI, Probe("normal", "conv_3x3"), seed=1), SHAPE, tmp_path / "c.onnx", cache=cache)
    assert not other.cached and other.sha256 != first.sha256
    assert not export_onnx(model, (1, 3, 64, 64), tmp_path / "d.onnx", cache=cache).cached


def test_a_damaged_entry_is_not_used_but_rebuilt(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    model = build_probe(MINI, BASELINE, seed=0)
    first = export_onnx(model, SHAPE, tmp_path / "a.onnx", cache=cache)
    (entry,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    entry.write_bytes(entry.read_bytes()[:-100])  # truncated on disk
    again = export_onnx(model, SHAPE, tmp_path / "b.onnx", cache=cache)
    assert not again.cached and again.sha256 == first.sha256  # exported afresh
    assert entry.read_bytes() == (tmp_path / "a.onnx").read_bytes()  # and the entry repaired
    assert export_onnx(model, SHAPE, tmp_path / "c.onnx", cache=cache).cached


def test_counts_are_counted_once_then_read_back(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    model = build_probe(TINY, Probe("reduce", "sep_conv_3x3_x2"), seed=0)
    calls = []

    def count() -> dict[str, float]:
        calls.append(1)
        return network_counts(model, SHAPE)

    fresh, hit = cache.counts(model, SHAPE, count)
    again, hit2 = cache.counts(build_probe(TINY, Probe("reduce", "sep_conv_3x3_x2"), seed=0), SHAPE, count)
    assert (hit, hit2, len(calls)) == (False, True, 1) and again == fresh and fresh["macs"] > 0
    assert cached_counts(model, (1, 3, 64, 64), cache)[1] is False  # another shape
    assert cached_counts(model, SHAPE, None) == (fresh, False)  # no cache: counted
    # an entry that lacks a count (damaged, or from an older layout) is counted again and rewritten
    (entry,) = [p for p in (tmp_path / "cache" / "counts").rglob("*.json") if json.loads(p.read_text()) == fresh]
    entry.write_text(json.dumps({"params": fresh["params"]}))
    recounted, hit3 = cache.counts(model, SHAPE, count)
    assert (hit3, len(calls), recounted) == (False, 2, fresh) and json.loads(entry.read_text()) == fresh


def test_the_least_recently_used_entries_go_when_the_cache_is_too_large(tmp_path: Path) -> None:
    big = BuildCache(tmp_path / "cache")
    for seed in range(3):
        export_onnx(build_probe(MINI, BASELINE, seed=seed), SHAPE, tmp_path / f"{seed}.onnx", cache=big)
        os.utime(next(iter(sorted((tmp_path / "cache" / "onnx").glob("*.json"), key=os.path.getmtime))), None)
    size = big.size_bytes()
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 3
    small = BuildCache(tmp_path / "cache", max_bytes=size * 2 // 3)
    small.prune()
    assert 0 < small.size_bytes() <= size * 2 // 3
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == len(list((tmp_path / "cache" / "onnx").glob("*.json")))
    assert small.clear() > 0 and small.size_bytes() == 0


def test_the_environment_locates_sizes_or_switches_off_the_cache(tmp_path: Path) -> None:
    assert default_build_cache({"CASPROF_CACHE_DIR": "off"}) is None
    assert default_build_cache({"CASPROF_CACHE_DIR": ""}) is None
    assert default_build_cache({"CASPROF_CACHE_DIR": str(tmp_path)}) == BuildCache(tmp_path, 4096 * 1024 * 1024)
    assert default_build_cache({"XDG_CACHE_HOME": str(tmp_path), "CASPROF_CACHE_MAX_MB": "10"}) == BuildCache(
        tmp_path / "casprof", 10 * 1024 * 1024)
    with pytest.raises(UserInputError, match="CASPROF_CACHE_MAX_MB='lots' is not a size in MB"):
        default_build_cache({"CASPROF_CACHE_DIR": str(tmp_path), "CASPROF_CACHE_MAX_MB": "lots"})


def _cli(*args: str, cwd: Path, cache: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "CASPROF_CACHE_DIR": cache}
    return subprocess.run([sys.executable, "-m", "casprof", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_second_measurement_takes_exports_and_counts_from_the_cache(tmp_path: Path, network_files: dict[str, Path]) -> None:
    """Two real ONNX Runtime measurements through the console entry point, one cache folder."""
    cache = tmp_path / "cache"
    args = ["measure", "--device", "cpu", "--backend", "onnxruntime", "--network", str(network_files["mini"]),
            "--resolution", "32x64", "--rounds", "3", "--warmup", "1", "--threads", "1", "--baseline-instances", "2"]
    first = _cli(*args, "--out", str(tmp_path / "a.json"), cwd=tmp_path, cache=str(cache))
    assert first.returncode == 0, first.stderr
    a = json.loads((tmp_path / "a.json").read_text())
    networks = a["settings"]["build_cache"]["onnx"]["built"]
    assert a["settings"]["build_cache"] == {"counts": {"cached": 0, "built": networks}, "onnx": {"cached": 0, "built": networks}}
    assert a["backend"]["details"]["export_cached"] is False
    assert f"Kept in the build cache {cache} for later measurements of the same networks: {networks} counts" in " ".join(first.stderr.split())
    second = _cli(*args, "--out", str(tmp_path / "b.json"), cwd=tmp_path, cache=str(cache))
    assert second.returncode == 0, second.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["settings"]["build_cache"] == {"counts": {"cached": networks, "built": 0}, "onnx": {"cached": networks, "built": 0}}
    assert b["backend"]["details"]["export_cached"] is True
    assert b["backend"]["details"]["onnx_sha256"] == a["backend"]["details"]["onnx_sha256"]
    assert f"From the build cache (built before, verified; nothing timed): {networks} of {networks} counts" in " ".join(second.stderr.split())
    for t, ops in a["costs"].items():  # same exact counts, latencies measured afresh
        for op, metrics in ops.items():
            assert b["costs"][t][op]["macs"] == metrics["macs"] and b["costs"][t][op]["params"] == metrics["params"]
    off = _cli(*args, "--out", str(tmp_path / "c.json"), "--no-build-cache", cwd=tmp_path, cache=str(cache))
    assert off.returncode == 0, off.stderr
    c = json.loads((tmp_path / "c.json").read_text())
    assert "build_cache" not in c["settings"] and c["backend"]["details"]["export_cached"] is False


@pytest.mark.parametrize("command", [["measure", "--device", "cpu"], ["fidelity", "--profile", "P"], ["calibrate", "--profile", "P"]])
def test_a_bad_cache_size_is_one_sentence_and_exit_2(command: list[str], tmp_path: Path, tiny_profile_path: Path) -> None:
    args = [str(tiny_profile_path) if a == "P" else a for a in command]
    out = tmp_path / "written.json"
    result = CliRunner().invoke(app, [*args, "--out", str(out)] if command[0] != "fidelity" else args,
                                env={"CASPROF_CACHE_DIR": str(tmp_path / "cache"), "CASPROF_CACHE_MAX_MB": "lots"})
    assert result.exit_code == 2, result.output
    assert "CASPROF_CACHE_MAX_MB='lots' is not a size in MB" in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "cache").exists()
