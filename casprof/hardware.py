"""What hardware and software is actually present (read-only detection).

Detection never changes anything: no clock locking, no power limits, no mode changes. NVML
(``import pynvml`` from the ``nvidia-ml-py`` package) is used only when it can be imported; without
it every NVML-derived field is ``None``. Nothing is detected at import time; ``torch`` itself is
imported lazily inside the functions.

``detect_hardware()`` caches the slow, static part (CPU, GPUs, software versions) with
``functools.lru_cache``; the thread settings (``torch_threads``, ``env_threads``) are read afresh
on every call because measurement code changes them after detection.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import platform
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from casprof.errors import UserInputError

__all__ = [
    "CpuInfo",
    "GpuInfo",
    "SoftwareInfo",
    "HardwareFingerprint",
    "detect_hardware",
    "describe_recorded",
    "same_recorded_hardware",
    "sample_gpu_state",
    "decode_clocks_event_reasons",
    "parse_cpu_model",
    "parse_cpu_signature",
    "parse_vector_isa",
]

_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# NVML clocks-event (formerly "throttle") reason bits; stable across NVML versions.
_CLOCKS_EVENT_BITS: tuple[tuple[int, str], ...] = (
    (0x0000000000000001, "gpu_idle"),
    (0x0000000000000002, "applications_clocks_setting"),
    (0x0000000000000004, "sw_power_cap"),
    (0x0000000000000008, "hw_slowdown"),
    (0x0000000000000010, "sync_boost"),
    (0x0000000000000020, "sw_thermal_slowdown"),
    (0x0000000000000040, "hw_thermal_slowdown"),
    (0x0000000000000080, "hw_power_brake_slowdown"),
    (0x0000000000000100, "display_clock_setting"),
)


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    """The host CPU as found (``model`` is the brand string, e.g. ``Intel(R) Core(TM) i7-8700``)."""

    model: str
    arch: str
    logical_cores: Optional[int]
    affinity: Optional[int] = None  # CPUs this process may run on (sched_getaffinity)
    governor: Optional[str] = None  # cpufreq scaling governor of cpu0, if readable
    max_mhz: Optional[float] = None  # cpuinfo_max_freq of cpu0, if readable
    capability: Optional[str] = None  # torch's CPU kernel capability, e.g. "AVX2", "AVX512"
    host_memory_bytes: Optional[int] = None
    # Which silicon it is where ``model`` does not say (a hypervisor may show every generation of a
    # vendor's server CPUs as "AMD EPYC"): x86 "AuthenticAMD family 25 model 1", ARM "implementer
    # 0x41 part 0xd0c"; and the widest vector extension its flags list ("AVX512", "AVX2", "SVE", ...).
    signature: Optional[str] = None
    vector_isa: Optional[str] = None

    @property
    def signed(self) -> bool:
        """Whether the CPU's signature or vector extension is known (fingerprints recorded before
        27 Nov 2026 have neither)."""
        return self.signature is not None or self.vector_isa is not None


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA GPU as seen by torch (``index`` is the torch CUDA index) plus NVML readings."""

    name: str
    index: int
    uuid: Optional[str] = None
    compute_capability: Optional[str] = None  # "9.0"
    total_memory_bytes: Optional[int] = None
    multiprocessor_count: Optional[int] = None
    driver: Optional[str] = None  # NVIDIA driver version (NVML)
    cuda_runtime: Optional[str] = None  # torch.version.cuda
    cudnn: Optional[int] = None  # torch.backends.cudnn.version()
    # NVML readings at detection time (None where NVML is absent or the query is unsupported).
    sm_clock_mhz: Optional[int] = None
    mem_clock_mhz: Optional[int] = None
    max_sm_clock_mhz: Optional[int] = None
    power_limit_w: Optional[float] = None
    temperature_c: Optional[int] = None
    clocks_event_reasons: Optional[tuple[str, ...]] = None
    mig_mode: Optional[bool] = None
    persistence_mode: Optional[bool] = None
    ecc_enabled: Optional[bool] = None


