"""Tests of casprof.backends.cpu_memory: the torch runner's CPU allocator setting, on real glibc.

Whether freed memory is kept is a property of the whole process, so the comparison of the two
settings runs each in a fresh subprocess and counts the page faults of a real torch workload.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from casprof.backends import RunnerSpec
from casprof.backends.cpu_memory import CpuAllocator, cpu_allocator_state, parse_cpu_allocator
from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.fidelity import measure_settings_of
from casprof.measure import MeasureSettings, make_runner_spec

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.libc_ver()[0] == "glibc"

#: A fresh process: a torch runner whose forward makes and frees two 64 MiB activations (above
#: glibc's largest dynamic mmap threshold, 32 MiB); prints the minor page faults of each of 8
#: forwards after its warm-up (under ``keep`` the heap may still grow now and then).
_FAULTS = """
import json, resource, sys, torch
from torch import nn
from casprof.backends import RunnerSpec
from casprof.backends.torch_runner import TorchRunner
class Big(nn.Module):
    def forward(self, x):
        y = torch.relu(x.repeat(1, 16, 1, 1))
        return (y * 2.0)[:, :4] + x
spec = RunnerSpec(input_shape=(1, 4, 512, 512), threads=1, cpu_allocator=sys.argv[1])
with TorchRunner(Big(), spec) as r:
    r.warmup(min_iters=2)
    faults = []
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        r.time_once()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"faults": faults, "details": r.info().details}))
"""


def _faults(mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _FAULTS, mode], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_removes_the_page_faults_of_large_activations() -> None:
    system = _faults("system")
    keep = _faults("keep")
    # 128 MiB of fresh 4 KiB pages per forward = 32,768 faults (measured: 49,155) under system, in
    # every forward; under keep none in most forwards (measured: the heap still grows by one 64 MiB
    # block now and then, e.g. [0, 2048, 0, 0, 0, 0, 16384, 0])
    assert min(system["faults"]) > 16384, system["faults"]
    assert sorted(keep["faults"])[len(keep["faults"]) // 2] < 256, keep["faults"]
    assert sum(keep["faults"]) < sum(system["faults"]) / 4, (keep["faults"], system["faults"])
    assert system["details"]["cpu_allocator"] == "system" and "mallopt" not in system["details"]
    assert keep["details"]["cpu_allocator"] == "keep"
    assert keep["details"]["mallopt"] == {"M_MMAP_THRESHOLD": 1 << 30, "M_TRIM_THRESHOLD": (1 << 31) - 1}
    assert keep["details"]["malloc"].startswith("glibc ")


_SYSTEM_AFTER_KEEP = """
import torch
from casprof.backends import RunnerSpec
from casprof.backends.cpu_memory import CpuAllocator, apply_cpu_allocator, cpu_allocator_state
from casprof.backends.torch_runner import TorchRunner
from casprof.errors import BackendUnavailableError
assert apply_cpu_allocator("keep")["cpu_allocator"] == "keep"
assert apply_cpu_allocator(CpuAllocator.KEEP) == cpu_allocator_state()  # idempotent
before = torch.get_num_threads()
try:
    with TorchRunner(torch.nn.Identity(), RunnerSpec(input_shape=(1, 3, 8, 8))):
        pass
except BackendUnavailableError as exc:
    assert torch.get_num_threads() == before
    print(exc)
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_system_after_keep_refuses_in_the_same_process() -> None:
    proc = subprocess.run([sys.executable, "-c", _SYSTEM_AFTER_KEEP], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "already keeps freed CPU memory" in proc.stdout and "new process" in proc.stdout


def test_this_process_runs_with_the_system_default() -> None:
    """The test session itself never keeps freed memory (every keep check runs in a subprocess)."""
    assert RunnerSpec(input_shape=(1, 3, 8, 8)).cpu_allocator is CpuAllocator.SYSTEM
    assert cpu_allocator_state()["cpu_allocator"] == "system"


def test_parse_cpu_allocator() -> None:
    assert parse_cpu_allocator("keep") is CpuAllocator.KEEP
    assert parse_cpu_allocator(CpuAllocator.SYSTEM) is CpuAllocator.SYSTEM
    with pytest.raises(UserInputError, match="Unknown CPU allocator setting 'jemalloc'; use one of: keep, system"):
        parse_cpu_allocator("jemalloc")
    with pytest.raises(UserInputError, match="Unknown CPU allocator"):
        MeasureSettings(cpu_allocator="tcmalloc")
    with pytest.raises(UserInputError, match="applies to the torch backend on a CPU only"):
        MeasureSettings(backend="onnxruntime", cpu_allocator="keep")
    assert CpuAllocator.KEEP.file_tag == "-keep" and CpuAllocator.SYSTEM.file_tag == ""


def test_settings_record_and_pass_the_allocator(tmp_path: Path) -> None:
    settings = MeasureSettings(rounds=3)
    assert settings.cpu_allocator is CpuAllocator.SYSTEM and settings.to_dict()["cpu_allocator"] == "system"
    from casprof.devices import resolve_device
    from casprof.hardware import detect_hardware

    spec = make_runner_spec(NetworkConfig(), MeasureSettings(backend="torch", rounds=3, cpu_allocator="keep"),
                            resolve_device("cpu", detect_hardware(include_gpu=False)), tmp_path)
    assert spec.cpu_allocator is CpuAllocator.KEEP


def test_fidelity_measures_as_the_profile_was_measured() -> None:
    """A profile without the setting predates it (measured under ``system``); a newer one says which."""
    from casprof.profile import Profile

    raw = json.loads((ROOT / "profiles" / "cpu-6d78dc83-torch-fp32-768x1536.json").read_text())
    raw["settings"].pop("cpu_allocator", None)
    assert measure_settings_of(Profile.from_dict(raw)).cpu_allocator is CpuAllocator.SYSTEM
    raw["settings"]["cpu_allocator"] = "keep"
    assert measure_settings_of(Profile.from_dict(raw)).cpu_allocator is CpuAllocator.KEEP
    raw["settings"]["cpu_allocator"] = "hoard"
    with pytest.raises(UserInputError, match="Unknown CPU allocator setting 'hoard'"):
        measure_settings_of(Profile.from_dict(raw))
    ort = json.loads((ROOT / "profiles" / "cpu-6d78dc83-onnxruntime-fp32-768x1536.json").read_text())
    ort["settings"]["cpu_allocator"] = "keep"  # no runner but torch's applies it: such a profile is refused
    with pytest.raises(UserInputError, match="applies to the torch backend on a CPU only"):
        measure_settings_of(Profile.from_dict(ort))


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_measure_with_keep_records_it(tmp_path: Path, network_files: dict[str, Path]) -> None:
    """A real torch measurement through the console entry point, in its own process."""
    out = tmp_path / "keep.json"
    args = ["measure", "--device", "cpu", "--backend", "torch", "--cpu-allocator", "keep", "--network",
            str(network_files["mini"]), "--resolution", "32x64", "--rounds", "3", "--warmup", "1", "--threads", "1",
            "--baseline-instances", "2", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "casprof", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    raw = json.loads(out.read_text())
    assert raw["settings"]["cpu_allocator"] == "keep"
    assert raw["backend"]["details"]["cpu_allocator"] == "keep" and "M_MMAP_THRESHOLD" in raw["backend"]["details"]["mallopt"]
