"""``casprof pool``: profiles measured under the same conditions, pooled sample by sample."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casprof.cli.app import app
from casprof.errors import UserInputError
from casprof.genotype import random_genotype
from casprof.measure import iter_costs
from casprof.merge import merge_profiles
from casprof.predict import predict
from casprof.profile import PROFILE_SCHEMA_VERSION, Profile

from conftest import TINY, TINY_RES

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def second_profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second real measurement of the tiny network, 4 rounds (the session fixture has 3)."""
    from casprof.devices import resolve_device
    from casprof.hardware import detect_hardware
    from casprof.measure import MeasureSettings, run_measurement

    hw = detect_hardware()
    out = tmp_path_factory.mktemp("second") / "tiny-torch-2.json"
    settings = MeasureSettings(backend="torch", resolution=TINY_RES, threads=1, rounds=4, warmup_iters=1, seed=7)
    run_measurement(TINY, settings, resolve_device("cpu", hw), hw, out=out)
    return out


def _edited(path: Path, folder: Path, name: str, edit) -> Path:
    raw = json.loads(path.read_text())
    edit(raw)
    out = folder / name
    out.write_text(json.dumps(raw))
    return out


def test_every_cost_is_the_median_of_both_profiles_samples(tiny_profile_path: Path, second_profile_path: Path) -> None:
    a, b = Profile.load(tiny_profile_path), Profile.load(second_profile_path)
    pooled = merge_profiles([a, b])
    lat = "latency_ms"
    base = pooled.baseline[lat]
    assert base.measurement.samples == a.baseline[lat].measurement.samples + b.baseline[lat].measurement.samples
    assert base.value == statistics.median(base.measurement.samples)
    for (t, op, ca), (_, _, cb), (_, _, cp) in zip(iter_costs(a, lat), iter_costs(b, lat), iter_costs(pooled, lat)):
        if ca.measurement is None:
            assert cp == ca and op == "identity"
            continue
        assert cp.measurement.samples == ca.measurement.samples + cb.measurement.samples, (t, op)
        assert cp.absolute.samples == ca.absolute.samples + cb.absolute.samples
        assert cp.value == statistics.median(cp.measurement.samples)
        assert cp.measurement.n == 7  # 3 + 4 rounds
        assert pooled.cost(t, op, "macs") == a.cost(t, op, "macs")  # exact counts carried, not pooled
    for t, cell in pooled.edge_model.cells.items():
        for probe in ("inputs_only", "rest_on_input0", "rest_on_input1"):
            got = getattr(cell, probe)[lat].measurement.samples
            assert got == getattr(a.edge_model.cells[t], probe)[lat].measurement.samples + getattr(b.edge_model.cells[t], probe)[lat].measurement.samples
        for op, ms in cell.input_edges.items():
            assert ms[lat].measurement.n == 7
        for op, ms in cell.mixed_inputs.items():
            assert ms[lat].measurement.samples == (a.edge_model.cells[t].mixed_inputs[op][lat].measurement.samples
                                                   + b.edge_model.cells[t].mixed_inputs[op][lat].measurement.samples)
    assert pooled.edge_model.cells["reduce"].mixed_inputs
    assert pooled.settings["rounds"] == 7
    assert [s["rounds"] for s in pooled.settings["pooled_from"]] == [3, 4]
    assert [s["seed"] for s in pooled.settings["pooled_from"]] == [0, 7]
    assert pooled.calibration is None