@dataclass(frozen=True)
class SoftwareInfo:
    """Versions of the software stack; ``None`` means not installed."""

    python: str
    os: str
    torch: str
    numpy: Optional[str] = None
    onnx: Optional[str] = None
    onnxruntime: Optional[str] = None
    tensorrt: Optional[str] = None
    fvcore: Optional[str] = None


@dataclass(frozen=True)
class HardwareFingerprint:
    """Everything a profile records about where it was made. The hostname is never recorded.

    ``env_threads`` must not be mutated (it is excluded from hashing).
    """

    cpu: CpuInfo
    gpus: tuple[GpuInfo, ...] = ()
    software: Optional[SoftwareInfo] = None
    torch_threads: Optional[int] = None
    env_threads: dict[str, str] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        out = asdict(self)
        out["gpus"] = [
            {**g, "clocks_event_reasons": _list_or_none(g["clocks_event_reasons"])}
            for g in out["gpus"]
        ]
        out["env_threads"] = dict(self.env_threads)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HardwareFingerprint":
        """Inverse of ``to_dict``; unknown keys are ignored, a malformed block is a UserInputError."""
        if not isinstance(data, Mapping):
            raise UserInputError("The hardware block of the file is not a JSON object.")
        cpu = _build(CpuInfo, data.get("cpu"), "hardware.cpu")
        gpus_raw = data.get("gpus") or []
        if not isinstance(gpus_raw, (list, tuple)):
            raise UserInputError("The hardware.gpus entry of the file is not a list.")
        gpus = []
        for i, g in enumerate(gpus_raw):
            gpu = _build(GpuInfo, g, f"hardware.gpus[{i}]")
            if gpu.clocks_event_reasons is not None:
                gpu = replace(gpu, clocks_event_reasons=tuple(gpu.clocks_event_reasons))
            gpus.append(gpu)
        sw_raw = data.get("software")
        software = None if sw_raw is None else _build(SoftwareInfo, sw_raw, "hardware.software")
        env = data.get("env_threads") or {}
        if not isinstance(env, Mapping):
            raise UserInputError("The hardware.env_threads entry of the file is not an object.")
        return cls(
            cpu=cpu,
            gpus=tuple(gpus),
            software=software,
            torch_threads=data.get("torch_threads"),
            env_threads={str(k): str(v) for k, v in env.items()},
        )

    def identity(self, legacy: bool = False) -> dict[str, Any]:
        """The stable identity fields the digest is computed over: the CPU's model, architecture,
        core count, signature and vector extension (the last two only where known), the GPUs'
        names, compute capabilities and UUIDs. ``legacy``: without the signature and vector
        extension, as fingerprints were computed before they were recorded."""
        cpu: dict[str, Any] = {
            "model": self.cpu.model,
            "arch": self.cpu.arch,
            "logical_cores": self.cpu.logical_cores,
        }
        if not legacy:
            cpu.update({k: v for k, v in (("signature", self.cpu.signature), ("vector_isa", self.cpu.vector_isa))
                        if v is not None})
        return {
            "cpu": cpu,
            "gpus": [
                {"name": g.name, "compute_capability": g.compute_capability, "uuid": g.uuid}
                for g in self.gpus
            ],
        }

    def digest(self, legacy: bool = False) -> str:
        """16 hex chars of sha256 over the identity (no clocks, temperatures or versions).

        Two fingerprints of the same machine share it, provided both were detected with the same
        ``include_gpu`` setting. A fingerprint recorded without the CPU's signature and vector
        extension (older profiles) has the same digest as ``digest(legacy=True)`` of a new one.
        """
        blob = json.dumps(self.identity(legacy), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def same_machine(self, other: "HardwareFingerprint") -> bool:
        """Whether ``other`` (detected or recorded) names the same machine as this fingerprint.

        Equal digests where both know the CPU's signature or vector extension. Where either was
        recorded before those were (older profiles), equal older identities (model, arch, cores,
        GPUs) and torch CPU kernel capabilities that agree where both are known: the brand string
        alone ("AMD EPYC") does not tell an AVX-512 generation from an AVX2 one.
        """
        if self.cpu.signed and other.cpu.signed:
            return self.digest() == other.digest()
        if self.digest(legacy=True) != other.digest(legacy=True):
            return False
        mine, theirs = self.cpu.capability, other.cpu.capability
        return mine is None or theirs is None or str(mine) == str(theirs)

    def recorded_here(self, block: Mapping[str, Any]) -> bool:
        """Whether a recorded hardware block (a profile's ``hardware``, with its ``digest``) names
        this machine (:meth:`same_machine`); a block without a digest or a CPU never does."""
        recorded = _recorded_fingerprint(block) if isinstance(block, Mapping) and block.get("digest") else None
        return recorded is not None and self.same_machine(recorded)

    def describe(self) -> str:
        """A short human description, e.g. ``CPU 'AMD EPYC' (AuthenticAMD family 25 model 1, AVX2)
        and no CUDA GPU``; without a signature and vector extension, torch's kernel capability."""
        details = [d for d in (self.cpu.signature, self.cpu.vector_isa) if d]
        if not details and self.cpu.capability:
            details = [f"{self.cpu.capability} kernels"]
        cpu = f"CPU '{self.cpu.model}'" + (f" ({', '.join(details)})" if details else "")
        if not self.gpus:
            return f"{cpu} and no CUDA GPU"
        names = ", ".join(f"'{g.name}'" for g in self.gpus)
        plural = "GPU" if len(self.gpus) == 1 else "GPUs"
        return f"{cpu} and CUDA {plural} {names}"


def _recorded_fingerprint(block: Mapping[str, Any]) -> Optional[HardwareFingerprint]:
    """The fingerprint a recorded hardware block holds, or None where it names no (well-formed) CPU."""
    if not isinstance(block, Mapping) or not isinstance(block.get("cpu"), Mapping):
        return None
    try:
        return HardwareFingerprint.from_dict(block)
    except UserInputError:
        return None


def same_recorded_hardware(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two recorded hardware blocks name the same machine (:meth:`HardwareFingerprint.same_machine`);
    blocks that name no CPU (estimates) compare their digests."""
    fa, fb = _recorded_fingerprint(a), _recorded_fingerprint(b)
    if fa is not None and fb is not None:
        return fa.same_machine(fb)
    return a.get("digest") == b.get("digest")


def describe_recorded(block: Mapping[str, Any]) -> str:
    """:meth:`HardwareFingerprint.describe` of a recorded hardware block (a profile's), or
    ``unknown hardware`` where the block names no CPU."""
    recorded = _recorded_fingerprint(block)
    return "unknown hardware" if recorded is None else recorded.describe()


def _list_or_none(value: Any) -> Optional[list]:
    return None if value is None else list(value)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise UserInputError(f"The {where} entry of the file is missing or not a JSON object.")
    names = {f.name for f in fields(cls)}
    first = fields(cls)[0].name  # model / name / python: must be a non-empty string
    if not isinstance(data.get(first), str) or not data.get(first):
        raise UserInputError(f"The {where} entry of the file has no valid '{first}' string.")
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError:
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [n for n in required if n not in data]
        raise UserInputError(
            f"The {where} entry of the file lacks the field(s) {', '.join(missing) or '?'}."
        ) from None


# --------------------------------------------------------------------------------------------
# CPU
# --------------------------------------------------------------------------------------------


def _read_text(path: str | Path) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def parse_cpu_model(cpuinfo_text: str) -> Optional[str]:
    """The first ``model name`` (x86) or ``Model``/``Hardware`` (ARM) value of /proc/cpuinfo text."""
    wanted = ("model name", "model", "hardware", "cpu model")
    found = _first_values(cpuinfo_text, wanted)
    for key in wanted:
        # x86 "model" is a bare number; only accept it when it is not.
        if key in found and not (key == "model" and found[key].isdigit()):
            return found[key]
    return None


def _first_values(cpuinfo_text: str, keys: tuple[str, ...]) -> dict[str, str]:
    """The first non-empty value of each of ``keys`` (lower case) in /proc/cpuinfo text (the first
    processor's, on x86)."""
    found: dict[str, str] = {}
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        value = " ".join(value.split())
        if sep and value and key in keys and key not in found:
            found[key] = value
    return found


def parse_cpu_signature(cpuinfo_text: str) -> Optional[str]:
    """Which silicon the CPU is, from /proc/cpuinfo text: x86 ``<vendor_id> family F model M``,
    ARM ``implementer I part P`` (variant and revision left out, like x86's stepping); None if
    neither is there."""
    v = _first_values(cpuinfo_text, ("vendor_id", "cpu family", "model", "cpu implementer", "cpu part"))
    if v.get("vendor_id") and v.get("cpu family") and v.get("model", "").isdigit():
        return f"{v['vendor_id']} family {v['cpu family']} model {v['model']}"
    if v.get("cpu implementer") and v.get("cpu part"):
        return f"implementer {v['cpu implementer']} part {v['cpu part']}"
    return None


# Widest first; the first extension a CPU's flags list names it.
_VECTOR_ISAS: tuple[tuple[str, str], ...] = (
    ("avx512f", "AVX512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),
    ("sve2", "SVE2"), ("sve", "SVE"), ("asimd", "NEON"),
)


def parse_vector_isa(cpuinfo_text: str) -> Optional[str]:
    """The widest vector extension in the first ``flags`` (x86) or ``Features`` (ARM) line."""
    v = _first_values(cpuinfo_text, ("flags", "features"))
    flags = set((v.get("flags") or v.get("features") or "").split())
    return next((name for flag, name in _VECTOR_ISAS if flag in flags), None)


def _detect_cpu() -> CpuInfo:
    text = _read_text("/proc/cpuinfo")
    model = parse_cpu_model(text) if text else None
    if not model:
        model = platform.processor() or platform.machine() or "unknown CPU"
    affinity: Optional[int] = None
    if hasattr(os, "sched_getaffinity"):
        try:
            affinity = len(os.sched_getaffinity(0))
        except OSError:
            affinity = None
    cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    governor = _read_text(cpufreq / "scaling_governor") or None
    max_khz = _read_text(cpufreq / "cpuinfo_max_freq")
    max_mhz = None
    if max_khz and max_khz.isdigit():
        max_mhz = int(max_khz) / 1000.0
    capability = None
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # pragma: no cover - very old torch
        capability = None
    memory = None
    try:
        memory = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        memory = None
    return CpuInfo(
        model=model,
        arch=platform.machine(),
        logical_cores=os.cpu_count(),
        affinity=affinity,
        governor=governor,
        max_mhz=max_mhz,
        capability=capability,
        host_memory_bytes=memory,
        signature=parse_cpu_signature(text) if text else None,
        vector_isa=parse_vector_isa(text) if text else None,
    )


# --------------------------------------------------------------------------------------------
# NVML (optional, read-only)
# --------------------------------------------------------------------------------------------

_nvml_state: dict[str, Any] = {"tried": False, "module": None}


def _nvml() -> Any:
    """The initialised ``pynvml`` module, or None when it is not installed or fails to start."""
    if _nvml_state["tried"]:
        return _nvml_state["module"]
    _nvml_state["tried"] = True
    if importlib.util.find_spec("pynvml") is None:
        return None
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
    except Exception:
        return None
    _nvml_state["module"] = pynvml
    return pynvml


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def decode_clocks_event_reasons(mask: Optional[int]) -> Optional[tuple[str, ...]]:
    """NVML clocks-event bitmask -> names (``()`` means none active; unknown bits kept as hex)."""
    if mask is None:
        return None
    mask = int(mask)
    names = [name for bit, name in _CLOCKS_EVENT_BITS if mask & bit]
    known = 0
    for bit, _ in _CLOCKS_EVENT_BITS:
        known |= bit
    rest = mask & ~known
    if rest:
        names.append(f"unknown_{rest:#x}")
    return tuple(names)


def _nvml_handle(nvml: Any, index: int, uuid: Optional[str]) -> Any:
    """NVML handle for torch GPU ``index``: by UUID when known (robust to CUDA_VISIBLE_DEVICES)."""
    if uuid:
        candidates = [uuid] if uuid.startswith(("GPU-", "MIG-")) else [f"GPU-{uuid}", uuid]
        for cand in candidates:
            handle = _try(lambda c=cand: nvml.nvmlDeviceGetHandleByUUID(c))
            if handle is not None:
                return handle
        return None  # a UUID that NVML does not know: do not guess by index
    return _try(lambda: nvml.nvmlDeviceGetHandleByIndex(index))


def _nvml_temperature(nvml: Any, handle: Any) -> Optional[int]:
    sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
    for name in ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"):
        fn = getattr(nvml, name, None)
        if fn is None:
            continue
        value = _try(lambda f=fn: f(handle, sensor))
        if value is None:
            continue
        value = getattr(value, "temperature", value)
        try:
            return int(value)
        except (TypeError, ValueError):
            continue
    return None


def _nvml_reasons(nvml: Any, handle: Any) -> Optional[tuple[str, ...]]:
    for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        fn = getattr(nvml, name, None)
        if fn is not None:
            mask = _try(lambda f=fn: f(handle))
            if mask is not None:
                return decode_clocks_event_reasons(mask)
    return None


def _nvml_clock(nvml: Any, handle: Any, fn_name: str, clock_name: str, default: int) -> Optional[int]:
    fn = getattr(nvml, fn_name, None)
    if fn is None:
        return None
    value = _try(lambda: fn(handle, getattr(nvml, clock_name, default)))
    return None if value is None else int(value)


def read_nvml_state(nvml: Any, handle: Any) -> dict[str, Any]:
    """Current clocks, temperature, power and clocks-event reasons of one NVML handle.

    ``nvml`` is the ``pynvml`` module (or any object with the same functions, e.g. a test fake);
    each unsupported query gives ``None``. Reads only.
    """
    power_mw = _try(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    limit_mw = _try(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    if limit_mw is None:
        limit_mw = _try(lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle))
    pstate = _try(lambda: nvml.nvmlDeviceGetPerformanceState(handle))
    reasons = _nvml_reasons(nvml, handle)
    return {
        "sm_clock_mhz": _nvml_clock(nvml, handle, "nvmlDeviceGetClockInfo", "NVML_CLOCK_SM", 1),
        "mem_clock_mhz": _nvml_clock(nvml, handle, "nvmlDeviceGetClockInfo", "NVML_CLOCK_MEM", 2),
        "temperature_c": _nvml_temperature(nvml, handle),
        "power_w": None if power_mw is None else float(power_mw) / 1000.0,
        "power_limit_w": None if limit_mw is None else float(limit_mw) / 1000.0,
        "performance_state": None if pstate is None else int(pstate),
        "clocks_event_reasons": None if reasons is None else list(reasons),
    }


def _nvml_static(nvml: Any, handle: Any) -> dict[str, Any]:
    mig = _try(lambda: nvml.nvmlDeviceGetMigMode(handle))
    if isinstance(mig, (list, tuple)):
        mig = mig[0] if mig else None
    persistence = _try(lambda: nvml.nvmlDeviceGetPersistenceMode(handle))
    ecc = _try(lambda: nvml.nvmlDeviceGetEccMode(handle))
    if isinstance(ecc, (list, tuple)):
        ecc = ecc[0] if ecc else None
    return {
        "uuid": _text(_try(lambda: nvml.nvmlDeviceGetUUID(handle))),
        "max_sm_clock_mhz": _nvml_clock(nvml, handle, "nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_SM", 1),
        "mig_mode": None if mig is None else bool(mig),
        "persistence_mode": None if persistence is None else bool(persistence),
        "ecc_enabled": None if ecc is None else bool(ecc),
    }


# --------------------------------------------------------------------------------------------
# GPUs
# --------------------------------------------------------------------------------------------


def _torch_uuid(props: Any) -> Optional[str]:
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text or None


def _detect_gpus() -> tuple[GpuInfo, ...]:
    import torch

    try:
        if not torch.cuda.is_available():
            return ()
        count = torch.cuda.device_count()
    except Exception:
        return ()
    cuda_runtime = torch.version.cuda
    cudnn = _try(lambda: torch.backends.cudnn.version())
    nvml = _nvml()
    driver = None
    if nvml is not None:
        driver = _text(_try(lambda: nvml.nvmlSystemGetDriverVersion()))
    gpus = []
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        uuid = _torch_uuid(props)
        extra: dict[str, Any] = {}
        if nvml is not None:
            handle = _nvml_handle(nvml, i, uuid)
            if handle is not None:
                static = _nvml_static(nvml, handle)
                state = read_nvml_state(nvml, handle)
                nvml_uuid = static.pop("uuid")
                if nvml_uuid:
                    uuid = nvml_uuid  # canonical "GPU-..." form
                reasons = state["clocks_event_reasons"]
                extra = {
                    **static,
                    "sm_clock_mhz": state["sm_clock_mhz"],
                    "mem_clock_mhz": state["mem_clock_mhz"],
                    "power_limit_w": state["power_limit_w"],
                    "temperature_c": state["temperature_c"],
                    "clocks_event_reasons": None if reasons is None else tuple(reasons),
                }
        if uuid and not uuid.startswith(("GPU-", "MIG-")):
            uuid = f"GPU-{uuid}"
        gpus.append(
            GpuInfo(
                name=str(props.name),
                index=i,
                uuid=uuid,
                compute_capability=f"{props.major}.{props.minor}",
                total_memory_bytes=int(props.total_memory),
                multiprocessor_count=getattr(props, "multi_processor_count", None),
                driver=driver,
                cuda_runtime=cuda_runtime,
                cudnn=cudnn,
                **extra,
            )
        )
    return tuple(gpus)


def sample_gpu_state(index: int) -> Optional[dict[str, Any]]:
    """Current clocks/temperature/power/clocks-event reasons of torch CUDA GPU ``index``.

    For recording before and after a measurement run. ``None`` when there is no such GPU or NVML
    is not available. Reads only; changes nothing.
    """
    try:
        import torch

        if not torch.cuda.is_available() or not 0 <= index < torch.cuda.device_count():
            return None
        uuid = _torch_uuid(torch.cuda.get_device_properties(index))
    except Exception:
        return None
    nvml = _nvml()
    if nvml is None:
        return None
    handle = _nvml_handle(nvml, index, uuid)
    if handle is None:
        return None
    state = read_nvml_state(nvml, handle)
    state["index"] = index
    state["time_unix_s"] = time.time()
    return state


# --------------------------------------------------------------------------------------------
# Software
# --------------------------------------------------------------------------------------------


def _dist_version(module: str, dists: tuple[str, ...]) -> Optional[str]:
    """Version of an installed module without importing it (falls back to ``__version__``)."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    mod = _try(lambda: __import__(module))
    version = getattr(mod, "__version__", None)
    return None if version is None else str(version)


def _detect_software() -> SoftwareInfo:
    import numpy
    import torch

    tensorrt = None
    if _try(lambda: importlib.util.find_spec("tensorrt")) is not None:
        trt = _try(lambda: __import__("tensorrt"))  # lazy: only when installed
        version = getattr(trt, "__version__", None)
        tensorrt = None if version is None else str(version)
    return SoftwareInfo(
        python=platform.python_version(),
        os=platform.platform(),
        torch=str(torch.__version__),
        numpy=str(numpy.__version__),
        onnx=_dist_version("onnx", ("onnx",)),
        onnxruntime=_dist_version(
            "onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")
        ),
        tensorrt=tensorrt,
        fvcore=_dist_version("fvcore", ("fvcore",)),
    )


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _detect_static(include_gpu: bool) -> tuple[CpuInfo, tuple[GpuInfo, ...], SoftwareInfo]:
    return _detect_cpu(), (_detect_gpus() if include_gpu else ()), _detect_software()


def _thread_settings() -> tuple[Optional[int], dict[str, str]]:
    import torch

    env = {k: os.environ[k] for k in _THREAD_ENV_VARS if k in os.environ}
    return int(torch.get_num_threads()), env


def detect_hardware(include_gpu: bool = True) -> HardwareFingerprint:
    """Detect the CPU, CUDA GPUs (torch + optional NVML) and software versions.

    The static part is cached per process (``detect_hardware.cache_clear()`` empties it); the
    thread settings are read at each call.
    """
    cpu, gpus, software = _detect_static(bool(include_gpu))
    torch_threads, env = _thread_settings()
    return HardwareFingerprint(
        cpu=cpu, gpus=gpus, software=software, torch_threads=torch_threads, env_threads=env
    )


detect_hardware.cache_clear = _detect_static.cache_clear  # type: ignore[attr-defined]

