"""Tests of the deploy package: real exports, real ONNX Runtime, the real CLI (no mocks).

A tiny network (``MINI`` from conftest) at 32x64 keeps the file fast on 2 cores. TensorRT is not
installed here: ``--trt`` is checked to refuse with its one sentence after the ONNX part worked,
and the engine metadata check is tested as pure logic.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from cas.cli import app as cas_app
from casprof.backends.tensorrt_runner import tensorrt_unavailable_reason
from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.genotype import random_genotype, uniform_genotype
from casprof.ops import ResidualSPP
from deploy.build import build_network
from deploy.engine import engine_mismatch
from deploy.export import _export_dynamic, _verify_in_onnxruntime, onnx_input_shape
from deploy.parity import FP16, FP32, TF32, compare_outputs, thresholds_for
from tests.conftest import MINI, TINY

ROOT = Path(__file__).resolve().parents[1]
RES = "32x64"
SHAPE = (1, 3, 32, 64)
#: Three cells (NNR), one node per cell: total stride 8 like MINI.
SMALL = NetworkConfig(stem_channels=(4, 4, 8), channels=4, ms_channels=4, num_classes=5, layout="NNR", nodes=1, ms_nodes=1)
FAST_BENCH = ["--min-iters", "3", "--min-seconds", "0", "--warmup-seconds", "0", "--threads", "1"]

runner = CliRunner()


def _cas(*args: str):
    return runner.invoke(cas_app, [str(a) for a in args])


def _exit2(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def _ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _x(shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


@pytest.fixture(scope="module")
def genotype_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("genotype") / "genotype.json"
    random_genotype(0, MINI).save(path)
    return path


@pytest.fixture(scope="module")
def small_genotype_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An even smaller network (one node per cell, three cells): dynamo exports cost per node."""
    path = tmp_path_factory.mktemp("genotype") / "small.json"
    random_genotype(0, SMALL).save(path)
    return path


