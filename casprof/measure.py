"""The measurement protocol of DESIGN §3: probe networks timed in interleaved, paired rounds.

For each cell type (a *block*), the baseline network and every probe of that cell type are
prepared on the backend and warmed up (the edge-model probes of a schema-2 profile, see
:mod:`casprof.edge_model`, come after them in blocks of their own, ``normal-edges`` etc.). Then,
round after round, the probes run once each in a freshly shuffled order, ``probes_per_bracket``
at a time between two baseline runs: ``B p1 p2 B p3 p4 ... B`` by default, ``B p1 B p2 ... pn B``
with one. A probe's sample in a round is its time minus the mean of the two baseline runs of its
bracket, so drift of the machine (clocks, temperature, other load) cancels locally. The
baseline runs rotate through several instances of the baseline network (``baseline_instances``,
opened once per sweep for all its blocks), because every c_o of a block is paired with it and an
instance that happens to be fast or slow would shift them all. c_o is the median over rounds of these
paired differences, with a bootstrap interval; the raw samples are kept.

Every finished round is checkpointed; ``resume=True`` continues an interrupted run without
re-measuring finished blocks or rounds. Exact metrics (parameters, MACs) are counted once per
probe before any timing.
"""

from __future__ import annotations

import copy
import functools
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from casprof import __version__
from casprof._io import atomic_write_json, ensure_parent_exists, read_json_file
from casprof.backends import make_runner
from casprof.backends.base import Backend, Precision, Runner, RunnerSpec
from casprof.backends.cpu_memory import KEEP_ONLY_TORCH_ON_CPU, CpuAllocator, parse_cpu_allocator
from casprof.backends.memory_format import LAYOUT_ONLY_TORCH, MemoryFormat, parse_memory_format
from casprof.block_checkpoint import check_checkpoint_key
from casprof.build_cache import BuildCache
from casprof.complexity import count_macs, count_params
from casprof.config import NetworkConfig
from casprof.devices import ResolvedDevice
from casprof.errors import UserInputError
from casprof.hardware import HardwareFingerprint, sample_gpu_state
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.edge_model import CellEdgeModel, EdgeModel
from casprof.prebuild import ExportRequest, build_ahead, resolve_workers
from casprof.probes import (BASELINE, Probe, block_of, build_probe, edge_model_probes,
                             measurement_blocks, profile_probes)
from casprof.profile import BackendRecord, CostValue, Method, Metric, Profile
from casprof.stats import Measurement, paired_difference
from casprof.sweeps import sweep_rounds



