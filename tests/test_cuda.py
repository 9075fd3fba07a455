"""CUDA end to end: a tiny profile measured on the GPU (skipped where no CUDA GPU is present).

`benchmarks/cuda_session.sh` runs these first (``pytest -m cuda``) on a lent GPU; the full-size
GPU figures come from its benchmark steps, not from here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from casprof.devices import resolve_device
from casprof.hardware import detect_hardware
from casprof.measure import MeasureSettings, run_measurement
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.profile import Profile
from tests.conftest import TINY, TINY_RES

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_cuda_profile_is_timed_with_events_and_records_the_gpu(tmp_path: Path, precision: str) -> None:
    hw = detect_hardware()
    out = tmp_path / f"tiny-cuda-{precision}.json"
    settings = MeasureSettings(backend="torch", precision=precision, resolution=TINY_RES, threads=1, rounds=4,
                               warmup_iters=2)
    run_measurement(TINY, settings, resolve_device("cuda", hw), hw, out=out)
    p = Profile.load(out)
    assert (p.backend.name, p.backend.precision, p.backend.timer) == ("torch", precision, "cuda-event")
    assert p.backend.device.startswith("cuda")
    assert p.backend.details["device_name"] == torch.cuda.get_device_name(0)
    assert [g["name"] for g in p.hardware["gpus"]] == [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    assert p.hardware["digest"] == hw.digest()
    assert p.baseline["latency_ms"].value > 0
    for t in CELL_TYPES:
        assert set(p.costs[t]) >= set(candidate_ops(t))
        for op in candidate_ops(t):
            m = p.cost(t, op, "latency_ms").measurement
            if op == "identity":  # the baseline itself: c_o = 0 by definition, nothing measured
                assert m is None and p.cost(t, op, "latency_ms").value == 0.0
            else:
                assert m is not None and len(m.samples) == 4  # one paired difference per round


def test_channels_last_fp16_on_cuda_computes_what_nchw_fp32_does() -> None:
    """The torch runner's channels_last copy in half precision on the GPU (cuDNN's NHWC kernels)
    against the caller's NCHW fp32 module, which it leaves as it was."""
    import numpy as np

    from casprof.backends import RunnerSpec
    from casprof.backends.torch_runner import TorchRunner
    from casprof.probes import Probe, build_probe

    model = build_probe(TINY, Probe("normal", "sep_conv_3x3_x2"), seed=0).eval()
    x = np.random.default_rng(1).standard_normal((1, TINY.in_channels, *TINY_RES), dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    spec = RunnerSpec(input_shape=x.shape, device="cuda:0", precision="fp16", threads=1, memory_format="channels_last")
    with TorchRunner(model, spec) as runner:
        got = runner.infer(x)
        assert runner.time_once() > 0 and runner.info().details["memory_format"] == "channels_last"
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=2e-3)  # fp16 on a CPU: 8e-5 off at most, outputs up to 0.13
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
