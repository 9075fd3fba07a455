"""Options shared by several commands, as ``Annotated`` aliases (defined once, used everywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from casprof.backends.base import Backend, Precision
from casprof.backends.cpu_memory import CpuAllocator
from casprof.backends.memory_format import MemoryFormat
from casprof.sweeps import NETWORK_SWEEPS

ProfileArg = Annotated[Path, typer.Argument(help="A cost profile (JSON).", show_default=False)]
ProfileOpt = Annotated[Path, typer.Option("--profile", "-p", help="A cost profile (JSON).", show_default=False)]
GenotypeOpt = Annotated[Path, typer.Option("--genotype", "-g", help="A genotype file (JSON).", show_default=False)]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", "-d", help="Device registry name (see `casprof devices`); cpu and cuda mean what is here."),
]
BackendOpt = Annotated[Backend, typer.Option("--backend", "-b", help="Backend that times the networks.")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="Numeric precision (fp16 needs a GPU backend).")]
ResolutionOpt = Annotated[str, typer.Option("--resolution", "-r", help="Input size HxW, divisible by the network stride.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (written atomically).", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NetworkOpt = Annotated[
    Optional[Path],
    typer.Option("--network", help="A network configuration JSON (default: the built-in CAS network).", show_default=False),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
CpuAllocatorOpt = Annotated[
    CpuAllocator,
    typer.Option(
        "--cpu-allocator",
        help="torch on a CPU: leave the C library's own handling of freed memory (system), or keep freed memory for reuse, as jemalloc or tcmalloc would (keep: no page faults after the first run).",
    ),
]
MemoryFormatOpt = Annotated[
    MemoryFormat,
    typer.Option(
        "--memory-format",
        help="torch: the networks' weights and input in PyTorch's default NCHW layout (contiguous) or in channels_last "
             "(NHWC; on a CPU it spares oneDNN reordering every convolution's activations). A profile predicts only its own layout.",
    ),
]
#: ``casprof fidelity`` and ``casprof calibrate`` time derived networks the same way.
NetworkRoundsOpt = Annotated[int, typer.Option("--rounds", help="Timed runs per network, alternating between 2 instances (even).")]
NetworkSweepsOpt = Annotated[
    Optional[int],
    typer.Option("--sweeps", show_default=False,
                 help="Passes over all blocks of networks that share the rounds (new instances in each); "
                      f"default {NETWORK_SWEEPS}, fewer where a pass would get under 2 rounds.")
]
#: ``casprof measure``, ``fidelity`` and ``calibrate``: ONNX exports and counts made before (never timings).
BuildCacheOpt = Annotated[
    bool,
    typer.Option(
        "--build-cache/--no-build-cache",
        help="Reuse the ONNX exports and parameter/MAC counts made before for identical networks (verified copies; "
             "never timings). Folder: $CASPROF_CACHE_DIR, else ~/.cache/casprof; CASPROF_CACHE_DIR=off disables it.",
    ),
]
#: ``casprof measure``, ``fidelity`` and ``calibrate``: processes that build the networks before the timing.
BuildWorkersOpt = Annotated[
    Optional[int],
    typer.Option(
        "--build-workers",
        help="Processes that count and export the networks side by side before anything is timed (default: one per "
             "thread; 1: one network after the other in this process); what the build cache holds is not made again.",
        show_default=False,
    ),
]
#: ``casprof measure``, ``fidelity`` and ``calibrate``: continue an interrupted run from its checkpoint.
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted run of the same command and arguments from its checkpoint (measure: beside --out; "
             "fidelity and calibrate: beside the profile); what it finished is not timed again.",
    ),
]