@dataclass(frozen=True)
class MeasureSettings:
    """How a profile is measured; recorded in the profile's ``settings`` block.

    Args:
        backend: which runner times the networks.
        precision: fp32 or fp16 (fp16 needs a GPU backend).
        resolution: input ``(H, W)`` the costs are measured at.
        threads: CPU threads for the backend.
        rounds: measurement rounds per cell type (each round times every network once).
        warmup_iters: untimed forwards of each network before the first round.
        warmup_seconds: minimum untimed seconds per network before the first round.
        warmup_passes: untimed passes over every instance of a block, in a shuffled order,
            after the per-instance warm-up and before the first round (see
            :func:`warm_interleaved`).
        seed: seed of the input and of the shuffled order of each round.
        exporter: ONNX exporter for the onnxruntime and tensorrt backends.
        instances: independent instances of every probe open at once (ONNX Runtime sessions or
            TensorRT contexts on the same exported file, copies of the PyTorch module); round r
            uses instance ``r % instances``, so an instance that happens to be fast or slow
            (memory placement, thread start-up) is averaged out of c_o. Every sweep opens new
            ones, so a probe runs in ``instances * sweeps`` instances in all; the default 1 with
            2 sweeps gives two, at a little over half the preparation of 2 per sweep (measured:
            the medians of a probe's two instances within one profile differed less than their
            noise predicts, so instances matter less than when the rounds run).
        baseline_instances: instances of the all-identity network. Every c_o of a block is
            paired with it, so an instance offset of the baseline shifts them all alike (measured
            at 768x1536 with ONNX Runtime: two baseline sessions 3-10 ms apart, moving every c_o
            of a block by that much between two profiles). The brackets therefore rotate through
            these instances run by run (bracket k of round r uses instance
            ``(r * (probes + 1) + k) % baseline_instances``), averaging the offset away.
        ort_shared_pool: ONNX Runtime only: every session on one process-wide intra-op pool
            (spinning) instead of a pool per session with spinning off (see
            :mod:`casprof.backends.onnxruntime_runner`). Off by default: once that pool exists,
            ONNX Runtime refuses any session of the process that asks for its own pool, which
            would break other ONNX Runtime users of a process that measured in-process.
        ort_shared_arena: ONNX Runtime on a CPU only: every session's activations in one CPU memory
            arena of the process (ONNX Runtime's environment allocator) instead of an arena per
            session, so a block's sessions reuse the memory of the blocks before. With an arena per
            session every new session's first runs paid ~1 s of first-touch page faults on the CI
            VM (~100 s of a profile's preparation) while the timed runs were the same within their
            noise (see :mod:`casprof.backends.onnxruntime_runner`). Profiles made before it existed
            read as ``False``. Ignored (recorded as ``False``) for the other backends.
        sweeps: passes over all blocks; each pass runs its share of every block's rounds (the
            networks re-opened from the files exported in the first pass), so every c_o is the
            median over separate windows of the whole run instead of one window of a minute.
            Measured at 768x1536 with ONNX Runtime on the 2-core CI machine: the baseline ran
            126 ms in one profile's reduce block and 109 ms in the same block of the profile
            before, and the slowdown did not scale the probes alike (memory-bound pooling and
            compute-bound convolutions changed differently), moving c_o by up to 8 ms, which
            bracketing cannot remove; spreading the rounds over the run averages such spells.
        cpu_allocator: the torch backend on a CPU only: whether the C library returns memory
            that PyTorch frees to the kernel as it does by default (``system``, the default: what
            a plain PyTorch deployment gets) or keeps it for reuse (``keep``: what a deployment
            with jemalloc, tcmalloc or the same ``mallopt`` gets); see
            :mod:`casprof.backends.cpu_memory`.
        memory_format: the torch backend only: the networks' weights and input in PyTorch's default
            NCHW layout (``contiguous``, the default) or in ``channels_last`` (NHWC), which spares
            oneDNN a reorder of every convolution's activations on a CPU and changes the costs
            unevenly; see :mod:`casprof.backends.memory_format`. Profiles made before it existed
            read as ``contiguous``.
        probes_per_bracket: probes run between two baseline runs (``B p1 p2 B p3 p4 B`` for 2),
            each paired with the mean of that bracket's two runs. 1 brackets every probe alone.
            The baseline runs are about half of a round's runs with 1; with 2, a round of
            ``n`` probes has ``ceil(n / 2) + 1`` of them instead of ``n + 1`` (the default profile:
            32 instead of 55 per round, about a fifth of the round's time). The price, measured on
            the raw baseline runs of this CPU's profiles at 768x1536 (ONNX Runtime, 1152 runs;
            torch, 576): predicting a run from the runs one and two places away instead of the
            two adjacent ones leaves a 7 % and 5 % larger scatter, less than the 10 % that the
            quarter more rounds in the same time take off an interval
            (``benchmarks/bracket_spacing.py``).
    """

    backend: Backend = Backend.ONNXRUNTIME
    precision: Precision = Precision.FP32
    resolution: tuple[int, int] = (768, 1536)
    threads: int = 2
    rounds: int = 18
    warmup_iters: int = 2
    warmup_seconds: float = 0.0
    warmup_passes: int = 1
    seed: int = 0
    exporter: str = "torchscript"
    instances: int = 1
    baseline_instances: int = 6
    ort_shared_pool: bool = False
    ort_shared_arena: bool = True
    sweeps: int = 2
    cpu_allocator: CpuAllocator = CpuAllocator.SYSTEM
    probes_per_bracket: int = 2
    memory_format: MemoryFormat = MemoryFormat.CONTIGUOUS

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", Backend(self.backend))
        object.__setattr__(self, "precision", Precision(self.precision))
        object.__setattr__(self, "cpu_allocator", parse_cpu_allocator(self.cpu_allocator))
        object.__setattr__(self, "memory_format", parse_memory_format(self.memory_format))
        object.__setattr__(self, "resolution", tuple(self.resolution))
        if self.backend is not Backend.ONNXRUNTIME:
            object.__setattr__(self, "ort_shared_arena", False)  # nothing to share: not recorded as used
        if self.cpu_allocator is CpuAllocator.KEEP and self.backend is not Backend.TORCH:
            raise UserInputError(KEEP_ONLY_TORCH_ON_CPU)  # the other runners would record it without applying it
        if self.memory_format is not MemoryFormat.CONTIGUOUS and self.backend is not Backend.TORCH:
            raise UserInputError(LAYOUT_ONLY_TORCH)
        if self.rounds < 3:
            raise UserInputError(f"At least 3 measurement rounds are needed, got {self.rounds}.")
        if self.instances < 1 or self.baseline_instances < 1:
            raise UserInputError(
                f"At least one instance of each network is needed, got {min(self.instances, self.baseline_instances)}."
            )
        if not 1 <= self.sweeps <= self.rounds:
            raise UserInputError(f"The sweeps must be between 1 and the rounds ({self.rounds}), got {self.sweeps}.")
        if self.threads < 1:
            raise UserInputError(f"The thread count must be at least 1, got {self.threads}.")
        if self.probes_per_bracket < 1:
            raise UserInputError(f"At least one probe per bracket is needed, got {self.probes_per_bracket}.")
        if self.warmup_iters < 0 or self.warmup_seconds < 0 or self.warmup_passes < 0:
            raise UserInputError("Warm-up iterations, seconds and passes cannot be negative.")

    @property
    def file_tag(self) -> str:
        """What the torch runner's settings add to a profile's or report's file name (``-keep``,
        ``-channels-last``, both, or nothing for the defaults)."""
        return self.cpu_allocator.file_tag + self.memory_format.file_tag

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backend"] = self.backend.value
        d["precision"] = self.precision.value
        d["resolution"] = list(self.resolution)
        d["cpu_allocator"] = self.cpu_allocator.value
        d["memory_format"] = self.memory_format.value
        d["order"] = ("the rounds of every block are split evenly over `sweeps` passes over all blocks; each round: "
                      "the block's probes once each in a seeded random order, probes_per_bracket at a time between "
                      "two baseline runs (B p1 B p2 ... pn B for 1, B p1 p2 B p3 p4 ... B for 2); round r uses "
                      "instance r % instances of every probe; the baseline runs rotate through baseline_instances "
                      "instances, opened once per sweep for all its blocks, baseline run k of round r using "
                      "(r * (ceil(n / probes_per_bracket) + 1) + k) % baseline_instances")
        d["pairing"] = "c_o sample = probe time - mean of the two baseline runs of its bracket"
        d["batch"] = 1
        return d


