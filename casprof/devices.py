"""Device registry (DESIGN §5 ``casprof devices``) and resolution of a name to present hardware.

A registry entry names a kind of hardware and carries its spec-sheet figures (used only for
``--estimate``; a measurement never uses them). ``resolve_device`` refuses a named device that is
not the hardware present: ``cpu`` and ``cuda`` always mean "whatever is here".

Assumptions kept explicit:

* ``launch_overhead_us`` is a typical per-kernel (per-operator) dispatch overhead, not a spec
  figure: about 5 µs for a CUDA kernel launched from PyTorch eager mode, about 1 µs for an operator
  call on the CPU. It is only an estimate input.
* GPU FP16 figures are the rate of the hardware the software would use: on Pascal consumer/TITAN
  cards FP16 arithmetic runs at 1/64 of FP32 (no tensor cores); on Hopper it is the dense FP16
  tensor-core rate (the "with sparsity" figure is twice that and is not used).
* ``memory_gb`` of a CPU entry is ``None``: host memory is a property of the machine, not the CPU.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch

from casprof.errors import BackendUnavailableError, UserInputError
from casprof.hardware import GpuInfo, HardwareFingerprint

__all__ = [
    "DeviceKind",
    "DeviceSpec",
    "ResolvedDevice",
    "DEVICES",
    "get_device",
    "list_devices",
    "resolve_device",
    "devices_present",
]


class DeviceKind(str, Enum):
    CPU = "cpu"
    CUDA = "cuda"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class DeviceSpec:
    """One registry entry; ``name_pattern`` None means "whatever device of this kind is here"."""

    name: str
    kind: DeviceKind
    description: str
    name_pattern: Optional[str]
    peak_fp32_tflops: Optional[float]
    peak_fp16_tflops: Optional[float]
    memory_bandwidth_gbs: Optional[float]
    memory_gb: Optional[float]
    launch_overhead_us: float
    notes: str  # where the figures come from, and any assumption behind them

    @property
    def is_generic(self) -> bool:
        return self.name_pattern is None

    def matches(self, model_name: str) -> bool:
        """Whether a detected CPU model / GPU name is this device (generic entries match all)."""
        if self.name_pattern is None:
            return True
        return re.search(self.name_pattern, model_name, re.IGNORECASE) is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        return out


@dataclass(frozen=True)
class ResolvedDevice:
    """A registry entry bound to present hardware."""

    spec: DeviceSpec
    torch_device: str  # "cpu" or "cuda:N"
    matched_name: str  # the detected CPU model or GPU name
    gpu: Optional[GpuInfo] = None  # the matched GPU, for a CUDA device

    @property
    def kind(self) -> DeviceKind:
        return self.spec.kind


_GPU_LAUNCH_US = 5.0
_CPU_DISPATCH_US = 1.0

_TABLE: tuple[DeviceSpec, ...] = (
    DeviceSpec(
        name="cpu",
        kind=DeviceKind.CPU,
        description="Whatever CPU is present",
        name_pattern=None,
        peak_fp32_tflops=None,
        peak_fp16_tflops=None,
        memory_bandwidth_gbs=None,
        memory_gb=None,
        launch_overhead_us=_CPU_DISPATCH_US,
        notes="Generic entry: no spec-sheet figures; launch overhead is an assumed ~1 us per "
        "operator dispatch.",
    ),
    DeviceSpec(
        name="cuda",
        kind=DeviceKind.CUDA,
        description="Whatever CUDA GPU is present (the first one)",
        name_pattern=None,
        peak_fp32_tflops=None,
        peak_fp16_tflops=None,
        memory_bandwidth_gbs=None,
        memory_gb=None,
        launch_overhead_us=_GPU_LAUNCH_US,
        notes="Generic entry: no spec-sheet figures; launch overhead is an assumed ~5 us per "
        "kernel launch from PyTorch eager mode.",
    ),
    DeviceSpec(
        name="titanxp",
        kind=DeviceKind.CUDA,
        description="NVIDIA TITAN Xp",
        name_pattern=r"titan\s*xp",
        peak_fp32_tflops=12.15,
        peak_fp16_tflops=0.19,
        memory_bandwidth_gbs=547.7,
        memory_gb=12.0,
        launch_overhead_us=_GPU_LAUNCH_US,
        notes="Pascal GP102, 3840 CUDA cores at 1582 MHz boost (2 FLOP/FMA) = 12.15 TFLOPS FP32; "
        "FP16 at 1/64 rate (~0.19 TFLOPS); 12 GB GDDR5X, 384-bit at 11.4 Gbps = 547.7 GB/s "
        "(NVIDIA TITAN Xp spec sheet). The CAS paper's GPU.",
    ),
    DeviceSpec(
        name="gtx1070",
        kind=DeviceKind.CUDA,
        description="NVIDIA GeForce GTX 1070",
        name_pattern=r"gtx\s*1070(?!\s*ti)",
        peak_fp32_tflops=6.46,
        peak_fp16_tflops=0.10,
        memory_bandwidth_gbs=256.0,
        memory_gb=8.0,
        launch_overhead_us=_GPU_LAUNCH_US,
        notes="Pascal GP104, 1920 CUDA cores at 1683 MHz boost = 6.46 TFLOPS FP32; FP16 at 1/64 "
        "rate (~0.10 TFLOPS); 8 GB GDDR5, 256-bit at 8 Gbps = 256 GB/s (NVIDIA GeForce GTX 1070 "
        "spec sheet). Does not match the GTX 1070 Ti.",
    ),
    DeviceSpec(
        name="h100",
        kind=DeviceKind.CUDA,
        description="NVIDIA H100 SXM5 80GB",
        name_pattern=r"h100",
        peak_fp32_tflops=67.0,
        peak_fp16_tflops=989.5,
        memory_bandwidth_gbs=3350.0,
        memory_gb=80.0,
        launch_overhead_us=_GPU_LAUNCH_US,
        notes="NVIDIA H100 datasheet, SXM5 column: 67 TFLOPS FP32 (non-tensor), 989.5 TFLOPS FP16 "
        "tensor core dense (1979 with sparsity), 3.35 TB/s HBM3, 80 GB. The pattern also matches "
        "H100 PCIe/NVL, whose figures are lower.",
    ),
    DeviceSpec(
        name="h200",
        kind=DeviceKind.CUDA,
        description="NVIDIA H200 SXM 141GB",
        name_pattern=r"h200",
        peak_fp32_tflops=67.0,
        peak_fp16_tflops=989.5,
        memory_bandwidth_gbs=4800.0,
        memory_gb=141.0,
        launch_overhead_us=_GPU_LAUNCH_US,
        notes="NVIDIA H200 datasheet, SXM column: 67 TFLOPS FP32, 989.5 TFLOPS FP16 tensor core "
        "dense (1979 with sparsity), 4.8 TB/s HBM3e, 141 GB. The pattern also matches H200 NVL, "
        "whose figures are lower.",
    ),
    DeviceSpec(
        name="i7-8700",
        kind=DeviceKind.CPU,
        description="Intel Core i7-8700 (6 cores, 12 threads, AVX2)",
        name_pattern=r"i7-8700\b",
        peak_fp32_tflops=0.826,
        peak_fp16_tflops=None,
        memory_bandwidth_gbs=41.6,
        memory_gb=None,
        launch_overhead_us=_CPU_DISPATCH_US,
        notes="Intel ARK: 6 cores, 3.2 GHz base, 4.6 GHz single-core turbo, dual-channel "
        "DDR4-2666, 41.6 GB/s max memory bandwidth. Assumed FP32 peak: 6 cores x 32 FLOP/cycle "
        "(2 AVX2 FMA units x 8 lanes x 2) x 4.3 GHz all-core turbo = 0.826 TFLOPS (4.6 GHz on all "
        "cores would give 0.883, which is not attainable; AVX2 clock offsets may lower it "
        "further). No native FP16 arithmetic. The CAS paper's CPU.",
    ),
)

DEVICES: dict[str, DeviceSpec] = {spec.name: spec for spec in _TABLE}


def list_devices() -> list[DeviceSpec]:
    """All registry entries, in table order."""
    return list(DEVICES.values())


def get_device(name: str) -> DeviceSpec:
    """The registry entry called ``name`` (case-insensitive); UserInputError if there is none."""
    key = str(name).strip().lower()
    spec = DEVICES.get(key)
    if spec is None:
        raise UserInputError(f"Unknown device '{name}'; known devices: {', '.join(DEVICES)}.")
    return spec


def _match(spec: DeviceSpec, hw: HardwareFingerprint) -> Optional[ResolvedDevice]:
    if spec.kind is DeviceKind.CPU:
        if spec.matches(hw.cpu.model):
            return ResolvedDevice(spec=spec, torch_device="cpu", matched_name=hw.cpu.model)
        return None
    for gpu in sorted(hw.gpus, key=lambda g: g.index):
        if spec.matches(gpu.name):
            return ResolvedDevice(
                spec=spec, torch_device=f"cuda:{gpu.index}", matched_name=gpu.name, gpu=gpu
            )
    return None


def devices_present(hw: HardwareFingerprint) -> list[DeviceSpec]:
    """Registry entries that resolve on ``hw``: named matches first, then the generic ones."""
    present = [spec for spec in _TABLE if _match(spec, hw) is not None]
    return [s for s in present if not s.is_generic] + [s for s in present if s.is_generic]


def _alternatives(spec: DeviceSpec, hw: HardwareFingerprint) -> str:
    present = devices_present(hw)
    same_kind = [s for s in present if s.kind is spec.kind]
    choices = same_kind or present
    opts = [f"--device {s.name}" for s in choices]
    if len(opts) == 1:
        return opts[0]
    return ", ".join(opts[:-1]) + " or " + opts[-1]


def resolve_device(name: str, hw: HardwareFingerprint) -> ResolvedDevice:
    """Bind registry entry ``name`` to the hardware described by ``hw``.

    ``cpu`` is always the present CPU; ``cuda`` is the first CUDA GPU. A named device must match
    the present CPU model or a present GPU name. Absence raises BackendUnavailableError (a
    UserInputError, exit 2) with one sentence naming what was found and what to use instead.
    """
    spec = get_device(name)
    resolved = _match(spec, hw)
    if resolved is not None:
        return resolved
    if spec.is_generic:  # only "cuda" can fail
        raise BackendUnavailableError(
            f"No CUDA GPU is present (this machine has only CPU '{hw.cpu.model}'); use --device cpu."
        )
    raise BackendUnavailableError(
        f"Device '{spec.name}' ({spec.description}) is not present: this machine has "
        f"{hw.describe()}; use {_alternatives(spec, hw)}."
    )


def torch_device(name: str) -> "torch.device":
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device; refuses CUDA where no GPU is present."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"Unknown device {name!r}; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"The device {name!r} was asked for but no CUDA GPU is available.")
    return device
