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
    describe_recorded,
    detect_hardware,
    parse_cpu_model,
    parse_cpu_signature,
    parse_vector_isa,
    same_recorded_hardware,
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
        "CPU 'Intel(R) Xeon(R) Platinum 8480+' (AVX512 kernels) and no CUDA GPU"
    )
    assert "'NVIDIA H100 80GB HBM3'" in fake_fingerprint().describe()
    zen3 = _with_cpu(fake_fingerprint(cpu_model="AMD EPYC", gpus=()), signature="AuthenticAMD family 25 model 1", vector_isa="AVX2")
    assert zen3.describe() == "CPU 'AMD EPYC' (AuthenticAMD family 25 model 1, AVX2) and no CUDA GPU"
    assert describe_recorded(zen3.to_dict()) == zen3.describe()
    assert describe_recorded({"digest": "abc"}) == "unknown hardware"
    assert describe_recorded({"cpu": {"arch": "x86_64"}}) == "unknown hardware"  # no model: malformed


def _with_cpu(hw: HardwareFingerprint, **changes) -> HardwareFingerprint:
    return dataclasses.replace(hw, cpu=dataclasses.replace(hw.cpu, **changes))


def _recorded(hw: HardwareFingerprint) -> dict:
    """The hardware block a profile records (``measure.build_profile``): to_dict plus the digest."""
    return {**hw.to_dict(), "digest": hw.digest()}


AMD_ZEN3 = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n"
    "stepping\t: 1\nflags\t\t: fpu sse4_1 sse4_2 avx f16c avx2 sha_ni vaes\n\n"
    "processor\t: 1\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nflags\t\t: avx2 avx512f\n"
)
INTEL_SPR = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
    "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: sse4_2 avx avx2 avx512f avx512bw amx_tile\n"
)
ARM_N1 = (
    "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes crc32 atomics\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n"
)


def test_parse_cpu_signature_and_vector_isa():
    # the first processor's values; two EPYC generations that share the brand string differ here
    assert parse_cpu_signature(AMD_ZEN3) == "AuthenticAMD family 25 model 1"
    assert parse_vector_isa(AMD_ZEN3) == "AVX2"
    assert parse_cpu_signature(INTEL_SPR) == "GenuineIntel family 6 model 143"
    assert parse_vector_isa(INTEL_SPR) == "AVX512"
    assert parse_cpu_signature(ARM_N1) == "implementer 0x41 part 0xd0c"
    assert parse_vector_isa(ARM_N1) == "NEON"
    assert parse_vector_isa(ARM_N1.replace("atomics", "atomics sve sve2")) == "SVE2"
    assert parse_cpu_signature("processor : 0\nmodel name : Some CPU\n") is None
    assert parse_cpu_signature("vendor_id : X\ncpu family : 6\nmodel : abc\n") is None
    assert parse_vector_isa("processor : 0\nflags : fpu vme\n") is None


def test_detect_here_records_the_cpu_signature():
    text = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    hw = detect_hardware()
    assert hw.cpu.signature == parse_cpu_signature(text)
    assert hw.cpu.vector_isa == parse_vector_isa(text)
    if text and "vendor_id" in text:
        assert hw.cpu.signature and hw.cpu.vector_isa  # every x86 Linux machine has both


def test_digest_tells_cpu_generations_apart_and_reads_older_fingerprints():
    # Two VMs whose hypervisor shows only "AMD EPYC": a Zen 4 (AVX-512) and a Zen 3 (AVX2), as seen here.
    base = fake_fingerprint(cpu_model="AMD EPYC", gpus=())
    zen4 = _with_cpu(base, signature="AuthenticAMD family 25 model 17", vector_isa="AVX512", capability="AVX512")
    zen3 = _with_cpu(base, signature="AuthenticAMD family 25 model 1", vector_isa="AVX2", capability="AVX2")
    assert zen4.digest() != zen3.digest()
    assert zen4.digest(legacy=True) == zen3.digest(legacy=True) == base.digest()
    assert zen3.recorded_here(_recorded(zen3)) and not zen3.recorded_here(_recorded(zen4))
    # a block recorded before the signature was: its digest is the older identity's ...
    old_zen4 = _with_cpu(base, capability="AVX512")
    old_zen3 = _with_cpu(base, capability="AVX2")
    block = _recorded(old_zen4)
    assert HardwareFingerprint.from_dict(block).digest() == block["digest"] == zen3.digest(legacy=True)
    # ... matched on it, and on torch's kernel capability, which the brand string does not decide
    assert zen4.recorded_here(block) and not zen3.recorded_here(block)
    assert zen3.recorded_here(_recorded(old_zen3))
    assert zen3.recorded_here(_recorded(_with_cpu(base, capability=None)))  # nothing recorded to tell them apart
    assert not zen3.recorded_here(_recorded(_with_cpu(old_zen3, model="AMD EPYC 9654")))
    assert not zen3.recorded_here({k: v for k, v in _recorded(zen3).items() if k != "digest"})
    # a new block with another signature is not matched through the older identity
    other = _recorded(_with_cpu(zen3, signature="AuthenticAMD family 25 model 17"))
    assert not zen3.recorded_here(other)
    # two recorded blocks: the same rule, whichever is older
    assert same_recorded_hardware(_recorded(old_zen3), _recorded(zen3))
    assert same_recorded_hardware(_recorded(zen3), _recorded(old_zen3))
    assert not same_recorded_hardware(_recorded(old_zen4), _recorded(old_zen3))  # equal digests, other kernels
    assert not same_recorded_hardware(_recorded(zen4), _recorded(zen3))
    assert same_recorded_hardware({"digest": "x"}, {"digest": "x"}) and not same_recorded_hardware({"digest": "x"}, {})
    assert zen3.same_machine(zen3) and not zen3.same_machine(zen4)
    assert zen3.cpu.signed and not old_zen3.cpu.signed


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