@dataclass
class _BlockState:
    """Samples of one cell type's block, one entry per finished round.

    ``samples[key]`` are a probe's times, ``brackets[key]`` the mean of the two baseline runs
    around each of them, ``baseline`` every baseline run of the block.
    """

    samples: dict[str, list[float]] = field(default_factory=dict)
    brackets: dict[str, list[float]] = field(default_factory=dict)
    baseline: list[float] = field(default_factory=list)
    rounds_done: int = 0


@dataclass
class MeasureState:
    """Everything measured so far; checkpointed after every round."""

    key: dict[str, Any]
    exact: dict[str, dict[str, float]] = field(default_factory=dict)
    blocks: dict[str, _BlockState] = field(default_factory=dict)
    backend_info: dict[str, Any] = field(default_factory=dict)
    gpu_states: list[dict[str, Any]] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    #: what the build cache gave: per kind ("counts", "onnx") how many were "cached" and how many "built"
    build_cache: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the worker processes that counted and exported before the timing (:mod:`casprof.prebuild`), if any
    build_workers: dict[str, int] = field(default_factory=dict)

    def add_time(self, phase: str, seconds: float) -> None:
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + seconds

    def count_cache(self, kind: str, hit: bool) -> None:
        got = self.build_cache.setdefault(kind, {"cached": 0, "built": 0})
        got["cached" if hit else "built"] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "exact": self.exact,
            "blocks": {t: asdict(b) for t, b in self.blocks.items()},
            "backend_info": self.backend_info,
            "gpu_states": self.gpu_states,
            "phase_seconds": self.phase_seconds,
            "build_cache": self.build_cache,
            "build_workers": self.build_workers,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasureState:
        return cls(
            key=d["key"],
            exact=d.get("exact", {}),
            blocks={t: _BlockState(**b) for t, b in d.get("blocks", {}).items()},
            backend_info=d.get("backend_info", {}),
            gpu_states=d.get("gpu_states", []),
            phase_seconds=d.get("phase_seconds", {}),
            build_cache=d.get("build_cache", {}),
            build_workers=d.get("build_workers", {}),
        )


def rounds_after_sweep(settings: MeasureSettings, sweep: int) -> int:
    """How many rounds every block has finished at the end of sweep ``sweep`` (0-based)."""
    return sweep_rounds(settings.rounds, settings.sweeps, sweep).stop


