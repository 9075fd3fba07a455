"""Tests of casprof.backends.memory_format: the torch runner's channels_last layout, end to end."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from casprof.backends import RunnerSpec
from casprof.backends.memory_format import MemoryFormat, parse_memory_format
from casprof.backends.onnxruntime_runner import OnnxRuntimeRunner
from casprof.backends.torch_runner import TorchRunner
from casprof.cli.app import app
from casprof.compare import condition_differences
from casprof.errors import UserInputError
from casprof.fidelity import measure_settings_of
from casprof.measure import MeasureSettings, make_runner_spec
from casprof.probes import Probe, build_probe
from casprof.profile import Profile
from tests.conftest import TINY, TINY_RES

ROOT = Path(__file__).resolve().parents[1]


def test_parse_memory_format_and_file_tags() -> None:
    assert parse_memory_format("channels_last") is MemoryFormat.CHANNELS_LAST
    assert parse_memory_format(MemoryFormat.CONTIGUOUS) is MemoryFormat.CONTIGUOUS
    with pytest.raises(UserInputError, match="Unknown memory format 'nhwc'; use one of: contiguous, channels_last"):
        parse_memory_format("nhwc")
    assert MemoryFormat.CHANNELS_LAST.file_tag == "-channels-last" and MemoryFormat.CONTIGUOUS.file_tag == ""
    assert MemoryFormat.CHANNELS_LAST.torch_format is torch.channels_last


def _spec(fmt: str, h: int = 32, w: int = 64) -> RunnerSpec:
    return RunnerSpec(input_shape=(1, TINY.in_channels, h, w), threads=1, memory_format=fmt)


def test_channels_last_runner_computes_the_same_and_leaves_the_callers_module_alone() -> None:
    model = build_probe(TINY, Probe("normal", "sep_conv_3x3_x2"), seed=0).eval()
    x = np.random.default_rng(1).standard_normal((1, TINY.in_channels, *TINY_RES), dtype=np.float32)
    with TorchRunner(model, _spec("contiguous")) as plain:
        expected = plain.infer(x)
        assert plain.info().details["memory_format"] == "contiguous"
    with TorchRunner(model, _spec("channels_last")) as cl:
        got = cl.infer(x)
        assert cl.time_once() > 0
        assert cl.info().details["memory_format"] == "channels_last"
        held = cl._model  # the runner's own copy, in the asked layout
        assert held is not model
        convs = [m.weight for m in held.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
        assert cl._x.is_contiguous(memory_format=torch.channels_last) and not cl._x.is_contiguous()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got.flags["C_CONTIGUOUS"]  # NCHW numpy, whatever the layout inside
    assert all(p.is_contiguous() for p in model.parameters())  # exports and counts still see NCHW weights


def test_only_the_torch_runner_accepts_channels_last(tmp_path: Path) -> None:
    model = build_probe(TINY, Probe("normal", "conv_3x3"), seed=0).eval()
    spec = dataclasses.replace(_spec("channels_last"), workdir=tmp_path)
    runner = OnnxRuntimeRunner(model, spec)
    with pytest.raises(UserInputError, match="applies to the torch backend only"):
        runner.activate()
    assert not runner.active and not list(tmp_path.iterdir())  # refused before anything was exported
    with pytest.raises(UserInputError, match="applies to the torch backend only"):
        MeasureSettings(backend="onnxruntime", memory_format="channels_last")


def test_settings_record_and_pass_the_memory_format(tmp_path: Path) -> None:
    from casprof.devices import resolve_device
    from casprof.hardware import detect_hardware

    assert MeasureSettings(rounds=3).to_dict()["memory_format"] == "contiguous"
    settings = MeasureSettings(backend="torch", rounds=3, memory_format="channels_last")
    assert settings.to_dict()["memory_format"] == "channels_last"
    assert settings.file_tag == "-channels-last" and MeasureSettings(rounds=3).file_tag == ""
    assert MeasureSettings(backend="torch", rounds=3, cpu_allocator="keep", memory_format="channels_last").file_tag == "-keep-channels-last"
    spec = make_runner_spec(TINY, settings, resolve_device("cpu", detect_hardware(include_gpu=False)), tmp_path)
    assert spec.memory_format is MemoryFormat.CHANNELS_LAST


def test_fidelity_and_diff_read_the_profiles_memory_format() -> None:
    """A profile without the setting predates it (NCHW); a newer one says which; a bad one is refused."""
    raw = json.loads((ROOT / "profiles" / "cpu-6d78dc83-torch-fp32-768x1536.json").read_text())
    raw["settings"].pop("memory_format", None)
    old = Profile.from_dict(raw)
    assert measure_settings_of(old).memory_format is MemoryFormat.CONTIGUOUS
    raw["settings"]["memory_format"] = "channels_last"
    new = Profile.from_dict(raw)
    assert measure_settings_of(new).memory_format is MemoryFormat.CHANNELS_LAST
    assert condition_differences(old, new) == ["memory_format: contiguous → channels_last"]
    raw["settings"]["memory_format"] = "nhwc"
    with pytest.raises(UserInputError, match="Unknown memory format 'nhwc'"):
        measure_settings_of(Profile.from_dict(raw))
    ort = json.loads((ROOT / "profiles" / "cpu-6d78dc83-onnxruntime-fp32-768x1536.json").read_text())
    ort["settings"]["memory_format"] = "channels_last"  # no runner but torch's applies it: refused
    with pytest.raises(UserInputError, match="applies to the torch backend only"):
        measure_settings_of(Profile.from_dict(ort))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "onnxruntime", "--memory-format", "channels_last"], "applies to the torch backend only"),
        (["--backend", "torch", "--memory-format", "nhwc"], "nhwc"),
    ],
)
def test_measure_refuses_a_memory_format_it_cannot_apply(tmp_path: Path, network_files: dict[str, Path],
                                                         args: list[str], message: str) -> None:
    out = tmp_path / "p.json"
    result = CliRunner().invoke(app, ["measure", "--device", "cpu", "--network", str(network_files["mini"]),
                                      "--resolution", "32x64", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_measure_and_check_a_channels_last_profile(tmp_path: Path, network_files: dict[str, Path]) -> None:
    """A real channels_last torch measurement through the console entry point, then a fidelity check
    of it that repeats the layout (both in their own processes). The tiny network and 6 rounds, as
    tests/test_fidelity.py checks: with the smaller graph and 2 rounds a network's single anchored run
    per instance can fall to 0 ms in the noise, which the check rightly refuses."""
    out = tmp_path / "cl.json"
    args = ["measure", "--device", "cpu", "--backend", "torch", "--memory-format", "channels_last", "--network",
            str(network_files["tiny"]), "--resolution", "32x64", "--rounds", "3", "--warmup", "1", "--threads", "1",
            "--baseline-instances", "2", "--build-workers", "1", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "casprof", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    raw = json.loads(out.read_text())
    assert raw["settings"]["memory_format"] == "channels_last"
    assert raw["backend"]["details"]["memory_format"] == "channels_last"
    assert "memory format channels_last" in done.stdout  # the table's header says it
    report = tmp_path / "report"
    report.mkdir()
    check = ["fidelity", "--profile", str(out), "--samples", "5", "--rounds", "6", "--sweeps", "1", "--build-workers", "1",
             "--report", str(report)]
    done = subprocess.run([sys.executable, "-m", "casprof", *check], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    data = json.loads(next(report.glob("*.json")).read_text())
    assert data["profile"]["memory_format"] == "channels_last" and data["profile"]["cpu_allocator"] == "system"
    assert "memory format channels_last" in next(report.glob("*.md")).read_text()
