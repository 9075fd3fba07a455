"""Count and export networks in worker processes before anything is timed.

A cold measurement traces every network twice at full resolution, once for fvcore's counts and
once for the ONNX export. Both are deterministic and nothing else runs while they do, so
``workers`` processes can make them side by side, each with its share of the threads; the
measurement then opens its sessions on the files they wrote and takes their counts (and keeps
both in the build cache, under its own keys, when it has one). Nothing timed happens here.

Measured on the 2-core VM at 768x1536 (53 probe networks of a profile, counts and torchscript
exports, no cache): 69.5 s one after the other with 2 threads, 51.3 s in 2 processes of 1
thread (each process starts in ~2 s); 2 processes of 2 threads took 2.7x longer than 1 thread
each (oversubscribed cores).

The workers are started with ``spawn`` (no forked copy of a process that holds ONNX Runtime
sessions or CUDA state) and get a picklable recipe per network (a module-level builder with its
arguments), so each builds the same seeded network as the measurement does.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from casprof.build_cache import BuildCache
from casprof.errors import UserInputError


@dataclass(frozen=True)
class ExportRequest:
    """The ONNX export the measurement's runner would make (on the CPU, fp32)."""

    exporter: str
    opset: int | None = None


@dataclass(frozen=True)
class BuildJob:
    """One network: ``build()`` makes it (picklable: a module-level function or a
    :func:`functools.partial` of one, with picklable arguments)."""

    key: str
    build: Callable[[], nn.Module]


@dataclass(frozen=True)
class Built:
    """One network's counts (``params``, ``macs``; None: not counted) and its ONNX file with its
    SHA-256 (None: not exported)."""

    key: str
    counts: dict[str, float] | None
    onnx_path: Path | None = None
    onnx_sha256: str | None = None


@dataclass(frozen=True)
class PrebuildResult:
    """Every network's outcome (in the jobs' order), the processes used and the wall time."""

    built: tuple[Built, ...]
    workers: int
    threads_per_worker: int
    seconds: float


def default_workers(threads: int) -> int:
    """One worker per thread the measurement may use, never more than the CPUs this process may
    run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(threads, cpus))


def resolve_workers(requested: int | None, threads: int) -> int:
    """``--build-workers``: as asked, or by default :func:`default_workers` of ``threads``.

    Raises:
        UserInputError: fewer than one.
    """
    if requested is None:
        return default_workers(threads)
    if requested < 1:
        raise UserInputError(f"--build-workers must be at least 1, got {requested}.")
    return requested


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _build(job: BuildJob, index: int, input_shape: tuple[int, int, int, int], export: ExportRequest | None,
           folder: str, count: bool) -> Built:
    """Count and/or export one network; its file is ``<folder>/prebuilt-<index>.onnx``."""
    from casprof.backends.onnx_export import export_onnx
    from casprof.measure import network_counts

    model = job.build()
    counts = network_counts(model, input_shape) if count else None
    if export is None:
        return Built(job.key, counts)
    info = export_onnx(model, input_shape, Path(folder) / f"prebuilt-{index}.onnx", exporter=export.exporter,
                       opset=export.opset, device="cpu")
    return Built(job.key, counts, info.path, info.sha256)


def prebuild(jobs: Sequence[BuildJob], input_shape: tuple[int, int, int, int], folder: Path, *,
             export: ExportRequest | None, workers: int, threads: int, count: bool = True,
             on_done: Callable[[int, int], None] = lambda done, total: None) -> PrebuildResult:
    """Count (with ``count``) and export (with ``export``, on the CPU into ``folder``) every job's
    network with ``workers`` spawned processes sharing ``threads`` threads; ``on_done(done, total)``
    after each.

    Errors of a worker (a failed export, say) are raised here as they were raised there.
    """
    start = time.perf_counter()
    per_worker = max(1, threads // workers)
    built: dict[str, Built] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(per_worker,)) as pool:
        pending = {pool.submit(_build, job, i, input_shape, export, str(folder), count) for i, job in enumerate(jobs)}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    got = fut.result()
                    built[got.key] = got
                    on_done(len(built), len(jobs))
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return PrebuildResult(built=tuple(built[job.key] for job in jobs), workers=workers, threads_per_worker=per_worker,
                          seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class Ahead:
    """What :func:`build_ahead` found or made: the counts of every network it has them for (from the
    cache or a worker), whether each came from the cache, the workers' ONNX files, and the processes
    used (0 when none ran)."""

    counts: dict[str, dict[str, float]]
    counts_cached: dict[str, bool]
    files: dict[str, Path]
    workers: int
    threads_per_worker: int


def build_ahead(networks: Mapping[str, tuple[nn.Module | None, Callable[[], nn.Module]]],
                input_shape: tuple[int, int, int, int], folder: Path, *, export: ExportRequest | None, count: bool,
                cache: BuildCache | None, workers: int, threads: int,
                on_done: Callable[[int, int], None] = lambda done, total: None) -> Ahead:
    """:func:`prebuild` for the ``networks`` (key: (this process's module or None, recipe)) that
    ``cache`` does not hold yet (all of them without a cache), when at least two workers would run;
    what the workers made is stored in the cache under the keys of this process's modules (a module
    rebuilt in another process may pickle differently, so its own key could differ). The counts the
    cache holds are returned too, so that nobody looks them up twice.
    """
    from casprof.backends.onnx_export import export_cache_key

    models = {k: m for k, (m, _) in networks.items() if m is not None} if cache is not None else {}
    cached: dict[str, dict[str, float]] = {}
    if cache is not None and count:
        cached = {k: got for k, m in models.items() if (got := cache.lookup_counts(m, input_shape)) is not None}
    held_only = Ahead(counts=cached, counts_cached={k: True for k in cached}, files={}, workers=0, threads_per_worker=0)
    if workers < 2:  # nothing will be built here: the counts held are all there is to give
        return held_only
    onnx_keys = ({k: export_cache_key(cache, m, input_shape, exporter=export.exporter, opset=export.opset)
                  for k, m in models.items()} if cache is not None and export is not None else {})

    def held(key: str) -> bool:
        if count and key not in cached:
            return False
        onnx_key = onnx_keys.get(key)
        return export is None or (onnx_key is not None and cache is not None and cache.holds_onnx(onnx_key))

    need = [k for k in networks if not held(k)] if count or export is not None else []
    n = min(workers, len(need))
    if n < 2:
        return held_only
    result = prebuild([BuildJob(k, networks[k][1]) for k in need], input_shape, folder, export=export, workers=n,
                      threads=threads, count=count, on_done=on_done)
    for built in result.built:
        model = models.get(built.key)
        if cache is None or model is None:
            continue
        if built.counts is not None and built.key not in cached:
            cache.store_counts(model, input_shape, built.counts)
        onnx_key = onnx_keys.get(built.key)
        if built.onnx_path is not None and onnx_key is not None:
            cache.store_onnx(onnx_key, built.onnx_path, built.onnx_sha256 or "")
    made = {b.key: b.counts for b in result.built if b.counts is not None and b.key not in cached}
    return Ahead(counts={**cached, **made}, counts_cached={**{k: True for k in cached}, **{k: False for k in made}},
                 files={b.key: b.onnx_path for b in result.built if b.onnx_path is not None},
                 workers=result.workers, threads_per_worker=result.threads_per_worker)