def checkpoint_path(out: Path) -> Path:
    """Where an unfinished measurement of ``out`` keeps its state."""
    return out.with_name(out.name + ".partial.json")


@dataclass(frozen=True)
class Progress:
    """A progress event for the display (the CLI draws a rich progress bar from these)."""

    stage: str
    done: int
    total: int
    detail: str = ""


ProgressCallback = Callable[[Progress], None]


def _state_key(config: NetworkConfig, settings: MeasureSettings, device: ResolvedDevice, hw: HardwareFingerprint) -> dict[str, Any]:
    return {
        "network": config.fingerprint(),
        "settings": json.loads(json.dumps(settings.to_dict())),
        "device": device.spec.name,
        "hardware": hw.digest(),
        "tool_version": __version__,
    }


def _load_state(path: Path, key: dict[str, Any]) -> MeasureState:
    raw = read_json_file(path, "checkpoint")
    try:
        state = MeasureState.from_dict(raw)
    except (KeyError, TypeError, AttributeError):
        raise UserInputError(f"The checkpoint {path} is malformed; delete it to start afresh.") from None
    check_checkpoint_key(path, key, state.key)
    return state


def network_counts(model: torch.nn.Module, input_shape: tuple[int, int, int, int]) -> dict[str, float]:
    """Parameters and MACs of a network on an input of ``input_shape``."""
    return {
        Metric.PARAMS.value: float(count_params(model)),
        Metric.MACS.value: float(count_macs(model, input_shape).total),
    }


def cached_counts(model: torch.nn.Module, input_shape: tuple[int, int, int, int],
                  cache: BuildCache | None) -> tuple[dict[str, float], bool]:
    """:func:`network_counts`, from ``cache`` when counted before (and stored there when not);
    also says whether they came from the cache."""
    if cache is None:
        return network_counts(model, input_shape), False
    return cache.counts(model, input_shape, lambda: network_counts(model, input_shape))


@functools.lru_cache(maxsize=256)
def exact_counts(config: NetworkConfig, probe: Probe, resolution: tuple[int, int]) -> dict[str, float]:
    """Parameters and MACs of a probe network (deterministic, so counted once per process)."""
    return network_counts(build_probe(config, probe), (1, config.in_channels, *resolution))


def _exact_metrics(config: NetworkConfig, probes: Sequence[Probe], settings: MeasureSettings, state: MeasureState,
                   save: Callable[[], None], progress: ProgressCallback, cache: BuildCache | None) -> None:
    todo = [p for p in probes if p.key not in state.exact]
    shape = (1, config.in_channels, *settings.resolution)
    for i, probe in enumerate(todo):
        progress(Progress("counting parameters and MACs", i, len(todo), probe.key))
        if cache is None:
            state.exact[probe.key] = dict(exact_counts(config, probe, tuple(settings.resolution)))
        else:  # seeded, so that the same probe has the same key every time (counts do not depend on weights)
            state.exact[probe.key], hit = cached_counts(build_probe(config, probe, settings.seed), shape, cache)
            state.count_cache("counts", hit)
        save()
    progress(Progress("counting parameters and MACs", len(todo), len(todo)))


def export_request(settings: MeasureSettings) -> ExportRequest | None:
    """The ONNX export that :mod:`casprof.prebuild`'s workers can make for these settings: ONNX
    Runtime in fp32 exports on the CPU (fp16 and TensorRT trace on the GPU, in the measuring process)."""
    if settings.backend is Backend.ONNXRUNTIME and settings.precision is Precision.FP32:
        return ExportRequest(settings.exporter)
    return None