def test_the_pooled_profile_saves_loads_and_predicts(tiny_profile_path: Path, second_profile_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "pooled.json"
    result = runner.invoke(app, ["pool", str(tiny_profile_path), str(second_profile_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "7 rounds" in result.stdout and "casprof calibrate" in result.output
    pooled = Profile.load(out)
    assert pooled == Profile.load(out)  # round trip of what was written
    g = random_genotype(3, TINY)
    value = predict(pooled, g)["latency_ms"].value
    a, b = predict(Profile.load(tiny_profile_path), g)["latency_ms"], predict(Profile.load(second_profile_path), g)["latency_ms"]
    assert value > 0 and value != a.value and value != b.value
    shown = runner.invoke(app, ["show", str(out)], terminal_width=200)
    assert shown.exit_code == 0 and "pooled (casprof pool) from 2 profiles, 7 rounds in all" in shown.output
    checked = runner.invoke(app, ["check", str(out)])
    assert checked.exit_code == 0 and f"valid schema v{PROFILE_SCHEMA_VERSION} profile" in checked.stdout


def test_pool_through_the_console_script(tiny_profile_path: Path, second_profile_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "pooled.json"
    exe = Path(sys.executable).with_name("casprof")
    done = subprocess.run([str(exe), "pool", str(second_profile_path), str(tiny_profile_path), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Profile.load(out).settings["rounds"] == 7


def test_pool_writes_its_profile_even_when_stdout_is_closed_at_once(tiny_profile_path: Path, second_profile_path: Path,
                                                                     tmp_path: Path) -> None:
    """`casprof pool ... | head -0`: the reader is gone before anything is printed; the file must still be written."""
    out = tmp_path / "pooled.json"
    exe = Path(sys.executable).with_name("casprof")
    reader, writer = os.pipe()
    os.close(reader)  # like a `head` that has already exited: printing raises BrokenPipeError / SIGPIPE
    try:
        subprocess.run([str(exe), "pool", str(second_profile_path), str(tiny_profile_path), "-o", str(out)],
                       stdout=writer, stderr=subprocess.DEVNULL, timeout=120)
    finally:
        os.close(writer)
    assert Profile.load(out).settings["rounds"] == 7


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda raw: raw["backend"].__setitem__("threads", 2), "threads: 1 → 2"),
        (lambda raw: raw["settings"].__setitem__("cpu_allocator", "keep"), "cpu_allocator: system → keep"),
        (lambda raw: raw["settings"].__setitem__("memory_format", "channels_last"), "memory_format: contiguous → channels_last"),
        (lambda raw: raw["backend"].__setitem__("version", "0.0"), "backend version"),
    ],
)
def test_profiles_measured_under_other_conditions_are_refused(tiny_profile_path: Path, second_profile_path: Path,
                                                                tmp_path: Path, edit, message: str) -> None:
    other = _edited(second_profile_path, tmp_path, "other.json", edit)
    out = tmp_path / "pooled.json"
    result = runner.invoke(app, ["pool", str(tiny_profile_path), str(other), "--out", str(out)])
    assert result.exit_code == 2
    assert "was not measured under the conditions of profile 1" in result.output and message in result.output
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("one", "at least two profiles"),
        ("twice", "are the same measurement"),
        ("out-is-source", "is one of the profiles being pooled"),
        ("estimated", "is an estimate"),
        ("rounds-text", "Profile 2 records 'abc' rounds in its settings"),
        ("no-latency", "Profile 2 has no latency_ms metric"),
    ],
)
def test_pool_bad_input_exits_2_and_writes_nothing(tiny_profile_path: Path, second_profile_path: Path, tmp_path: Path,
                                                  which: str, message: str) -> None:
    out = tmp_path / "pooled.json"
    args = {
        "one": [str(tiny_profile_path)],
        "twice": [str(tiny_profile_path), str(_edited(tiny_profile_path, tmp_path, "copy.json", lambda raw: None))],
        "out-is-source": [str(tiny_profile_path), str(second_profile_path)],
        "estimated": [str(REPO / "profiles" / "gtx1070.json"), str(tiny_profile_path)],
        "rounds-text": [str(tiny_profile_path),
                        str(_edited(second_profile_path, tmp_path, "r.json", lambda raw: raw["settings"].__setitem__("rounds", "abc")))],
        "no-latency": [str(tiny_profile_path),
                       str(_edited(second_profile_path, tmp_path, "l.json", lambda raw: raw["baseline"].pop("latency_ms")))],
    }[which]
    target = second_profile_path if which == "out-is-source" else out
    before = target.read_bytes() if target.exists() else None
    result = runner.invoke(app, ["pool", *args, "--out", str(target)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert (target.read_bytes() if target.exists() else None) == before


def test_merge_refuses_a_profile_of_another_network(tiny_profile_path: Path) -> None:
    a = Profile.load(tiny_profile_path)
    default = Profile.load(REPO / "profiles" / "cpu-f86dc8a8-onnxruntime-fp32-768x1536.json")
    with pytest.raises(UserInputError, match="not measured under the conditions"):
        merge_profiles([a, default])


def test_a_profile_without_the_mixed_inputs_probe_is_not_pooled_with_one_that_has_it(tiny_profile_path: Path,
                                                                                      second_profile_path: Path, tmp_path: Path) -> None:
    def older(raw: dict) -> None:
        raw["schema_version"] = 4
        del raw["edge_model"]["reduce"]["mixed_inputs"]

    old = _edited(second_profile_path, tmp_path, "schema4.json", older)
    assert Profile.load(old).read_schema_version == 4
    out = tmp_path / "pooled.json"
    result = runner.invoke(app, ["pool", str(tiny_profile_path), str(old), "--out", str(out)])
    assert result.exit_code == 2 and "differ in the mixed_inputs probe" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_pool_refuses_two_cpu_generations_that_share_a_brand_string(tmp_path: Path) -> None:
    """The committed AVX-512 EPYC profile and the AVX2 EPYC pair were both recorded under the digest
    6d78dc8361ef86df (before fingerprints held the CPU's signature); only torch's kernels tell them apart."""
    zen4 = REPO / "profiles" / "cpu-6d78dc83-onnxruntime-fp32-768x1536.json"
    zen3_a, zen3_b = (REPO / "benchmarks" / "results" / "profiles" / f"cpu-e6c8ed69-onnxruntime-{t}-legacy-digest.json"
                      for t in ("20261127T1811-a", "20261127T1825-b"))
    assert {Profile.load(p).hardware["digest"] for p in (zen4, zen3_a)} == {"6d78dc8361ef86df"}
    out = tmp_path / "pooled.json"
    result = runner.invoke(app, ["pool", str(zen4), str(zen3_a), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "hardware: 6d78dc8361ef86df (CPU 'AMD EPYC' (AVX512 kernels)" in result.output
    assert "(AVX2 kernels)" in result.output and not out.exists()
    result = runner.invoke(app, ["pool", str(zen3_a), str(zen3_b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Profile.load(out).settings["rounds"] == 36
