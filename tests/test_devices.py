"""Tests of the device registry and of resolve_device (GPU branches via fake fingerprints)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from casprof.devices import (
    DEVICES,
    DeviceKind,
    DeviceSpec,
    devices_present,
    get_device,
    list_devices,
    resolve_device,
)
from casprof.errors import BackendUnavailableError, UserInputError
from casprof.hardware import CpuInfo, GpuInfo, HardwareFingerprint, detect_hardware

REQUIRED = ["cpu", "cuda", "titanxp", "gtx1070", "h100", "h200", "i7-8700"]
GPU_NAMED = ["titanxp", "gtx1070", "h100", "h200"]
CANONICAL = {
    "titanxp": "NVIDIA TITAN Xp",
    "gtx1070": "NVIDIA GeForce GTX 1070",
    "h100": "NVIDIA H100 80GB HBM3",
    "h200": "NVIDIA H200",
}
XEON = "Intel(R) Xeon(R) Platinum 8480+"


def fake_hw(gpu_names=(), cpu_model=XEON) -> HardwareFingerprint:
    gpus = tuple(
        GpuInfo(name=n, index=i, compute_capability="9.0", total_memory_bytes=80 << 30)
        for i, n in enumerate(gpu_names)
    )
    return HardwareFingerprint(
        cpu=CpuInfo(model=cpu_model, arch="x86_64", logical_cores=16), gpus=gpus
    )


def test_registry_contents_and_order():
    assert list(DEVICES)[: len(REQUIRED)] == REQUIRED
    assert [d.name for d in list_devices()] == list(DEVICES)
    assert all(isinstance(d, DeviceSpec) and DEVICES[d.name] is d for d in list_devices())
    assert DEVICES["cpu"].kind is DeviceKind.CPU and DEVICES["i7-8700"].kind is DeviceKind.CPU
    for name in ["cuda", *GPU_NAMED]:
        assert DEVICES[name].kind is DeviceKind.CUDA
    for name in ("cpu", "cuda"):
        assert DEVICES[name].name_pattern is None and DEVICES[name].peak_fp32_tflops is None
    for name in GPU_NAMED:
        d = DEVICES[name]
        for value in (d.peak_fp32_tflops, d.peak_fp16_tflops, d.memory_bandwidth_gbs, d.memory_gb):
            assert value is not None and value > 0
        assert d.launch_overhead_us > 0 and d.notes
    assert DEVICES["titanxp"].peak_fp32_tflops == pytest.approx(12.15)
    assert DEVICES["titanxp"].memory_bandwidth_gbs == pytest.approx(547.7)
    assert DEVICES["gtx1070"].peak_fp32_tflops == pytest.approx(6.46)
    assert DEVICES["h100"].peak_fp16_tflops == pytest.approx(989.5)
    assert DEVICES["h200"].memory_bandwidth_gbs == pytest.approx(4800)
    cpu = DEVICES["i7-8700"]
    assert 0.5 < cpu.peak_fp32_tflops < 0.9 and cpu.memory_bandwidth_gbs == pytest.approx(41.6)
    assert DEVICES["cpu"].launch_overhead_us < DEVICES["cuda"].launch_overhead_us
    assert DEVICES["h100"].to_dict()["kind"] == "cuda"


def test_patterns_match_canonical_names():
    for d in list_devices():
        if d.name_pattern is not None:
            re.compile(d.name_pattern)
    for name, gpu_name in CANONICAL.items():
        for other, other_gpu in CANONICAL.items():
            assert DEVICES[name].matches(other_gpu) == (name == other), (name, other_gpu)
    assert DEVICES["titanxp"].matches("TITAN XP")
    assert not DEVICES["gtx1070"].matches("GeForce GTX 1070 Ti")
    assert not DEVICES["gtx1070"].matches("NVIDIA GeForce GTX 1070Ti")
    assert DEVICES["i7-8700"].matches("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz")
    assert not DEVICES["i7-8700"].matches("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz")


def test_get_device_unknown_lists_known_names():
    assert get_device("H100") is DEVICES["h100"]
    with pytest.raises(UserInputError) as info:
        get_device("foo")
    msg = str(info.value)
    assert msg.startswith("Unknown device 'foo'; known devices: cpu, cuda, ")
    for name in REQUIRED:
        assert name in msg
    with pytest.raises(UserInputError):
        resolve_device("foo", fake_hw())


def test_resolve_cpu_here():
    hw = detect_hardware()
    r = resolve_device("cpu", hw)
    assert r.torch_device == "cpu" and r.matched_name == hw.cpu.model and r.spec is DEVICES["cpu"]
    torch.zeros(1, device=r.torch_device)


def test_named_gpu_absent_here():
    hw = detect_hardware()
    if any(DEVICES["titanxp"].matches(g.name) for g in hw.gpus):
        pytest.skip("a TITAN Xp is present")
    with pytest.raises(UserInputError) as info:
        resolve_device("titanxp", hw)
    msg = str(info.value)
    assert f"'{hw.cpu.model}'" in msg and "titanxp" in msg
    if not hw.gpus:
        assert "--device cpu" in msg and "no CUDA GPU" in msg
    assert msg.endswith(".") and ". " not in msg  # one sentence


def test_cuda_absent_is_backend_unavailable():
    with pytest.raises(BackendUnavailableError, match="--device cpu") as info:
        resolve_device("cuda", fake_hw())
    assert XEON in str(info.value)


def test_fake_h100_resolution():
    hw = fake_hw(["NVIDIA H100 80GB HBM3"])
    for name in ("h100", "cuda"):
        r = resolve_device(name, hw)
        assert r.torch_device == "cuda:0" and r.matched_name == "NVIDIA H100 80GB HBM3"
        assert r.gpu is hw.gpus[0] and r.kind is DeviceKind.CUDA
    assert resolve_device("cpu", hw).torch_device == "cpu"
    with pytest.raises(UserInputError) as info:
        resolve_device("titanxp", hw)
    msg = str(info.value)
    assert "NVIDIA TITAN Xp" in msg and "'NVIDIA H100 80GB HBM3'" in msg
    assert "--device h100 or --device cuda" in msg
    assert [d.name for d in devices_present(hw)] == ["h100", "cpu", "cuda"]


def test_named_gpu_picks_matching_index():
    hw = fake_hw(["NVIDIA GeForce GTX 1070 Ti", "NVIDIA GeForce GTX 1070", "NVIDIA TITAN Xp"])
    assert resolve_device("gtx1070", hw).torch_device == "cuda:1"
    assert resolve_device("titanxp", hw).torch_device == "cuda:2"
    assert resolve_device("cuda", hw).torch_device == "cuda:0"
    with pytest.raises(BackendUnavailableError):
        resolve_device("h200", hw)


def test_named_cpu():
    r = resolve_device("i7-8700", fake_hw(cpu_model="Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz"))
    assert r.torch_device == "cpu" and r.gpu is None
    with pytest.raises(UserInputError, match=re.escape(f"this machine has CPU '{XEON}'")):
        resolve_device("i7-8700", fake_hw())
    assert dataclasses.is_dataclass(r)