def _prebuild(config: NetworkConfig, probes: Sequence[Probe], settings: MeasureSettings, state: MeasureState,
              progress: ProgressCallback, cache: BuildCache | None, workers: int, folder: Path) -> dict[str, Path] | None:
    """Count (and, for ONNX Runtime in fp32, export into ``folder``) in ``workers`` processes the
    probes that are neither counted yet nor held by ``cache`` (:func:`casprof.prebuild.build_ahead`);
    their counts, and those the cache held, go into ``state``. Returns the workers' ONNX files, or
    None when no worker ran."""
    export = export_request(settings)
    todo = [p for p in probes if p.key not in state.exact]
    if min(workers, len(todo)) < 2:
        return None
    networks = {p.key: (build_probe(config, p, settings.seed) if cache is not None else None,
                        functools.partial(build_probe, config, p, settings.seed)) for p in todo}
    stage = f"counting and exporting in {workers} processes" if export is not None else f"counting in {workers} processes"
    ahead = build_ahead(networks, (1, config.in_channels, *settings.resolution), folder, export=export, count=True,
                        cache=cache, workers=workers, threads=settings.threads,
                        on_done=lambda done, total: progress(Progress(stage, done, total)))
    for key, counts in ahead.counts.items():  # the cache's counts too: not looked up again
        state.exact[key] = dict(counts)
        if cache is not None:
            state.count_cache("counts", ahead.counts_cached[key])
    if not ahead.workers:
        return None
    if cache is not None:
        for _ in ahead.files:
            state.count_cache("onnx", False)
    state.build_workers = {"processes": ahead.workers, "threads_each": ahead.threads_per_worker}
    return ahead.files


def make_runner_spec(config: NetworkConfig, settings: MeasureSettings, device: ResolvedDevice, workdir: Path,
                     build_cache: BuildCache | None = None) -> RunnerSpec:
    h, w = settings.resolution
    return RunnerSpec(
        input_shape=(1, config.in_channels, h, w),
        device=device.torch_device,
        precision=settings.precision,
        threads=settings.threads,
        workdir=workdir,
        seed=settings.seed,
        cpu_allocator=settings.cpu_allocator,
        memory_format=settings.memory_format,
        build_cache=build_cache,
    )


def open_instances(stack: ExitStack, model: torch.nn.Module, settings: MeasureSettings, spec: RunnerSpec,
                   count: int | None = None, exported: Path | None = None) -> list[Runner]:
    """``count`` (default ``settings.instances``) active runners of one network.

    ONNX is exported only once, by the first instance, or not at all when ``exported`` names the
    network's file from an earlier export (ignored by the torch backend).
    """
    kwargs: dict[str, Any] = {}
    if settings.backend is Backend.ONNXRUNTIME:
        if settings.ort_shared_pool:
            kwargs["shared_pool"] = True  # one pool for all sessions: no idle pool competes with the running one
        else:
            kwargs["spinning"] = False  # idle spinning threads of one session would slow the next
        kwargs["shared_arena"] = settings.ort_shared_arena
    if settings.backend is Backend.TORCH:
        first = stack.enter_context(make_runner(settings.backend, model, spec, **kwargs))
    elif exported is not None:
        first = stack.enter_context(make_runner(settings.backend, exported, spec, **kwargs))
    else:
        first = stack.enter_context(make_runner(settings.backend, model, spec, exporter=settings.exporter, **kwargs))
    runners = [first]
    for _ in range((settings.instances if count is None else count) - 1):
        if settings.backend is Backend.TORCH:
            source: Any = copy.deepcopy(model)
        else:
            source = first.onnx_path  # type: ignore[attr-defined]
        runners.append(stack.enter_context(make_runner(settings.backend, source, spec, **kwargs)))
    return runners


def open_reusing(stack: ExitStack, key: str, model: torch.nn.Module, settings: MeasureSettings, spec: RunnerSpec,
                 count: int | None, exported: dict[str, Path]) -> list[Runner]:
    """:func:`open_instances` on the ONNX file exported earlier for ``key`` if there is one;
    a new export is recorded in ``exported`` (so later sweeps open sessions without exporting)."""
    path = exported.get(key)
    runners = open_instances(stack, model, settings, spec, count, path if path is not None and path.is_file() else None)
    onnx_path = getattr(runners[0], "onnx_path", None)
    if onnx_path is not None:
        exported[key] = Path(onnx_path)
    return runners


def _open_runners(stacks: tuple[ExitStack, ExitStack], config: NetworkConfig, members: Sequence[Probe],
                  settings: MeasureSettings, spec: RunnerSpec, progress: ProgressCallback, label: str,
                  exported: dict[str, Path], baselines: list[Runner]) -> dict[str, list[Runner]]:
    """Open and warm up every instance of a block: its probes on ``stacks[1]`` (the block's), and
    the baseline instances on ``stacks[0]`` (the sweep's) unless ``baselines`` holds them already.

    The baseline instances serve every block of a sweep, so they are opened and warmed by its
    first block (``baselines`` is filled in) and only join the interleaved warm-up passes of the
    later ones. ``exported`` maps probe keys to ONNX files made earlier in this measurement
    (used, and filled in, so each network is exported once).
    """
    sweep_stack, block_stack = stacks
    new: dict[str, list[Runner]] = {}
    warmed: dict[str, list[Runner]] = {BASELINE.key: baselines} if baselines else {}
    if not baselines:
        progress(Progress(f"{label}: preparing networks", 0, len(members) + 1, BASELINE.key))
        baselines.extend(open_reusing(sweep_stack, BASELINE.key, build_probe(config, BASELINE, settings.seed), settings,
                                      spec, settings.baseline_instances, exported))
        new[BASELINE.key] = baselines
    for i, probe in enumerate(members):
        progress(Progress(f"{label}: preparing networks", i + 1, len(members) + 1, probe.key))
        new[probe.key] = open_reusing(block_stack, probe.key, build_probe(config, probe, settings.seed), settings, spec,
                                      settings.instances, exported)
    warm_up(new, settings, f"{label}: warming up", f"{settings.seed}/{label}", progress, warmed)
    return {**new, **warmed}


