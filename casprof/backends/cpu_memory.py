"""How the C library's allocator treats freed memory while PyTorch runs on the CPU.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (at
most 32 MiB, raised dynamically) with a fresh ``mmap`` and returns them with ``munmap`` when
freed, and trims the top of its heap back to the kernel; the next forward pass then page-faults
every page of its large activations again. At 768x1536 that is nearly half the time of a CAS
network in eager PyTorch (measured on the 2-core CI machine, the all-identity network, 20
forwards: 571-616 ms median with about 220,000 minor page faults per forward under glibc's
defaults, 328-345 ms with none once freed memory is kept), and it is noisy (the per-run
standard deviation fell from 38-43 ms to 12-30 ms). ONNX Runtime keeps its own arena, and its
page faults per run were 0 either way, so only the torch runner sets this.

Two settings, recorded in every profile and report that the torch runner on a CPU makes:

``system`` (the default)
    the C library's own behaviour, untouched: what a plain PyTorch deployment gets, so a profile
    predicts it (profiles made before this setting existed were measured so; their missing
    setting reads as ``system``).
``keep``
    glibc is told, once per process, to serve every block from its heap and never trim it
    (``mallopt(M_MMAP_THRESHOLD, 1 GiB)`` and ``mallopt(M_TRIM_THRESHOLD, 2 GiB - 1)``): after
    the first forward pass the memory is reused and no page is faulted again. This is what
    PyTorch's CPU performance guide achieves with jemalloc or tcmalloc, without preloading
    another library, so a ``keep`` profile predicts a deployment that does one of these. It
    needs glibc; elsewhere the runner stops and says so.

Once a process keeps freed memory it cannot go back, so asking for ``system`` after ``keep``
stops with a message.
"""

from __future__ import annotations

import ctypes
import enum
import os
import platform
import threading
from typing import Any

from casprof.errors import BackendUnavailableError, parse_choice

#: glibc's ``mallopt`` parameter numbers (``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: The refusal of ``keep`` for anything but the torch runner on a CPU (nothing else would apply it).
KEEP_ONLY_TORCH_ON_CPU = "--cpu-allocator keep applies to the torch backend on a CPU only (ONNX Runtime keeps its own arena)."

#: The values ``keep`` sets.
KEEP_MMAP_THRESHOLD = 1 << 30
KEEP_TRIM_THRESHOLD = (1 << 31) - 1


class CpuAllocator(str, enum.Enum):
    """What happens to memory that PyTorch frees on the CPU (see the module docstring)."""

    KEEP = "keep"
    SYSTEM = "system"

    @property
    def file_tag(self) -> str:
        """What the setting adds to a profile's or report's file name: ``-keep``, or nothing for
        the default (so names made before the setting existed stay as they were)."""
        return "-keep" if self is CpuAllocator.KEEP else ""


def parse_cpu_allocator(value: CpuAllocator | str) -> CpuAllocator:
    """A :class:`CpuAllocator` from itself or its name; anything else is a user error."""
    return parse_choice(CpuAllocator, value, "CPU allocator setting")


_lock = threading.Lock()
_kept: dict[str, Any] | None = None  # what ``keep`` set, once both mallopt calls succeeded
_changed = False  # a mallopt call of ``keep`` succeeded (true whenever ``_kept`` is set)


def _glibc_version() -> str | None:
    name, version = platform.libc_ver()
    return version if name == "glibc" and version else None


def _mallopt(libc: Any, param: int, value: int) -> bool:
    return bool(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)))


def _keep() -> dict[str, Any]:
    global _kept, _changed
    with _lock:
        if _kept is not None:
            return _kept
        version = _glibc_version()
        if version is None:
            raise BackendUnavailableError(
                "Keeping freed CPU memory needs glibc's mallopt, which this system does not have; "
                "pass --cpu-allocator system to measure with the C library's own behaviour."
            )
        libc = ctypes.CDLL(None)
        _changed = _mallopt(libc, M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)
        if not (_changed and _mallopt(libc, M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)):
            raise BackendUnavailableError(
                f"glibc {version} refused the mallopt settings that keep freed CPU memory; "
                "pass --cpu-allocator system to measure with the C library's own behaviour."
            )
        _kept = {
            "cpu_allocator": CpuAllocator.KEEP.value,
            "malloc": f"glibc {version}",
            "mallopt": {"M_MMAP_THRESHOLD": KEEP_MMAP_THRESHOLD, "M_TRIM_THRESHOLD": KEEP_TRIM_THRESHOLD},
        }
        return _kept


def apply_cpu_allocator(mode: CpuAllocator | str) -> dict[str, Any]:
    """Put the process in ``mode`` (idempotent) and return what is in effect, for runner info.

    Raises:
        BackendUnavailableError: ``keep`` without glibc or refused by it; ``system`` in a
            process that already keeps freed memory.
    """
    mode = parse_cpu_allocator(mode)
    if mode is CpuAllocator.KEEP:
        return dict(_keep())
    if _changed:
        raise BackendUnavailableError(
            "This process already keeps freed CPU memory (an earlier torch runner asked for it), so the "
            "'system' allocator setting can only be measured in a new process."
        )
    return cpu_allocator_state()


def cpu_allocator_state() -> dict[str, Any]:
    """What is in effect in this process now (``keep`` once any runner asked for it)."""
    if _kept is not None:
        return dict(_kept)
    version = _glibc_version()
    state: dict[str, Any] = {"cpu_allocator": CpuAllocator.SYSTEM.value, "malloc": f"glibc {version}" if version else "not glibc"}
    if os.environ.get("LD_PRELOAD"):  # e.g. jemalloc or tcmalloc replacing malloc: say so
        state["ld_preload"] = os.environ["LD_PRELOAD"]
    return state
