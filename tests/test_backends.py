"""Tests of casprof.backends: real torch, ONNX and ONNX Runtime on a tiny CAS network (no mocks).

TensorRT is not installed on the CI machine: its runner is checked to refuse with one sentence,
and its pure logic (dtype mapping, cache keys, metadata, messages) is tested directly.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from casprof.backends import Backend, Precision, RunnerSpec, make_runner, parse_backend
from casprof.backends.onnx_export import ExportInfo, export_onnx
from casprof.backends.onnxruntime_runner import SHARED_ARENA, OnnxRuntimeRunner
from casprof.backends.tensorrt_runner import (
    TRT_NOT_INSTALLED,
    TensorRTRunner,
    engine_cache_key,
    engine_metadata,
    format_parser_errors,
    onnx_precision,
    precision_mismatch_message,
    tensorrt_unavailable_reason,
    timing_cache_name,
    trt_dtype_to_torch,
)
from casprof.backends.torch_runner import TorchRunner
from casprof.config import NetworkConfig
from casprof.errors import BackendUnavailableError, MeasurementError, UserInputError
from casprof.genotype import random_genotype
from casprof.network import CASNetwork

SHAPE = (1, 3, 32, 64)
CONFIG = NetworkConfig(stem_channels=(4, 4, 8), channels=4, ms_channels=4)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return CASNetwork.from_genotype(random_genotype(0, CONFIG)).eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _tiny()


@pytest.fixture(scope="module")
def reference(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """The fixed input of a seed-0 spec and the torch CPU logits on it."""
    x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    with torch.inference_mode():
        y = model(torch.from_numpy(x)).numpy()
    return x, y


@pytest.fixture(scope="module")
def exported(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> ExportInfo:
    folder = tmp_path_factory.mktemp("export")
    return export_onnx(model, SHAPE, folder / "tiny.onnx", exporter="torchscript")


def _spec(**kw: object) -> RunnerSpec:
    return RunnerSpec(input_shape=SHAPE, **kw)  # type: ignore[arg-type]


def _assert_parity(y: np.ndarray, ref: np.ndarray, atol: float, agreement: float) -> None:
    assert y.shape == ref.shape
    assert np.isfinite(y).all()
    assert float(np.abs(y - ref).max()) < atol
    agree = float((y.argmax(axis=1) == ref.argmax(axis=1)).mean())
    assert agree > agreement


# --------------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------------


def test_torch_runner_cpu_times_infers_and_restores_threads(model, reference) -> None:
    x, ref = reference
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with TorchRunner(model, _spec(threads=wanted)) as runner:
        assert torch.get_num_threads() == wanted
        assert runner.warmup(min_iters=2) >= 2
        ms = runner.time_once()
        assert ms > 0
        y = runner.infer(x)
        info = runner.info()
    assert torch.get_num_threads() == before
    assert not runner.active
    assert y.shape == (1, 19, 32, 64)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    assert info.backend == "torch" and info.backend_version == torch.__version__
    assert info.timer == "perf_counter" and info.threads == wanted and info.precision == "fp32"
    assert info.device == "cpu" and info.details["device_name"]
    with pytest.raises(RuntimeError):
        runner.time_once()


def test_torch_runner_fp16_on_cpu_refuses(model) -> None:
    before = torch.get_num_threads()
    with pytest.raises(BackendUnavailableError, match="fp16 with the torch backend needs a CUDA device"):
        with TorchRunner(model, _spec(precision=Precision.FP16)):
            pass
    assert torch.get_num_threads() == before


def test_torch_runner_bad_device_is_user_error(model) -> None:
    with pytest.raises(UserInputError, match="not a device name|not supported"):
        with TorchRunner(model, _spec(device="gpu0")):
            pass


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_runner_cuda_fp32_and_fp16_parity(reference) -> None:
    x, ref = reference
    net = _tiny()
    with TorchRunner(net, _spec(device="cuda:0")) as runner:
        runner.warmup(min_iters=3)
        assert runner.time_once() > 0
        y32 = runner.infer(x)
        info = runner.info()
    assert info.timer == "cuda-event"
    assert info.details["cudnn_benchmark"] is True
    assert "compute_capability" in info.details
    # TF32 convolutions may be on by default: fp32 on the GPU is compared at TF32 tolerances.
    _assert_parity(y32, ref, atol=5e-2, agreement=0.995)
    with TorchRunner(_tiny(), _spec(device="cuda:0", precision=Precision.FP16)) as runner:
        runner.warmup(min_iters=3)
        assert runner.time_once() > 0
        y16 = runner.infer(x)
        assert runner.info().precision == "fp16"
    _assert_parity(y16, ref, atol=5e-2, agreement=0.99)


# --------------------------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------------------------


def _check_export(info: ExportInfo, exporter: str, opset: int) -> None:
    folder = info.path.parent
    assert sorted(p.name for p in folder.iterdir()) == [info.path.name]  # no sidecar, no temp file
    assert info.exporter == exporter and info.opset == opset and info.precision == "fp32"
    assert info.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()
    assert info.seconds > 0
    proto = onnx.load(str(info.path))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert onnx_precision(proto) == "fp32"


def test_export_torchscript_single_checked_file(exported: ExportInfo, model: nn.Module) -> None:
    _check_export(exported, "torchscript", 17)
    assert not model.training


def test_export_traces_without_autograd_and_writes_the_file_a_plain_export_writes(exported: ExportInfo, model: nn.Module,
                                                                                   tmp_path: Path) -> None:
    """The torchscript export runs under no_grad (faster at full size) yet writes the same bytes
    as torch.onnx.export with autograd on, and leaves the caller's grad mode alone."""
    plain = tmp_path / "plain.onnx"
    assert torch.is_grad_enabled()
    torch.onnx.export(model.eval(), (torch.zeros(SHAPE),), str(plain), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True, verbose=False)
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == exported.sha256
    export_onnx(model, SHAPE, tmp_path / "again.onnx")
    assert torch.is_grad_enabled()