def warm_up(groups: Mapping[str, Sequence[Runner]], settings: MeasureSettings, stage: str, seed: str,
            progress: ProgressCallback, warmed: Mapping[str, Sequence[Runner]] | None = None) -> None:
    """Each instance's own warm-up runs (``warmup_iters``, ``warmup_seconds``), then
    ``warmup_passes`` interleaved passes over all of them (:func:`warm_interleaved`), joined by
    the instances of ``warmed`` (warmed up before, e.g. by an earlier block)."""
    for i, (key, instances) in enumerate(groups.items()):
        progress(Progress(stage, i, len(groups), key))
        for runner in instances:
            runner.warmup(settings.warmup_iters, settings.warmup_seconds)
    progress(Progress(f"{stage} in turn", 0, 1))
    everyone = [r for g in (groups, warmed or {}) for instances in g.values() for r in instances]
    warm_interleaved(everyone, settings.warmup_passes, seed)
    progress(Progress(f"{stage} in turn", 1, 1))


@dataclass(frozen=True)
class BracketedRound:
    """One interleaved round: each network's time, the mean of the two baseline runs around it,
    and every baseline run in the order they ran."""

    times: dict[str, float]
    brackets: dict[str, float]
    baseline: list[float]


def baseline_runs_per_round(networks: int, per_bracket: int = 1) -> int:
    """Baseline runs in one bracketed round of ``networks`` networks, ``per_bracket`` between two."""
    return -(-networks // per_bracket) + 1


def time_bracketed(networks: Sequence[tuple[str, Runner]], baselines: Sequence[Runner], first: int,
                   per_bracket: int = 1) -> BracketedRound:
    """Run ``B n1 B n2 ... nk B`` once, the networks in the given order; with ``per_bracket=2``,
    ``B n1 n2 B n3 n4 ... B`` (every network of a bracket paired with the same two runs).

    Baseline run ``j`` of the round uses instance ``(first + j) % len(baselines)``; callers pass
    ``first = round * baseline_runs_per_round(k, per_bracket)`` so the instances rotate run by run
    across rounds.
    """
    if per_bracket < 1:
        raise ValueError(f"per_bracket must be at least 1, got {per_bracket}")
    groups = [networks[i:i + per_bracket] for i in range(0, len(networks), per_bracket)]
    before = baselines[first % len(baselines)].time_once()
    times, brackets, baseline = {}, {}, [before]
    for j, group in enumerate(groups, start=1):
        got = [(key, runner.time_once()) for key, runner in group]
        after = baselines[(first + j) % len(baselines)].time_once()
        for key, t in got:
            times[key], brackets[key] = t, (before + after) / 2
        baseline.append(after)
        before = after
    return BracketedRound(times, brackets, baseline)


def warm_interleaved(runners: Sequence[Runner], passes: int, seed: str) -> None:
    """``passes`` untimed runs of every runner, each pass in a freshly shuffled order.

    Each runner's own warm-up runs back to back; the first *interleaved* run of an instance
    can still be far off (measured at 768x1536 with ONNX Runtime on the 2-core CI machine:
    round 0 of a profile 15-21 % off the block's median vs 2-5 % for later rounds, the first
    run of each instance in a fidelity check 7-8 % vs 2-4 %), so the rounds start only after
    every instance has run in turn with the others.
    """
    order = list(runners)
    for p in range(passes):
        random.Random(f"{seed}/warm/{p}").shuffle(order)
        for runner in order:
            runner.warmup(1)


def _rounds(block: _BlockState, all_runners: dict[str, list[Runner]], settings: MeasureSettings, until: int,
            save: Callable[[], None], progress: ProgressCallback, label: str) -> None:
    """Time the block's rounds up to round ``until`` (exclusive), checkpointing each."""
    keys = [k for k in all_runners if k != BASELINE.key]
    baselines = all_runners[BASELINE.key]
    while block.rounds_done < until:
        instance = block.rounds_done % settings.instances
        progress(Progress(f"{label}: measuring", block.rounds_done, settings.rounds, f"round {block.rounds_done + 1}"))
        order = list(keys)
        # one generator per round, so a resumed run draws the same orders as an uninterrupted one
        random.Random(f"{settings.seed}/{label}/{block.rounds_done}").shuffle(order)
        got = time_bracketed([(k, all_runners[k][instance]) for k in order], baselines,
                             block.rounds_done * baseline_runs_per_round(len(keys), settings.probes_per_bracket),
                             settings.probes_per_bracket)
        for key in keys:  # commit the round only when it is complete
            block.samples.setdefault(key, []).append(got.times[key])
            block.brackets.setdefault(key, []).append(got.brackets[key])
        block.baseline.extend(got.baseline)
        block.rounds_done += 1
        save()
    progress(Progress(f"{label}: measuring", block.rounds_done, settings.rounds))


def run_measurement(
    config: NetworkConfig,
    settings: MeasureSettings,
    device: ResolvedDevice,
    hardware: HardwareFingerprint,
    *,
    out: Path,
    resume: bool = False,
    progress: ProgressCallback = lambda p: None,
    workdir: Path | None = None,
    build_cache: BuildCache | None = None,
    build_workers: int = 1,
) -> Profile:
    """Measure a full cost profile and write it to ``out`` (atomically).

    ``build_cache`` (:mod:`casprof.build_cache`) supplies the ONNX exports and parameter/MAC
    counts made before for the same networks; what it gave is recorded in the profile's
    ``settings.build_cache``. Nothing timed comes from it. The networks that the cache does not hold
    (all of them without one) are counted and exported first by ``build_workers`` processes side
    by side, before anything is timed (:func:`casprof.prebuild.default_workers` is one per thread,
    the CLI's default; 1, the default here, does it in this process, one network after the other).

    Raises:
        UserInputError: bad settings, a resolution the network cannot take, a checkpoint
            made with other settings, an output folder that does not exist.
        BackendUnavailableError: the backend cannot run on this device.
    """
    config.check_resolution(*settings.resolution)
    resolve_workers(build_workers, settings.threads)  # at least 1
    out = Path(out)
    ensure_parent_exists(out)
    ckpt = checkpoint_path(out)
    key = _state_key(config, settings, device, hardware)
    state = _load_state(ckpt, key) if resume and ckpt.exists() else MeasureState(key=key)

    def save() -> None:
        atomic_write_json(ckpt, state.to_dict())

    probes = profile_probes(config)
    gpu_index = device.gpu.index if device.gpu is not None else None
    if gpu_index is not None:
        state.gpu_states.append({"when": "start", **(sample_gpu_state(gpu_index) or {})})

    with tempfile.TemporaryDirectory(prefix="casprof-") as tmp:
        folder = Path(workdir) if workdir else Path(tmp)
        start = time.perf_counter()
        prebuilt = _prebuild(config, probes, settings, state, progress, build_cache, build_workers, folder)
        if prebuilt is not None:
            save()
            state.add_time("parallel_build", time.perf_counter() - start)
        start = time.perf_counter()
        _exact_metrics(config, probes, settings, state, save, progress, build_cache)
        state.add_time("count_params_macs", time.perf_counter() - start)

        spec = make_runner_spec(config, settings, device, folder, build_cache)
        exported: dict[str, Path] = dict(prebuilt or {})  # sessions open on the workers' files
        exports_counted: set[str] = set()
        for sweep in range(settings.sweeps):
            until = rounds_after_sweep(settings, sweep)
            with ExitStack() as sweep_stack:
                baselines: list[Runner] = []  # the sweep's baseline instances, opened by its first block
                for label, members in measurement_blocks(config):
                    block = state.blocks.setdefault(label, _BlockState())
                    if block.rounds_done >= until:
                        continue
                    where = label if settings.sweeps == 1 else f"{label} (sweep {sweep + 1}/{settings.sweeps})"
                    with ExitStack() as stack:
                        start = time.perf_counter()
                        runners = _open_runners((sweep_stack, stack), config, members, settings, spec, progress, where,
                                                exported, baselines)
                        state.add_time("prepare_and_warmup", time.perf_counter() - start)
                        for key, instances in runners.items():
                            export = getattr(instances[0], "export_info", None)  # None: opened from a file
                            if export is not None and build_cache is not None and key not in exports_counted:
                                state.count_cache("onnx", export.cached)
                                exports_counted.add(key)
                        if not state.backend_info:
                            state.backend_info = runners[BASELINE.key][0].info().to_dict()
                            if prebuilt and BASELINE.key in prebuilt:  # opened on the file this measurement's workers exported
                                state.backend_info.setdefault("details", {})["export_cached"] = False
                        start = time.perf_counter()
                        _rounds(block, runners, settings, until, save, progress, where)
                        state.add_time("timed_rounds", time.perf_counter() - start)
    if gpu_index is not None:
        state.gpu_states.append({"when": "end", **(sample_gpu_state(gpu_index) or {})})
    profile = build_profile(config, settings, device, hardware, state)
    profile.save(out)
    ckpt.unlink(missing_ok=True)
    return profile


def build_profile(config: NetworkConfig, settings: MeasureSettings, device: ResolvedDevice,
                  hardware: HardwareFingerprint, state: MeasureState) -> Profile:
    """Turn the raw samples of a finished measurement into a :class:`Profile`."""
    exact_base = state.exact[BASELINE.key]
    baseline_samples = [s for t in CELL_TYPES for s in state.blocks[t].baseline]
    baseline = {
        Metric.LATENCY_MS.value: CostValue.measured(Measurement(baseline_samples)),
        Metric.PARAMS.value: CostValue(exact_base[Metric.PARAMS.value]),
        Metric.MACS.value: CostValue(exact_base[Metric.MACS.value]),
    }
    warnings: list[str] = []

    def probe_costs(probe: Probe) -> dict[str, CostValue]:
        block = state.blocks[block_of(probe)]
        absolute = Measurement(block.samples[probe.key])
        diff = paired_difference(absolute, Measurement(block.brackets[probe.key]))
        exact = state.exact[probe.key]
        note = diff.noise_warning()
        if note:
            warnings.append(f"{probe.key}: {note}")
        return {
            Metric.LATENCY_MS.value: CostValue.measured(diff, absolute),
            Metric.PARAMS.value: CostValue(exact[Metric.PARAMS.value] - exact_base[Metric.PARAMS.value]),
            Metric.MACS.value: CostValue(exact[Metric.MACS.value] - exact_base[Metric.MACS.value]),
        }

    costs: dict[str, dict[str, dict[str, CostValue]]] = {}
    for t in CELL_TYPES:
        costs[t] = {}
        for op in candidate_ops(t):
            if op == "identity":
                costs[t][op] = {m.value: CostValue(0.0, source="definition") for m in Metric}
            else:
                costs[t][op] = probe_costs(Probe(t, op))
    extra = edge_model_probes(config)
    cells = {t: CellEdgeModel.from_probe_costs(t, extra, probe_costs) for t in CELL_TYPES if any(p.cell_type == t for p in extra)}
    info = state.backend_info
    backend = BackendRecord(
        name=info.get("backend", settings.backend.value),
        version=info.get("backend_version", "unknown"),
        precision=info.get("precision", settings.precision.value),
        device=info.get("device", device.torch_device),
        threads=info.get("threads", settings.threads),
        timer=info.get("timer"),
        details=info.get("details", {}),
    )
    hw = hardware.to_dict()
    hw["digest"] = hardware.digest()
    hw["matched_device"] = device.matched_name
    if state.gpu_states:
        hw["gpu_state_samples"] = state.gpu_states
    return Profile(
        device=device.spec.name,
        hardware=hw,
        backend=backend,
        method=Method.MEASURED,
        network=config,
        input_size=tuple(settings.resolution),
        baseline=baseline,
        costs=costs,
        settings={**settings.to_dict(), "phase_seconds": {k: round(v, 2) for k, v in state.phase_seconds.items()},
                  **({"build_cache": state.build_cache} if state.build_cache else {}),
                  **({"build_workers": state.build_workers} if state.build_workers else {})},
        warnings=tuple(warnings),
        edge_model=EdgeModel(cells),
    )


def iter_costs(profile: Profile, metric: str) -> Iterator[tuple[str, str, CostValue]]:
    """``(cell_type, op, cost)`` for every operation of a profile, in table order."""
    for t in CELL_TYPES:
        for op in candidate_ops(t):
            yield t, op, profile.cost(t, op, metric)

