"""The TensorRT build as far as a CPU allows: what ``build_serialized_engine`` asks of the builder.

TensorRT and a GPU are not here, so ``tensorrt`` is the stand-in of ``tests/_fake_tensorrt.py``
(its parser reads the real ONNX files written below). These tests pin the calls of the current
API: a strongly typed network, no precision flags, the workspace pool, an optimization profile
for a dynamic input, a timing cache refused (not silently ignored) when TensorRT cannot use it.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from casprof.backends.tensorrt_runner import (
    DEFAULT_WORKSPACE_BYTES,
    build_serialized_engine,
    input_needs_shape,
    onnx_precision,
    timing_cache_file,
    timing_cache_name,
)
from casprof.errors import MeasurementError, UserInputError
from tests._fake_tensorrt import CACHE_MAGIC, PLAN, make_fake_tensorrt

SHAPE = (1, 3, 32, 64)


def _relu_model(path: Path, dims: list) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims)
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y])), path)
    return path


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch):
    module = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


def test_a_static_model_builds_strongly_typed_without_precision_flags_or_profiles(trt, tmp_path: Path) -> None:
    onnx_path = _relu_model(tmp_path / "m.onnx", list(SHAPE))
    plan, facts = build_serialized_engine(onnx_path, input_shape=SHAPE)
    builder = trt.state["builder"]
    assert plan == PLAN
    assert builder.network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert builder.config.pool_limits == {int(trt.MemoryPoolType.WORKSPACE): DEFAULT_WORKSPACE_BYTES}
    assert builder.config.flags_set == []  # no BuilderFlag.FP16/INT8: the ONNX file's types decide
    assert builder.config.profiles == []
    assert facts["tf32"] is True and len(facts["timing_cache_sha256"]) == 64
    assert list(tmp_path.iterdir()) == [onnx_path]  # no timing cache asked for, none written


def test_a_dynamic_input_gets_a_profile_fixed_at_the_run_shape(trt, tmp_path: Path) -> None:
    onnx_path = _relu_model(tmp_path / "dyn.onnx", [1, 3, "height", "width"])
    plan, _ = build_serialized_engine(onnx_path, input_shape=SHAPE)
    assert plan == PLAN
    (profile,) = trt.state["builder"].config.profiles
    assert profile.shapes == {"input": (SHAPE, SHAPE, SHAPE)}


def test_a_dynamic_input_needs_the_shape_to_build_for(trt, tmp_path: Path) -> None:
    onnx_path = _relu_model(tmp_path / "dyn.onnx", [1, 3, "height", "width"])
    with pytest.raises(UserInputError, match="has a dynamic input 'input'; give the input shape"):
        build_serialized_engine(onnx_path)


@pytest.mark.parametrize("shape", [(1, 3, 32), (2, 3, 32, 64), (1, 4, 32, 64)])
def test_a_shape_the_input_cannot_take_is_refused_before_building(trt, tmp_path: Path, shape) -> None:
    onnx_path = _relu_model(tmp_path / "dyn.onnx", [1, 3, "height", "width"])
    with pytest.raises(UserInputError, match=r"takes inputs of shape 1x3x\?x\?, not " + "x".join(map(str, shape))):
        build_serialized_engine(onnx_path, input_shape=shape)
    assert trt.state["builder"].config.profiles == []


def test_the_timing_cache_is_read_updated_and_written_atomically(trt, tmp_path: Path) -> None:
    onnx_path = _relu_model(tmp_path / "m.onnx", list(SHAPE))
    cache = tmp_path / "t.timing-cache"
    cache.write_bytes(CACHE_MAGIC + b"old")
    _, facts = build_serialized_engine(onnx_path, input_shape=SHAPE, timing_cache=cache)
    assert trt.state["builder"].config.timing_cache.data.startswith(CACHE_MAGIC + b"old")
    assert cache.read_bytes() == CACHE_MAGIC + b"old+entries"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "t.timing-cache"]  # no temporary file left
    assert facts["timing_cache_sha256"] == hashlib.sha256(cache.read_bytes()).hexdigest()


def test_a_timing_cache_tensorrt_cannot_use_is_refused_not_ignored(trt, tmp_path: Path) -> None:
    onnx_path = _relu_model(tmp_path / "m.onnx", list(SHAPE))
    cache = tmp_path / "t.timing-cache"
    cache.write_bytes(b"from TensorRT 10.12 on another GPU")
    with pytest.raises(UserInputError) as err:
        build_serialized_engine(onnx_path, input_shape=SHAPE, timing_cache=cache)
    message = str(err.value)
    assert message.startswith(f"The timing cache {cache} cannot be used here (")
    assert "version mismatch" in message and message.endswith("delete it or pass another path.")
    assert cache.read_bytes() == b"from TensorRT 10.12 on another GPU"  # left as it was


def test_parser_and_builder_errors_become_one_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(fail_build=True))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(MeasurementError, match=r"^TensorRT could not parse .*bad\.onnx: Failed to parse ONNX model"):
        build_serialized_engine(bad, input_shape=SHAPE)
    with pytest.raises(MeasurementError, match=r"^TensorRT failed to build the engine: .*Could not find any implementation"):
        build_serialized_engine(_relu_model(tmp_path / "m.onnx", list(SHAPE)), input_shape=SHAPE)


def test_timing_cache_file_names_one_per_version_and_gpu_in_a_folder(tmp_path: Path) -> None:
    facts = dict(trt_version="11.4.0", gpu_name="NVIDIA H200", compute_capability="9.0")
    assert timing_cache_file(tmp_path, **facts) == tmp_path / timing_cache_name(**facts)
    assert timing_cache_file(tmp_path, **facts).name == "trt-11.4.0-sm90-nvidia-h200.timing-cache"
    assert timing_cache_file(tmp_path / "mine.cache", **facts) == tmp_path / "mine.cache"


def test_input_needs_shape() -> None:
    assert input_needs_shape("m", (1, 3, -1, -1), SHAPE) is True
    assert input_needs_shape("m", SHAPE, SHAPE) is False
    with pytest.raises(UserInputError, match=r"^m takes inputs of shape 1x3x64x128, not 1x3x32x64\.$"):
        input_needs_shape("m", (1, 3, 64, 128), SHAPE)


def test_onnx_precision_follows_the_weights_not_a_single_cast() -> None:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])

    def model(weight_dtype, cast: bool):
        w = numpy_helper.from_array(np.ones((4, 4), dtype=weight_dtype), "w")
        nodes = [helper.make_node("MatMul", ["input", "w"], ["logits"])]
        if cast:  # one float16 island (e.g. a Resize) in a float32 graph
            nodes.append(helper.make_node("Cast", ["logits"], ["half"], to=TensorProto.FLOAT16))
        return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=[w]))

    assert onnx_precision(model(np.float32, cast=True)) == "fp32"
    assert onnx_precision(model(np.float16, cast=False)) == "fp16"
    assert onnx_precision(model(np.float32, cast=False)) == "fp32"
