"""Tests of casprof.hardware: real detection on this machine, plus fakes for the GPU paths."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from types import SimpleNamespace

import pytest
import torch

from casprof.errors import UserInputError
from casprof.hardware import (
    CpuInfo,
    GpuInfo,
    HardwareFingerprint,
    SoftwareInfo,
    decode_clocks_event_reasons,
    detect_hardware,
    parse_cpu_model,
    read_nvml_state,
    sample_gpu_state,
)

H100 = GpuInfo(
    name="NVIDIA H100 80GB HBM3",
    index=0,
    uuid="GPU-12345678-aaaa-bbbb-cccc-1234567890ab",
    compute_capability="9.0",
    total_memory_bytes=85_000_000_000,
    driver="570.10",
    cuda_runtime="12.8",
    cudnn=90800,
    sm_clock_mhz=1980,
    temperature_c=35,
    clocks_event_reasons=("gpu_idle",),
    mig_mode=False,
)


def fake_fingerprint(cpu_model: str = "Intel(R) Xeon(R) Platinum 8480+", gpus=(H100,)):
    return HardwareFingerprint(
        cpu=CpuInfo(model=cpu_model, arch="x86_64", logical_cores=16, capability="AVX512"),
        gpus=tuple(gpus),
        software=SoftwareInfo(python="3.11.7", os="Linux", torch="2.13.0"),
        torch_threads=16,
        env_threads={"OMP_NUM_THREADS": "16"},
    )


def test_detect_here_cpu():
    hw = detect_hardware()
    assert hw.cpu.logical_cores == os.cpu_count()
    assert isinstance(hw.cpu.model, str) and hw.cpu.model.strip()
    assert hw.cpu.arch
    if hasattr(os, "sched_getaffinity"):
        assert hw.cpu.affinity == len(os.sched_getaffinity(0))
    assert hw.cpu.capability == torch.backends.cpu.get_cpu_capability()
    assert hw.torch_threads == torch.get_num_threads()
    assert hw.software is not None
    assert hw.software.torch == torch.__version__
    assert "hostname" not in json.dumps(hw.to_dict()).lower()
    if not torch.cuda.is_available():
        assert hw.gpus == ()
        assert sample_gpu_state(0) is None


def test_detect_is_cached_and_threads_fresh(monkeypatch):
    import casprof.hardware as hardware

    calls = []
    real = hardware._detect_cpu
    monkeypatch.setattr(hardware, "_detect_cpu", lambda: calls.append(1) or real())
    detect_hardware.cache_clear()
    t0 = time.perf_counter()
    first = detect_hardware(include_gpu=False)
    assert time.perf_counter() - t0 < 5.0  # a loose bound: no slow external tool on the CPU-only path
    assert detect_hardware(include_gpu=False).cpu is first.cpu and calls == [1]  # the static part is read once
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert detect_hardware(include_gpu=False).env_threads == {"OMP_NUM_THREADS": "3"}
    assert first.gpus == ()


def test_round_trip_here_and_fake():
    for hw in (detect_hardware(), fake_fingerprint()):
        d = hw.to_dict()
        text = json.dumps(d)
        back = HardwareFingerprint.from_dict(json.loads(text))
        assert back == hw
        assert back.digest() == hw.digest()
    back = HardwareFingerprint.from_dict(json.loads(json.dumps(fake_fingerprint().to_dict())))
    assert back.gpus[0].clocks_event_reasons == ("gpu_idle",)
    assert isinstance(back.gpus, tuple)


def test_from_dict_ignores_unknown_keys_and_rejects_bad_blocks():
    d = fake_fingerprint().to_dict()
    d["future_field"] = 1
    d["cpu"]["future_cpu_field"] = "x"
    assert HardwareFingerprint.from_dict(d) == fake_fingerprint()
    with pytest.raises(UserInputError, match="hardware.cpu"):
        HardwareFingerprint.from_dict({"gpus": []})
    bad = fake_fingerprint().to_dict()
    del bad["gpus"][0]["index"]
    with pytest.raises(UserInputError, match="index"):
        HardwareFingerprint.from_dict(bad)
    with pytest.raises(UserInputError):
        HardwareFingerprint.from_dict([1, 2])


def test_digest_stable_and_identity_only():
    hw = detect_hardware()
    assert hw.digest() == detect_hardware().digest()
    assert len(hw.digest()) == 16 and int(hw.digest(), 16) >= 0
    other_cpu = dataclasses.replace(hw, cpu=dataclasses.replace(hw.cpu, model=hw.cpu.model + " X"))
    assert other_cpu.digest() != hw.digest()

    fake = fake_fingerprint()
    # clocks, temperatures, versions and thread settings do not change the digest
    hot = dataclasses.replace(
        fake,
        gpus=(dataclasses.replace(H100, sm_clock_mhz=1200, temperature_c=80, driver="580.1"),),
        software=dataclasses.replace(fake.software, torch="9.9"),
        torch_threads=1,
        env_threads={},
    )
    assert hot.digest() == fake.digest()
    other_gpu = dataclasses.replace(fake, gpus=(dataclasses.replace(H100, uuid="GPU-other"),))
    assert other_gpu.digest() != fake.digest()
    assert fake_fingerprint(gpus=()).digest() != fake.digest()


def test_describe():
    assert fake_fingerprint(gpus=()).describe() == (
        "CPU 'Intel(R) Xeon(R) Platinum 8480+' and no CUDA GPU"
    )
    assert "'NVIDIA H100 80GB HBM3'" in fake_fingerprint().describe()


def test_parse_cpu_model():
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 158\nmodel name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz\n"
    assert parse_cpu_model(x86) == "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz"
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    assert parse_cpu_model(arm) == "Raspberry Pi 4 Model B Rev 1.4"
    assert parse_cpu_model("processor : 0\nmodel : 158\n") is None


def test_decode_clocks_event_reasons():
    assert decode_clocks_event_reasons(None) is None
    assert decode_clocks_event_reasons(0) == ()
    assert decode_clocks_event_reasons(0x1 | 0x4) == ("gpu_idle", "sw_power_cap")
    assert decode_clocks_event_reasons(0x40 | 0x1000) == ("hw_thermal_slowdown", "unknown_0x1000")


class FakeNvml:
    """Stands in for the pynvml module (not torch): read-only queries, one unsupported."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return {1: 1755, 2: 2619}[clock]

    def nvmlDeviceGetTemperatureV(self, handle, sensor):
        raise self.NVMLError("not supported")

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 41

    def nvmlDeviceGetPowerUsage(self, handle):
        return 123_456

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000

    def nvmlDeviceGetPerformanceState(self, handle):
        return 0

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return 0x4


def test_read_nvml_state_with_fake_module():
    state = read_nvml_state(FakeNvml(), handle=object())
    assert state == {
        "sm_clock_mhz": 1755,
        "mem_clock_mhz": 2619,
        "temperature_c": 41,
        "power_w": pytest.approx(123.456),
        "power_limit_w": pytest.approx(700.0),
        "performance_state": 0,
        "clocks_event_reasons": ["sw_power_cap"],
    }
    json.dumps(state)
    empty = read_nvml_state(SimpleNamespace(), handle=None)
    assert set(empty) == set(state) and all(v is None for v in empty.values())