@pytest.mark.slow
def test_export_dynamo_single_checked_file(model: nn.Module, tmp_path: Path, capsys) -> None:
    info = export_onnx(model, SHAPE, tmp_path / "tiny.onnx", exporter="dynamo")
    _check_export(info, "dynamo", 18)
    out = capsys.readouterr().out
    assert "[torch.onnx]" not in out  # progress lines are silenced


class _Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom in forward")


def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError, match="torchscript exporter failed.*boom in forward"):
        export_onnx(_Broken(), SHAPE, tmp_path / "broken.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_refusals(model: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="fp16 ONNX export needs a CUDA device"):
        export_onnx(model, SHAPE, tmp_path / "half.onnx", half=True)
    with pytest.raises(UserInputError, match="Unknown ONNX exporter"):
        export_onnx(model, SHAPE, tmp_path / "x.onnx", exporter="tflite")
    with pytest.raises(UserInputError, match="does not exist"):
        export_onnx(model, SHAPE, tmp_path / "missing" / "x.onnx")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------------------------


def test_onnxruntime_from_module_cpu_parity(model, reference) -> None:
    x, ref = reference
    with OnnxRuntimeRunner(model, _spec(threads=1)) as runner:
        export_dir = runner.onnx_path.parent
        assert export_dir.is_dir()
        runner.warmup(min_iters=2)
        assert runner.time_once() > 0
        y = runner.infer(x)
        info = runner.info()
    assert not export_dir.exists()  # the temporary export folder is cleaned up
    _assert_parity(y, ref, atol=1e-4, agreement=0.999)
    assert info.backend == "onnxruntime" and info.timer == "perf_counter" and info.threads == 1
    assert info.details["provider"] == "CPUExecutionProvider"
    assert info.details["providers_in_session"][0] == "CPUExecutionProvider"
    assert info.details["exporter"] == "torchscript" and info.details["opset"] == 17
    assert len(info.details["onnx_sha256"]) == 64


_SHARED_POOL_SCRIPT = """
import sys
import numpy as np
from casprof.backends import RunnerSpec
from casprof.backends.onnxruntime_runner import OnnxRuntimeRunner
from casprof.errors import BackendUnavailableError

path, shape = sys.argv[1], tuple(int(v) for v in sys.argv[2].split(","))
x = np.zeros(shape, dtype=np.float32)
with OnnxRuntimeRunner(path, RunnerSpec(input_shape=shape, threads=1)) as own:  # a per-session pool first
    a = own.infer(x)
with OnnxRuntimeRunner(path, RunnerSpec(input_shape=shape, threads=2), shared_pool=True) as one, \\
        OnnxRuntimeRunner(path, RunnerSpec(input_shape=shape, threads=2), shared_pool=True) as two:
    assert np.allclose(one.infer(x), a, atol=1e-5) and np.allclose(two.infer(x), a, atol=1e-5)
    assert one.time_once() > 0 and two.time_once() > 0
    print(one.info().details["intra_op_thread_pool"], one.info().threads)
with OnnxRuntimeRunner(path, RunnerSpec(input_shape=shape, threads=2)) as later:  # asks for its own pool
    assert np.allclose(later.infer(x), a, atol=1e-5)
    print(later.info().details["intra_op_thread_pool"])
try:
    with OnnxRuntimeRunner(path, RunnerSpec(input_shape=shape, threads=1), shared_pool=True):
        pass
except BackendUnavailableError as exc:
    print("refused:", exc)
"""


def test_onnxruntime_shared_pool_runs_sessions_and_refuses_another_size(exported: ExportInfo) -> None:
    """Sessions on the process-wide pool give the same outputs; the pool cannot be resized."""
    done = subprocess.run([sys.executable, "-c", _SHARED_POOL_SCRIPT, str(exported.path), ",".join(map(str, SHAPE))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "shared by every session of the process 2"
    assert lines[1] == "shared by every session of the process"  # once it exists, every session runs on it
    assert lines[2].startswith("refused: This process already runs ONNX Runtime's shared thread pool with 2 thread(s)")
    with pytest.raises(ValueError, match="per-session"):
        OnnxRuntimeRunner(exported.path, _spec(), spinning=False, shared_pool=True)


def test_onnxruntime_shared_arena_gives_the_same_outputs_and_is_recorded(exported: ExportInfo, reference) -> None:
    """A session on the process's shared CPU arena computes what one with its own arena does."""
    x, ref = reference
    with make_runner("onnxruntime", exported.path, _spec(), shared_arena=True) as shared, \
            make_runner("onnxruntime", exported.path, _spec()) as own:
        y_shared, y_own = shared.infer(x), own.infer(x)
        assert shared.time_once() > 0 and own.time_once() > 0
        info_shared, info_own = shared.info(), own.info()
    np.testing.assert_array_equal(y_shared, y_own)
    _assert_parity(y_shared, ref, atol=1e-4, agreement=0.999)
    assert info_shared.details["cpu_memory_arena"] == SHARED_ARENA
    assert info_own.details["cpu_memory_arena"] == "per session"


_ARENA_MEMORY_SCRIPT = """
import sys
import numpy as np
from casprof.backends import RunnerSpec
from casprof.backends.onnxruntime_runner import OnnxRuntimeRunner

path, shared = sys.argv[1], sys.argv[2] == "shared"
shape = (1, 3, 256, 512)
def resident() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * 4096
x = np.zeros(shape, dtype=np.float32)
with OnnxRuntimeRunner(path, RunnerSpec(input_shape=shape, threads=1), shared_arena=shared) as first:
    first.infer(x)
    start = resident()
    runners = [OnnxRuntimeRunner(path, RunnerSpec(input_shape=shape, threads=1), shared_arena=shared) for _ in range(4)]
    for r in runners:
        r.activate()
        r.infer(x)
    print(resident() - start)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident memory from /proc")
def test_onnxruntime_shared_arena_reuses_memory_across_sessions(tmp_path: Path) -> None:
    """Sessions on the shared arena reuse one another's activation memory instead of each taking
    its own (the reason ``casprof measure`` uses it: no fresh memory to fault in per session)."""
    wide = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 3, 1)).eval()
    path = export_onnx(wide, (1, 3, 256, 512), tmp_path / "wide.onnx", exporter="torchscript").path
    grown = {}
    for kind in ("shared", "own"):
        done = subprocess.run([sys.executable, "-c", _ARENA_MEMORY_SCRIPT, str(path), kind],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        grown[kind] = int(done.stdout.strip().splitlines()[-1])
    activations = 32 * 256 * 512 * 4  # one 16 MiB activation; four own arenas hold several each
    assert grown["own"] > 4 * activations
    assert grown["shared"] < grown["own"] / 3


def test_onnxruntime_from_path_and_workdir(exported: ExportInfo, model, reference, tmp_path: Path) -> None:
    x, ref = reference
    with make_runner("onnxruntime", exported.path, _spec()) as runner:
        y = runner.infer(x)
        assert runner.time_once() > 0
        info = runner.info()
    _assert_parity(y, ref, atol=1e-4, agreement=0.999)
    assert info.details["onnx_sha256"] == exported.sha256 and info.details["exporter"] is None
    assert exported.path.exists()  # a given file is never removed
    with OnnxRuntimeRunner(model, _spec(workdir=tmp_path)) as runner:
        kept = runner.onnx_path
    assert kept.parent == tmp_path and kept.exists()  # exports into workdir are kept


def test_onnxruntime_refusals(model, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="fp16 with the onnxruntime backend needs a CUDA device"):
        with OnnxRuntimeRunner(model, _spec(precision=Precision.FP16)):
            pass
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        with pytest.raises(BackendUnavailableError, match=r"CPUExecutionProvider.*onnxruntime-gpu"):
            with OnnxRuntimeRunner(model, _spec(device="cuda:0")):
                pass
    with pytest.raises(UserInputError, match="does not exist"):
        with OnnxRuntimeRunner(tmp_path / "nope.onnx", _spec()):
            pass
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(UserInputError):
        with OnnxRuntimeRunner(bad, _spec()):
            pass


# --------------------------------------------------------------------------------------------
# TensorRT (pure logic here; the runner itself needs TensorRT and a GPU)
# --------------------------------------------------------------------------------------------


def test_tensorrt_runner_refuses_without_tensorrt(model) -> None:
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(BackendUnavailableError) as err:
        with TensorRTRunner(model, _spec(device="cuda:0")):
            pass
    assert str(err.value) == reason
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert reason == TRT_NOT_INSTALLED
        assert "pip install 'cas-toolkit[tensorrt]'" in reason


def test_trt_dtype_to_torch() -> None:
    assert trt_dtype_to_torch("FLOAT") is torch.float32
    assert trt_dtype_to_torch("HALF") is torch.float16
    assert trt_dtype_to_torch("DataType.HALF") is torch.float16
    assert trt_dtype_to_torch("int32") is torch.int32
    assert trt_dtype_to_torch("INT64") is torch.int64
    assert trt_dtype_to_torch("BOOL") is torch.bool
    assert trt_dtype_to_torch("BF16") is torch.bfloat16
    with pytest.raises(MeasurementError, match="INT4"):
        trt_dtype_to_torch("INT4")


def test_trt_keys_metadata_and_messages() -> None:
    base = dict(trt_version="11.4.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", onnx_sha256="ab" * 32)
    key = engine_cache_key(**base, input_shape=(1, 3, 768, 1536), precision="fp16")
    assert key == engine_cache_key(**base, input_shape=[1, 3, 768, 1536], precision="fp16")
    assert key != engine_cache_key(**base, input_shape=(1, 3, 768, 1536), precision="fp32")
    assert key != engine_cache_key(**{**base, "trt_version": "10.12.0"}, input_shape=(1, 3, 768, 1536), precision="fp16")
    meta = engine_metadata(**base, precision="fp16", input_shape=(1, 3, 768, 1536), tf32=True)
    assert meta["tensorrt_version"] == "11.4.0" and meta["compute_capability"] == "9.0"
    assert meta["precision"] == "fp16" and meta["strongly_typed"] is True and meta["cache_key"] == key
    assert meta["onnx_sha256"] == "ab" * 32 and meta["gpu_name"].startswith("NVIDIA H100")
    name = timing_cache_name(trt_version="11.4.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    assert name == "trt-11.4.0-sm90-nvidia-h100-80gb-hbm3.timing-cache"
    msg = format_parser_errors("m.onnx", ["In node 3 (Resize):\n UNSUPPORTED", "second  error"])
    assert msg == "TensorRT could not parse m.onnx: In node 3 (Resize): UNSUPPORTED; second error."
    assert "no reason" in format_parser_errors("m.onnx", [])
    assert precision_mismatch_message("m.onnx", "fp16", "fp16") is None
    assert "has no float16 tensors" in precision_mismatch_message("m.onnx", "fp16", "fp32")


def test_onnx_precision_sees_float16() -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT16, [1, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT16, [1, 3])
    proto = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y]))
    assert onnx_precision(proto) == "fp16"
    x32 = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])
    cast = helper.make_node("Cast", ["input"], ["logits"], to=TensorProto.FLOAT16)
    proto = helper.make_model(helper.make_graph([cast], "g", [x32], [y]))
    assert onnx_precision(proto) == "fp16"


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


def test_make_runner_factory(model, exported: ExportInfo) -> None:
    assert isinstance(make_runner(Backend.TORCH, model, _spec()), TorchRunner)
    assert isinstance(make_runner("onnxruntime", model, _spec(), exporter="dynamo"), OnnxRuntimeRunner)
    assert isinstance(make_runner("tensorrt", model, _spec(device="cuda:0")), TensorRTRunner)
    assert parse_backend("TensorRT") is Backend.TENSORRT
    with pytest.raises(UserInputError, match="Unknown backend 'tflite'; the known backends are torch, onnxruntime, tensorrt"):
        make_runner("tflite", model, _spec())
    with pytest.raises(UserInputError, match="torch backend needs a PyTorch module"):
        make_runner("torch", exported.path, _spec())
    with pytest.raises(UserInputError, match="Unknown ONNX exporter"):
        make_runner("onnxruntime", model, _spec(), exporter="magic")


def test_import_has_no_heavy_side_effects() -> None:
    code = (
        "import sys, casprof.backends as b; "
        "bad = [m for m in ('onnxruntime', 'tensorrt', 'onnx', 'casprof.backends.torch_runner') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
