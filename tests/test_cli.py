"""The command line, through typer's CliRunner and through real subprocesses of the console scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cas.cli import app as cas_app
from casprof.cli.app import app
from casprof.genotype import random_genotype
from casprof.profile import PROFILE_SCHEMA_VERSION, Profile
from tests.conftest import TINY

runner = CliRunner()


def _one_sentence_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def test_devices_lists_the_registry() -> None:
    result = runner.invoke(app, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    names = [r["name"] for r in rows]
    for name in ("cpu", "cuda", "titanxp", "gtx1070", "h100", "h200"):
        assert name in names
    assert next(r for r in rows if r["name"] == "cpu")["present"] is True
    assert next(r for r in rows if r["name"] == "titanxp")["peak_fp32_tflops"] > 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["measure", "--device", "titanxp"], "Device 'titanxp' (NVIDIA TITAN Xp) is not present"),
        (["measure", "--device", "quantum9000"], "Unknown device 'quantum9000'"),
        (["measure", "--device", "cpu", "--backend", "bogus"], "bogus"),
        (["measure", "--device", "cpu", "--resolution", "0x1536"], "must be positive"),
        (["measure", "--device", "cpu", "--resolution", "-768x1536"], "must be positive"),
        (["measure", "--device", "cpu", "--resolution", "768by1536"], "not of the form HxW"),
        (["measure", "--device", "cpu", "--resolution", "770x1536"], "not divisible by the network's total stride 16"),
        (["measure", "--device", "cpu", "--resolution", "16384x32768"], "larger than the supported maximum"),
        (["measure", "--device", "cpu", "--precision", "fp16"], "fp16 is measured only on a CUDA GPU"),
        (["measure", "--device", "cpu", "--backend", "tensorrt"], "TensorRT runs only on a CUDA GPU"),
        (["measure", "--device", "cpu", "--sweeps", "0"], "The sweeps must be between 1 and the rounds"),
        (["measure", "--device", "cpu", "--rounds", "3", "--sweeps", "4"], "The sweeps must be between 1 and the rounds (3)"),
        (["measure", "--device", "cpu", "--warmup-passes", "-1"], "cannot be negative"),
        (["measure", "--device", "cpu", "--baseline-instances", "0"], "At least one instance"),
        (["measure", "--device", "cpu", "--probes-per-bracket", "0"], "At least one probe per bracket"),
        (["measure", "--device", "cpu", "--backend", "torch", "--cpu-allocator", "hoard"], "hoard"),
        (["measure", "--device", "cpu", "--cpu-allocator", "keep"], "applies to the torch backend on a CPU only"),
        (["measure", "--device", "cpu", "--backend", "torch", "--ort-shared-pool"], "--ort-shared-pool applies to the onnxruntime backend only"),
    ],
)
def test_measure_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "p.json"
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert message in _one_sentence_error(result)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("estimate", [False, True])
def test_measure_where_the_default_profiles_folder_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, estimate: bool) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").write_text("not a folder")
    args = ["measure", "--device", "gtx1070", "--estimate"] if estimate else ["measure", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert f"The output folder {tmp_path / 'profiles'} is a file." in _one_sentence_error(result)
    assert [p.name for p in tmp_path.iterdir()] == ["profiles"]


def test_measure_into_missing_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["measure", "--device", "cpu", "--out", str(tmp_path / "no" / "p.json")])
    assert "does not exist" in _one_sentence_error(result)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_measure_cuda_without_gpu() -> None:
    result = runner.invoke(app, ["measure", "--device", "cuda"])
    assert "No CUDA GPU is present" in _one_sentence_error(result)


def test_show_formats(tiny_profile_path: Path) -> None:
    table = runner.invoke(app, ["show", str(tiny_profile_path)])
    assert table.exit_code == 0, table.output
    assert "measured cost profile" in table.output and "sep_conv_3x3_x4" in table.output
    from casprof.edge_model import shared_input_costs

    r = shared_input_costs(Profile.load(tiny_profile_path), "reduce", "latency_ms")["input0"]
    wide = runner.invoke(app, ["show", str(tiny_profile_path)], terminal_width=250)
    assert f"reduce cell: factorized reduces of one input share {r:.3f} ms per input" in wide.output
    csv = runner.invoke(app, ["show", str(tiny_profile_path), "--csv"])
    lines = csv.output.strip().splitlines()
    assert lines[0].startswith("cell_type,op,latency_ms") and len(lines) == 1 + 11 + 11 + 10
    js = json.loads(runner.invoke(app, ["show", str(tiny_profile_path), "--json"]).output)
    assert js["method"] == "measured" and len(js["rows"]) == 32
    both = runner.invoke(app, ["show", str(tiny_profile_path), "--json", "--csv"])
    assert "Choose one" in _one_sentence_error(both)


def test_diff_notes_different_conditions() -> None:
    root = Path(__file__).resolve().parents[1]
    a = root / "profiles" / "cpu-6d78dc83-torch-fp32-768x1536.json"
    b = root / "benchmarks" / "results" / "fidelity_cpu_torch-keep_6d78dc8361ef86df.profile.json"
    result = runner.invoke(app, ["diff", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "made under different conditions (cpu_allocator: system → keep)" in result.output
    same = runner.invoke(app, ["diff", str(a), str(a)])
    assert same.exit_code == 0 and "different conditions" not in same.output


def test_check_and_diff(tiny_profile_path: Path) -> None:
    result = runner.invoke(app, ["check", str(tiny_profile_path)])
    assert result.exit_code == 0, result.output
    assert f"valid schema v{PROFILE_SCHEMA_VERSION} profile" in result.output
    d = runner.invoke(app, ["diff", str(tiny_profile_path), str(tiny_profile_path), "--json"])
    rows = json.loads(d.output)
    assert len(rows) == 32 and not any(r["significant"] for r in rows)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ('{"schema_version": 99}', "newer than this toolkit reads"),
        ('{"hello": 1}', "no integer schema_version"),
    ],
)
def test_check_bad_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["check", str(path)])
    assert message in _one_sentence_error(result)


def test_check_truncated_profile(tiny_profile_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(tiny_profile_path.read_text()[:-300])
    assert "not valid JSON" in _one_sentence_error(runner.invoke(app, ["check", str(path)]))


def test_genotype_and_predict(tiny_profile_path: Path, tmp_path: Path, network_files: dict[str, Path]) -> None:
    g = tmp_path / "g.json"
    result = runner.invoke(app, ["genotype", "--random", "--seed", "3", "--network", str(network_files["tiny"]), "--out", str(g)])
    assert result.exit_code == 0, result.output
    assert json.loads(g.read_text())["search"]["seed"] == 3
    pred = runner.invoke(app, ["predict", "--profile", str(tiny_profile_path), "--genotype", str(g), "--json"])
    assert pred.exit_code == 0, pred.output
    obj = json.loads(pred.output)
    assert set(obj) == {"latency_ms", "params", "macs"}
    assert all(isinstance(v["value"], float) for v in obj.values())
    assert obj["params"]["value"] > obj["params"]["baseline"] * 0  # numeric and present
    stdout_only = runner.invoke(app, ["genotype", "--random", "--seed", "3", "--network", str(network_files["tiny"])])
    assert json.loads(stdout_only.output) == json.loads(g.read_text())


def _write_bad_genotype(path: Path, cell: str, node: int, edge: int, value: list) -> None:
    d = random_genotype(0, TINY).to_dict()
    d[cell][node][edge] = value
    path.write_text(json.dumps(d))


@pytest.mark.parametrize(
    "cell, node, edge, value, message",
    [
        ("normal", 0, 0, ["conv_9x9", 0], "unknown operation 'conv_9x9'"),
        ("reduce", 1, 0, ["none", 0], "'none'"),
        ("ms", 2, 1, ["conv_3x3_d2", 7], "out of range"),
        ("normal", 2, 1, None, "twice"),
    ],
)
def test_predict_bad_genotypes(tiny_profile_path: Path, tmp_path: Path, cell: str, node: int, edge: int, value, message: str) -> None:
    g = tmp_path / "g.json"
    if value is None:  # the same predecessor twice
        d = random_genotype(0, TINY).to_dict()
        d[cell][node][edge] = list(d[cell][node][0])
        g.write_text(json.dumps(d))
    else:
        _write_bad_genotype(g, cell, node, edge, value)
    result = runner.invoke(app, ["predict", "--profile", str(tiny_profile_path), "--genotype", str(g)])
    assert message in _one_sentence_error(result)


def test_predict_mismatched_network(tiny_profile_path: Path, tmp_path: Path) -> None:
    g = tmp_path / "g.json"
    random_genotype(0).save(g)  # default network, profile is the tiny one
    result = runner.invoke(app, ["predict", "--profile", str(tiny_profile_path), "--genotype", str(g)])
    assert "was made for network" in _one_sentence_error(result)


def test_cas_profile_alias(tiny_profile_path: Path) -> None:
    result = runner.invoke(cas_app, ["profile", "show", str(tiny_profile_path), "--csv"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("cell_type,op")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "casprof", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_measure_resume_show_in_subprocesses(tmp_path: Path, network_files: dict[str, Path]) -> None:
    """A real measurement with ONNX Runtime through the console entry point, then show and check."""
    out = tmp_path / "mini.json"
    args = ["measure", "--device", "cpu", "--backend", "onnxruntime", "--network", str(network_files["mini"]),
            "--resolution", "32x64", "--rounds", "3", "--warmup", "1", "--threads", "1", "--ort-shared-pool",
            "--baseline-instances", "3", "--probes-per-bracket", "3", "--out", str(out)]
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    raw = json.loads(out.read_text())
    assert raw["backend"]["name"] == "onnxruntime"
    assert raw["backend"]["details"]["intra_op_thread_pool"] == "shared by every session of the process"
    assert raw["settings"]["ort_shared_pool"] is True and raw["settings"]["baseline_instances"] == 3
    assert raw["settings"]["probes_per_bracket"] == 3
    # the shared arena joins the shared pool's environment (the pool must come first) by default
    assert raw["settings"]["ort_shared_arena"] is True
    assert raw["backend"]["details"]["cpu_memory_arena"] == "shared by every session of the process"
    assert raw["backend"]["details"]["provider"] == "CPUExecutionProvider"
    assert "c_o latency ms" in done.stdout
    shown = _cli("show", str(out), "--csv", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.count("\n") == 33
    bad = _cli("measure", "--device", "titanxp", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "is not present" in bad.stderr


def test_an_internal_error_is_one_line_and_exit_1_unless_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (an exception that is not the toolkit's own) says so in one line; CASPROF_DEBUG=1 shows the traceback."""
    import casprof.cli.model_cmd as model_cmd

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(model_cmd, "random_genotype", broken)
    monkeypatch.delenv("CASPROF_DEBUG", raising=False)
    result = runner.invoke(app, ["genotype", "--random"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Internal error: RuntimeError: boom (a bug; run again with CASPROF_DEBUG=1 for the traceback" in result.output
    monkeypatch.setenv("CASPROF_DEBUG", "1")
    debug = runner.invoke(app, ["genotype", "--random"])
    assert isinstance(debug.exception, RuntimeError) and str(debug.exception) == "boom"
    # usage errors stay click's own (exit 2, its message), bad input the toolkit's
    assert runner.invoke(app, ["genotype", "--no-such-option"]).exit_code == 2
    assert runner.invoke(cas_app, ["no-such-command"]).exit_code == 2


def test_an_output_path_that_is_a_folder_is_refused_before_the_work(tiny_profile_path: Path, tmp_path: Path) -> None:
    """`calibrate --out DIR` used to time every network and lose them on the write; now it stops at once."""
    folder = tmp_path / "out"
    folder.mkdir()
    for args in (["calibrate", "--profile", str(tiny_profile_path), "--out", str(folder)],
                 ["pool", str(tiny_profile_path), str(tiny_profile_path), "--out", str(folder)],
                 ["genotype", "--random", "--out", str(folder)],
                 ["measure", "--device", "cpu", "--resolution", "32x64", "--out", str(folder)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert f"The output path {folder} is a folder" in result.output and "Traceback" not in result.output
        assert list(folder.iterdir()) == []


def test_a_reader_that_closed_the_pipe_ends_the_command_quietly() -> None:
    """``casprof show P --json | head -c 10``: the output (13 KB) is more than Python's 8 KB stdout buffer, so it is
    written while the command runs, after the reader has gone; the command ends as SIGPIPE would (141), with no
    "Internal error" line and no traceback."""
    profile = Path(__file__).resolve().parent.parent / "profiles" / "cpu-e6c8ed69-onnxruntime-fp32-768x1536.json"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        proc = subprocess.run([sys.executable, "-m", "casprof", "show", str(profile), "--json"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == ""