@pytest.fixture(scope="module")
def exported(genotype_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """``cas deploy export`` of the MINI genotype at 32x64 into an empty folder."""
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    result = _cas("deploy", "export", "--genotype", genotype_file, "--onnx", out, "--resolution", RES, "--threads", "1")
    return result, out


# --------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------


def test_parity_result_fields_and_bool() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((1, 5, 32, 64)).astype(np.float32)
    same = compare_outputs(ref, ref.copy())
    assert same and same.passed and same.max_abs_error == 0 and same.max_rel_error == 0
    assert same.argmax_agreement == 1.0 and same.thresholds is FP32 and same.failures() == []
    d = same.to_dict()
    assert d["passed"] is True and d["shape"] == [1, 5, 32, 64] and d["thresholds"]["max_rel_error"] == 1e-4

    # A deliberately perturbed candidate: 0.5 % of the reference's range on one value fails fp32, passes fp16.
    bad = ref.copy()
    bad[0, 2, 3, 4] += 0.005 * float(np.abs(ref).max())
    result = compare_outputs(ref, bad)
    assert not result and not result.passed
    assert result.max_rel_error == pytest.approx(0.005, rel=1e-3)
    assert result.max_abs_error == pytest.approx(0.005 * float(np.abs(ref).max()), rel=1e-3)
    assert result.mean_abs_error == pytest.approx(result.max_abs_error / ref.size, rel=1e-3)
    assert "relative error" in result.failures()[0] and "FAILED" in result.summary()
    assert compare_outputs(ref, bad, FP16) and compare_outputs(ref, bad, TF32)  # rel 5e-3 < 1e-2

    # Swapping the classes of many pixels fails on agreement even with small numeric changes.
    flipped = ref.copy()
    flipped[:, [0, 1]] = flipped[:, [1, 0]]
    swapped = compare_outputs(ref, flipped, FP16)
    assert swapped.argmax_agreement < 0.995 and not swapped
    assert any("same class" in f for f in swapped.failures())

    nan = ref.copy()
    nan[0, 0, 0, 0] = np.nan
    assert not compare_outputs(ref, nan, FP16) and compare_outputs(ref, nan).to_dict()["max_abs_error"] is None
    with pytest.raises(ValueError, match="different shapes"):
        compare_outputs(ref, ref[:, :, :4])
    assert thresholds_for("fp32") is FP32 and thresholds_for("fp32", "cuda:0") is TF32 and thresholds_for("fp16") is FP16
    assert FP32.max_rel_error == 1e-4 and FP32.min_argmax_agreement == 0.999
    assert FP16.max_rel_error == 1e-2 and FP16.min_argmax_agreement == 0.995


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def test_export_writes_one_checked_onnx_with_metadata(exported, genotype_file: Path) -> None:
    result, out = exported
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.json"]  # no sidecar, no temp file
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)

    meta = json.loads((out.parent / "model.onnx.json").read_text())
    assert meta["onnx"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["onnx"]["exporter"] == "dynamo" and meta["onnx"]["opset"] == 18
    assert meta["onnx"]["input_shape"] == [1, 3, 32, 64] and meta["resolution"] == [32, 64]
    assert meta["network_fingerprint"] == MINI.fingerprint() == meta["network"]["fingerprint"]
    assert len(meta["genotype"]["sha256"]) == 64 and meta["genotype"]["path"] == str(genotype_file)
    assert meta["weights"] == {"source": "random init", "seed": 0}
    parity = meta["parity"]
    assert parity["passed"] is True and parity["backend"] == "onnxruntime" and parity["provider"] == "CPUExecutionProvider"
    assert parity["max_rel_error"] < 1e-4 and parity["argmax_agreement"] >= 0.999
    assert {"max_abs_error", "mean_abs_error", "thresholds"} <= set(parity)
    assert "random init" in result.stdout and "passed" in result.stdout

    # The file computes the seeded network's function (independently of the parity check).
    model = build_network(random_genotype(0, MINI)).model
    x = _x()
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert compare_outputs(ref, _ort_logits(out, x))


def test_weights_round_trip_int8_and_trt_refusal(small_genotype_file: Path, tmp_path: Path) -> None:
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present; this test checks the refusal")
    trained = build_network(random_genotype(0, SMALL), seed=7).model  # different weights from the default seed 0
    weights = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), weights)
    out = tmp_path / "out" / "net.onnx"
    out.parent.mkdir()
    result = _cas(
        "deploy", "export", "-g", small_genotype_file, "--weights", weights, "--onnx", out, "-r", RES, "--trt", "int8", "--threads", "1"
    )
    assert reason in _exit2(result)
    assert "TensorRT" in result.output
    assert out.is_file()  # the ONNX part worked and stays

    meta = json.loads((out.parent / "net.onnx.json").read_text())
    assert meta["weights"] == {"source": "file", "path": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert meta["parity"]["passed"] is True
    x = _x()
    with torch.inference_mode():
        ref = trained(torch.from_numpy(x)).numpy()
    assert compare_outputs(ref, _ort_logits(out, x))  # the file carries the loaded weights

    # --trt int8: a Q/DQ ONNX file, made on the CPU, that runs in ONNX Runtime.
    qdq = out.parent / "net.int8-qdq.onnx"
    assert qdq.is_file() and meta["int8"]["path"] == qdq.name and meta["int8"]["format"] == "QDQ"
    ops = {n.op_type for n in onnx.load(str(qdq)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    y8 = _ort_logits(qdq, x)
    assert y8.shape == ref.shape and np.isfinite(y8).all()
    assert meta["int8"]["sha256"] == hashlib.sha256(qdq.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["net.int8-qdq.onnx", "net.onnx", "net.onnx.json"]


def test_mismatching_weights_name_the_tensor(genotype_file: Path, tmp_path: Path) -> None:
    state = build_network(random_genotype(0, MINI)).model.state_dict()
    key = [k for k, v in state.items() if k.startswith("cells.") and v.ndim == 4][1]
    good = list(state[key].shape)
    state[key] = torch.zeros([good[0] + 1, *good[1:]])
    weights = tmp_path / "bad.pt"
    torch.save(state, weights)
    out = tmp_path / "out"
    out.mkdir()
    result = _cas("deploy", "export", "-g", genotype_file, "--weights", weights, "--onnx", out / "m.onnx", "-r", RES)
    message = _exit2(result)
    wrong = [good[0] + 1, *good[1:]]
    assert f"The weights do not fit the genotype: tensor {key} has shape {wrong} in the file but {good} in the network." in message

    other = tmp_path / "other.pt"
    torch.save(build_network(random_genotype(0, TINY)).model.state_dict(), other)
    assert "The weights do not fit the genotype" in _exit2(_cas("deploy", "export", "-g", genotype_file, "-w", other, "--onnx", out / "m.onnx", "-r", RES))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert "cannot be read as a PyTorch state_dict" in _exit2(_cas("deploy", "export", "-g", genotype_file, "-w", junk, "--onnx", out / "m.onnx", "-r", RES))
    assert list(out.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ('{"schema_version": 1, "normal": []}', "missing the field(s)"),
    ],
)
def test_bad_genotype_exits_2(tmp_path: Path, content: str | None, message: str) -> None:
    g = tmp_path / "g.json"
    if content is not None:
        g.write_text(content)
    before = sorted(tmp_path.iterdir())
    assert message in _exit2(_cas("deploy", "export", "-g", g, "--onnx", tmp_path / "m.onnx", "-r", RES))
    assert sorted(tmp_path.iterdir()) == before


def test_unknown_operation_in_genotype(tmp_path: Path) -> None:
    d = random_genotype(0, MINI).to_dict()
    d["normal"][0][0] = ["conv_9x9", 0]
    g = tmp_path / "g.json"
    g.write_text(json.dumps(d))
    assert "unknown operation 'conv_9x9'" in _exit2(_cas("deploy", "export", "-g", g, "-r", RES))


def test_export_refusals_write_nothing(genotype_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "m.onnx"
    assert "does not exist" in _exit2(_cas("deploy", "export", "-g", genotype_file, "--onnx", missing, "-r", RES))
    assert "not divisible by the network's total stride 8" in _exit2(
        _cas("deploy", "export", "-g", genotype_file, "--onnx", tmp_path / "m.onnx", "-r", "44x64")
    )
    assert "--dynamic needs the dynamo exporter" in _exit2(
        _cas("deploy", "export", "-g", genotype_file, "--onnx", tmp_path / "m.onnx", "-r", RES, "--dynamic", "--exporter", "torchscript")
    )
    assert "Unknown ONNX exporter" in _exit2(
        _cas("deploy", "export", "-g", genotype_file, "--onnx", tmp_path / "m.onnx", "-r", RES, "--exporter", "tflite")
    )
    assert "--trt builds an engine for one input size (--resolution); drop --dynamic." in _exit2(
        _cas("deploy", "export", "-g", genotype_file, "--onnx", tmp_path / "m.onnx", "-r", RES, "--dynamic", "--trt", "fp16")
    )
    assert "--engine names the engine that --trt builds" in _exit2(
        _cas("deploy", "export", "-g", genotype_file, "--onnx", tmp_path / "m.onnx", "-r", RES, "--engine", tmp_path / "m.engine")
    )
    assert "--timing-cache goes with --trt" in _exit2(
        _cas("deploy", "export", "-g", genotype_file, "--onnx", tmp_path / "m.onnx", "-r", RES, "--timing-cache", tmp_path)
    )
    assert f"The folder of the timing cache {missing} does not exist." in _exit2(
        _cas("deploy", "export", "-g", genotype_file, "--onnx", tmp_path / "m.onnx", "-r", RES, "--trt", "fp16", "--timing-cache", missing)
    )
    assert list(tmp_path.iterdir()) == []


#: A genotype without spp_* operations: every size stays symbolic in torch.export.
DYNAMIC_OK = {"normal": "identity", "reduce": "pooled_conv_3x3", "ms": "conv_3x3_d2"}


def test_dynamic_export_keeps_height_and_width_symbolic(tmp_path: Path) -> None:
    g = tmp_path / "g.json"
    uniform_genotype(DYNAMIC_OK, SMALL).save(g)
    out = tmp_path / "dyn.onnx"
    result = _cas("deploy", "export", "-g", g, "--onnx", out, "-r", RES, "--dynamic", "--threads", "1")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "dyn.onnx.json").read_text())
    dims = meta["onnx"]["input_shape"]
    assert dims[:2] == [1, 3] and all(isinstance(d, str) for d in dims[2:])
    assert meta["onnx"]["dynamic"] is True
    assert [c["resolution"] for c in meta["parity"]["checks"]] == [[32, 64], [40, 80]]
    assert all(c["passed"] for c in meta["parity"]["checks"])
    x = _x((1, 3, 64, 128))  # a third size, never seen by the export
    with torch.inference_mode():
        ref = build_network(uniform_genotype(DYNAMIC_OK, SMALL)).model(torch.from_numpy(x)).numpy()
    assert compare_outputs(ref, _ort_logits(out, x))


def test_dynamic_export_refuses_a_size_baked_into_the_graph(tmp_path: Path) -> None:
    # ResidualSPP reads the map size as Python ints: torch.export accepts the dynamic dims but
    # fixes the upsampling size, so the file only works at the export size. That must be exit 2.
    model = torch.nn.Sequential(ResidualSPP(3, 8)).eval()
    path = tmp_path / "spp.onnx"
    _export_dynamic(model, SHAPE, path, 8)
    assert all(isinstance(d, str) for d in onnx_input_shape(path)[2:])  # looks dynamic...
    with pytest.raises(UserInputError, match="could not keep height and width dynamic.*fails at 40x80.*spp_"):
        _verify_in_onnxruntime(path, model, [(32, 64), (40, 80)], 3, 1, None)  # ...but is not
    checks, first, _ = _verify_in_onnxruntime(path, model, [(32, 64)], 3, 1, None)
    assert first and checks[0]["resolution"] == [32, 64]


# --------------------------------------------------------------------------------------------
# Bench
# --------------------------------------------------------------------------------------------


def test_bench_torch_and_onnxruntime_report(small_genotype_file: Path, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    result = _cas("deploy", "bench", "-g", small_genotype_file, "-b", "torch", "-b", "onnxruntime", "-r", RES, *FAST_BENCH,
                  "--memory-format", "channels_last", "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["resolution"] == [32, 64] and data["precision"] == "fp32" and data["device"] == "cpu"
    assert data["hardware"]["cpu"]["model"] and len(data["hardware_digest"]) == 16
    assert data["network"]["params"] > 0 and data["network"]["macs"] >= data["network"]["conv_macs"] > 0
    assert data["source"]["weights"]["source"] == "random init"
    rows = data["results"]
    assert [r["backend"] for r in rows] == ["torch", "onnxruntime"]
    for r in rows:
        lat = r["latency_ms"]
        assert r["fps"] == pytest.approx(1000.0 / lat["median"])
        assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["mean"] > 0 and lat["std"] >= 0 and len(lat["samples"]) == lat["n"] >= 3
        assert r["precision"] == "fp32" and r["resolution"] == [32, 64] and r["threads"] == 1 and r["device"] == "cpu"
        assert r["backend_version"] and r["timer"] == "perf_counter" and r["hardware_digest"] == data["hardware_digest"]
        assert r["software"]["torch"] == torch.__version__
        assert r["parity"]["passed"] is True
    assert data["settings"]["cpu_allocator"] == "system" and rows[0]["details"]["cpu_allocator"] == "system"
    # channels_last is the torch runner's alone (its parity above holds in it); ONNX Runtime keeps its own layout
    assert data["settings"]["memory_format"] == "channels_last" and rows[0]["details"]["memory_format"] == "channels_last"
    assert "memory_format" not in rows[1]["details"]
    assert rows[0]["fps_ratio_to_first"] == 1.0
    assert rows[1]["fps_ratio_to_first"] == pytest.approx(rows[1]["fps"] / rows[0]["fps"])
    assert rows[1]["details"]["exporter"] == "dynamo" and rows[1]["details"]["provider"] == "CPUExecutionProvider"

    md = (tmp_path / "bench.md").read_text()
    assert "| backend | version |" in md and "| torch |" in md and "| onnxruntime |" in md and "random init" in md
    assert "PyTorch memory format: channels_last" in md
    assert "| backend | version |" in result.stdout  # the table is always printed
    table = list(csv.DictReader(io.StringIO((tmp_path / "bench.csv").read_text())))
    assert [row["backend"] for row in table] == ["torch", "onnxruntime"]
    assert float(table[1]["fps"]) == pytest.approx(rows[1]["fps"], rel=1e-3) and table[0]["resolution"] == RES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv", "bench.json", "bench.md"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-r", "44x64"], "not divisible by the network's total stride 8"),
        (["-r", RES, "-b", "bogus"], "bogus"),
        (["-r", RES, "--precision", "int8"], "int8"),
        (["-r", RES, "--min-iters", "0"], "--min-iters must be at least 1"),
        (["-r", RES, "--exporter", "tflite"], "Unknown ONNX exporter"),
        (["-r", RES, "--cpu-allocator", "hoard"], "hoard"),
        (["-r", RES, "--memory-format", "nhwc"], "nhwc"),
        (["-r", RES, "-b", "onnxruntime", "--memory-format", "channels_last"], "applies to the torch backend only"),
        (["-r", RES, "-b", "onnxruntime", "--cpu-allocator", "keep"], "--cpu-allocator keep applies to the torch backend on a CPU only"),
    ],
)
def test_bench_bad_input(genotype_file: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = _cas("deploy", "bench", "-g", genotype_file, *FAST_BENCH, *args, "--report", tmp_path / "r.json")
    assert message in _exit2(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_bench_fp16_on_cpu(genotype_file: Path, tmp_path: Path) -> None:
    result = _cas("deploy", "bench", "-g", genotype_file, "-r", RES, "--precision", "fp16", *FAST_BENCH, "--report", tmp_path / "r.json")
    assert "fp16 with the torch backend needs a CUDA device" in _exit2(result)
    result = _cas("deploy", "bench", "-g", genotype_file, "-b", "onnxruntime", "-r", RES, "--precision", "fp16", *FAST_BENCH)
    assert "fp16 with the onnxruntime backend needs a CUDA device" in _exit2(result)
    assert list(tmp_path.iterdir()) == []


def test_bench_source_refusals(exported, genotype_file: Path, tmp_path: Path) -> None:
    _, onnx_path = exported
    assert "needs a genotype" in _exit2(_cas("deploy", "bench", "--onnx", onnx_path, "-b", "torch", *FAST_BENCH))
    assert "Give exactly one of --genotype, --onnx and --engine" in _exit2(_cas("deploy", "bench", *FAST_BENCH))
    assert "Give exactly one" in _exit2(_cas("deploy", "bench", "-g", genotype_file, "--onnx", onnx_path, *FAST_BENCH))
    assert "takes 32x64 inputs, not 64x128" in _exit2(_cas("deploy", "bench", "--onnx", onnx_path, "-r", "64x128", *FAST_BENCH))
    assert "does not exist" in _exit2(_cas("deploy", "bench", "--onnx", tmp_path / "nope.onnx", *FAST_BENCH))
    assert "--report names the JSON file" in _exit2(
        _cas("deploy", "bench", "--onnx", onnx_path, *FAST_BENCH, "--report", tmp_path / "r.md")
    )
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00plan")
    assert "has no metadata file" in _exit2(_cas("deploy", "bench", "--engine", engine, *FAST_BENCH))
    meta = {"tensorrt_version": "0.0.0-test", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "input_shape": [1, 3, 32, 64]}
    (tmp_path / "m.engine.json").write_text(json.dumps({**meta, "engine_sha256": hashlib.sha256(b"another plan").hexdigest()}))
    assert f"The engine {engine} is not the one its metadata m.engine.json describes" in _exit2(
        _cas("deploy", "bench", "--engine", engine, *FAST_BENCH)
    )
    (tmp_path / "m.engine.json").write_text(json.dumps({**meta, "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest()}))
    reason = tensorrt_unavailable_reason()
    message = _exit2(_cas("deploy", "bench", "--engine", engine, *FAST_BENCH))
    if reason is not None:
        assert reason in message
    else:  # TensorRT and a GPU are here: the engine's metadata names a TensorRT that is not
        assert "The engine was built with TensorRT 0.0.0-test" in message
    assert "runs only on the tensorrt backend" in _exit2(_cas("deploy", "bench", "--engine", engine, "-b", "onnxruntime", *FAST_BENCH))


@pytest.mark.parametrize("flag", ["--min-seconds", "--warmup-seconds"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_bench_refuses_non_finite_seconds(genotype_file: Path, tmp_path: Path, flag: str, value: str) -> None:
    args = list(FAST_BENCH)
    args[args.index(flag) + 1] = value
    result = _cas("deploy", "bench", "-g", genotype_file, "-r", RES, *args, "--report", tmp_path / "r.json")
    assert f"{flag} must be a finite number of seconds, at least 0" in _exit2(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "field, raw, message",
    [
        ("channels", "16.0", "channels must be an integer, got 16.0"),
        ("num_classes", "1e400", "num_classes must be an integer, got inf"),
        ("nodes", "true", "nodes must be an integer, got True"),
        ("layout", '["N", "N", "R", "N"]', "layout must be a string of N and R"),
    ],
)
def test_bench_refuses_a_genotype_whose_network_has_the_wrong_types(tmp_path: Path, field: str, raw: str, message: str) -> None:
    d = random_genotype(0, MINI).to_dict()
    del d["network"]["fingerprint"]
    d["network"][field] = "@VALUE@"
    g = tmp_path / "g.json"
    g.write_text(json.dumps(d).replace('"@VALUE@"', raw))
    out = tmp_path / "out"
    out.mkdir()
    result = _cas("deploy", "bench", "-g", g, "-r", RES, *FAST_BENCH, "--report", out / "r.json")
    assert message in _exit2(result)
    assert list(out.iterdir()) == []


def test_reexport_replaces_the_pair_and_bench_refuses_a_torn_pair(exported, small_genotype_file: Path, tmp_path: Path) -> None:
    _, old_onnx = exported
    out = tmp_path / "net.onnx"
    stale_meta = tmp_path / "stale.json"
    out.write_bytes(old_onnx.read_bytes())  # an earlier export of another genotype at the same path
    (tmp_path / "net.onnx.json").write_bytes((old_onnx.parent / "model.onnx.json").read_bytes())
    stale_meta.write_bytes((old_onnx.parent / "model.onnx.json").read_bytes())

    result = _cas("deploy", "export", "-g", small_genotype_file, "--onnx", out, "-r", RES, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx", "net.onnx.json", "stale.json"]  # no temp file left
    meta = json.loads((tmp_path / "net.onnx.json").read_text())
    assert meta["onnx"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["network_fingerprint"] == SMALL.fingerprint()

    # A kill between the two renames leaves the new ONNX file beside the old metadata: refused.
    (tmp_path / "net.onnx.json").write_bytes(stale_meta.read_bytes())
    report = tmp_path / "r.json"
    message = _exit2(_cas("deploy", "bench", "--onnx", out, "-b", "onnxruntime", *FAST_BENCH, "--report", report))
    assert f"The ONNX file {out} does not match the sha256 in its metadata" in message
    assert not report.exists()


def test_engine_mismatch_messages() -> None:
    meta = {"tensorrt_version": "11.4.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    here = {"trt_version": "11.4.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert engine_mismatch(meta, **here) is None
    assert "built with TensorRT 11.4.0 but TensorRT 10.12.0 is installed" in engine_mismatch(meta, **{**here, "trt_version": "10.12.0"})
    other = engine_mismatch(meta, **{**here, "gpu_name": "NVIDIA H200", "compute_capability": "9.0"})
    assert "built for NVIDIA H100 80GB HBM3" in other and "this GPU is NVIDIA H200" in other


def test_python_m_cas_bench_onnx_subprocess(exported, tmp_path: Path) -> None:
    _, onnx_path = exported
    report = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "cas", "deploy", "bench", "--onnx", str(onnx_path), "-b", "onnxruntime", *FAST_BENCH, "--report", str(report)],
        cwd=ROOT, env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| onnxruntime |" in proc.stdout and "Traceback" not in proc.stderr
    data = json.loads(report.read_text())
    assert data["resolution"] == [32, 64] and data["source"]["kind"] == "onnx"  # the file's own fixed size
    assert data["source"]["export_metadata"]["onnx"]["sha256"] == data["source"]["onnx"]["sha256"]
    assert data["network"] is None and data["results"][0]["parity"] is None
    assert (tmp_path / "r.md").is_file() and (tmp_path / "r.csv").is_file()


def test_deploy_imports_are_light_and_never_search() -> None:
    code = (
        "import sys, deploy, deploy.cli, deploy.export, deploy.bench, deploy.engine, deploy.quantize, deploy.parity, deploy.build; "
        "bad = [m for m in ('onnxruntime', 'tensorrt', 'search') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in (ROOT / "deploy").glob("*.py"):
        text = path.read_text()
        assert "import search" not in text and "from search" not in text, path
