"""A content-addressed cache of what a measurement builds and never measures: ONNX exports and counts.

Every ``casprof measure`` used to trace each of its ~40 networks twice at full resolution before
timing anything: once for the ONNX export (the torchscript exporter runs a real forward pass,
2-3.5 s per probe at 768x1536 on the 2-core CI machine, ~110 s per profile) and once for fvcore's
parameter and MAC counts (~1 s per probe, ~50 s): about 30 % of the 10-minute budget, redone
identically by every later profile, fidelity check and calibration of the same network. Both are
deterministic functions of the network (its modules and seeded weights), the input shape, the
exporter settings and the software, so they are cached under a key of all of these:

- the network: SHA-256 of ``torch.save`` of the module (classes, attributes including each
  cell's wiring, every parameter and buffer);
- the code and software: SHA-256 of every source file of the ``casprof`` package plus the
  Python, torch, onnx and fvcore versions, so any change of the code invalidates every entry;
- the request: input shape, exporter, opset, precision (and the trace device) for an export.

A hit is verified (the file's SHA-256 against the one recorded when it was stored) and copied to
where the export would have been written, so the runner opens an identical file; what was taken
from the cache is recorded (``export_cached`` in a runner's details, ``build_cache`` in a profile's
settings). Nothing timed is ever cached: every latency is measured afresh.

Location: ``$CASPROF_CACHE_DIR``, else ``$XDG_CACHE_HOME/casprof``, else ``~/.cache/casprof``;
``CASPROF_CACHE_DIR=off`` (or empty) disables it. Entries not used for longest are removed once the
cache is larger than ``$CASPROF_CACHE_MAX_MB`` (default 4096). A damaged or unreadable entry is
ignored and rebuilt; a cache that cannot be written is skipped (the work is done as without one).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from casprof._io import atomic_copy, atomic_write_text, file_sha256
from casprof.errors import UserInputError

#: What a counts entry must hold to be used (an older or damaged entry is counted again).
COUNTED_METRICS = ("params", "macs")

#: Environment variables that locate, size or switch off the cache.
CACHE_DIR_ENV = "CASPROF_CACHE_DIR"
CACHE_MAX_MB_ENV = "CASPROF_CACHE_MAX_MB"
DEFAULT_MAX_MB = 4096
_OFF = {"", "0", "off", "none", "false", "no"}


@functools.lru_cache(maxsize=1)
def software_digest() -> str:
    """SHA-256 of the casprof package's sources and the versions of what builds and counts."""
    import casprof

    h = hashlib.sha256()
    root = Path(casprof.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for name in ("onnx", "fvcore"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package simply has no version in the key
            versions[name] = None
    h.update(json.dumps(versions, sort_keys=True).encode())
    return h.hexdigest()


def model_digest(model: nn.Module) -> str | None:
    """SHA-256 of ``torch.save(model)`` (structure, attributes, weights); None if it cannot be pickled."""
    buffer = io.BytesIO()
    try:
        torch.save(model, buffer)
    except Exception:  # noqa: BLE001 - an unpicklable module is simply not cached
        return None
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _key(kind: str, model: str, request: Mapping[str, Any]) -> str:
    text = json.dumps({"kind": kind, "software": software_digest(), "model": model, "request": request}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class BuildCache:
    """The cache folder (created on first write) and its size limit."""

    root: Path
    max_bytes: int = DEFAULT_MAX_MB * 1024 * 1024

    # -- ONNX exports -------------------------------------------------------------------------
    def onnx_key(self, model: nn.Module, request: Mapping[str, Any]) -> str | None:
        """The key of ``model`` exported as ``request`` says (None: this model cannot be cached)."""
        digest = model_digest(model)
        return None if digest is None else _key("onnx", digest, request)

    def fetch_onnx(self, key: str, dest: Path) -> str | None:
        """Copy the cached export ``key`` to ``dest`` (atomically) if it is there and intact;
        returns its SHA-256 (verified on the copy, so one hash checks both), or None."""
        entry, meta = self._paths("onnx", key, ".onnx")
        try:
            recorded = json.loads(meta.read_text())["sha256"]
            atomic_copy(entry, dest)
            if file_sha256(dest) != recorded:
                dest.unlink(missing_ok=True)
                self._discard(entry, meta)
                return None
            os.utime(meta)  # most recently used
            return str(recorded)
        except (OSError, ValueError, KeyError, TypeError, UserInputError):
            return None

    def holds_onnx(self, key: str) -> bool:
        """Whether an export is stored under ``key`` (not verified: :meth:`fetch_onnx` does that)."""
        entry, meta = self._paths("onnx", key, ".onnx")
        return entry.is_file() and meta.is_file()

    def store_onnx(self, key: str, source: Path, sha256: str) -> None:
        """Keep a copy of the export ``source`` (whose SHA-256 is ``sha256``) under ``key``."""
        entry, meta = self._paths("onnx", key, ".onnx")
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(source, entry)
            atomic_write_text(meta, json.dumps({"sha256": sha256}))
        except (OSError, UserInputError):  # a cache that cannot be written is skipped
            return
        self.prune()

    # -- parameter and MAC counts -------------------------------------------------------------
    def counts(self, model: nn.Module, input_shape: Iterable[int], count: Callable[[], dict[str, float]]) -> tuple[dict[str, float], bool]:
        """``count()`` for ``model`` on ``input_shape``, from the cache if it was counted before;
        also says whether it came from the cache."""
        got = self.lookup_counts(model, input_shape)
        if got is not None:
            return got, True
        value = count()
        self.store_counts(model, input_shape, value)
        return value, False

    def lookup_counts(self, model: nn.Module, input_shape: Iterable[int]) -> dict[str, float] | None:
        """The counts stored for ``model`` on ``input_shape``, or None."""
        meta = self._counts_path(model, input_shape)
        if meta is None:
            return None
        try:
            got = json.loads(meta.read_text())
            if (isinstance(got, dict) and set(got) >= set(COUNTED_METRICS)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in got.values())):
                os.utime(meta)
                return {k: float(v) for k, v in got.items()}
        except (OSError, ValueError):
            pass
        return None

    def store_counts(self, model: nn.Module, input_shape: Iterable[int], value: dict[str, float]) -> None:
        """Keep ``value``, the counts of ``model`` on ``input_shape``."""
        meta = self._counts_path(model, input_shape)
        if meta is None:
            return
        try:
            meta.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(meta, json.dumps(value))
        except (OSError, UserInputError):  # a cache that cannot be written is skipped
            pass

    def _counts_path(self, model: nn.Module, input_shape: Iterable[int]) -> Path | None:
        digest = model_digest(model)
        if digest is None:
            return None
        return self._paths("counts", _key("counts", digest, {"input_shape": [int(s) for s in input_shape]}), ".json")[1]

    # -- housekeeping -------------------------------------------------------------------------
    def size_bytes(self) -> int:
        """Bytes the cache's files take."""
        return sum(st.st_size for _, st in self._stats())

    def prune(self) -> None:
        """Remove the least recently used entries until the cache fits ``max_bytes``."""
        entries: dict[Path, tuple[float, int, list[Path]]] = {}
        for p, st in self._stats():
            stem = p.parent / p.name.split(".")[0]
            used, size, files = entries.get(stem, (0.0, 0, []))
            entries[stem] = (max(used, st.st_mtime), size + st.st_size, [*files, p])
        total = sum(size for _, size, _ in entries.values())
        for _, size, files in sorted(entries.values(), key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            for f in files:
                f.unlink(missing_ok=True)
            total -= size

    def clear(self) -> int:
        """Remove every entry; returns the bytes freed."""
        freed = self.size_bytes()
        for kind in ("onnx", "counts"):
            shutil.rmtree(self.root / kind, ignore_errors=True)
        return freed

    def _paths(self, kind: str, key: str, suffix: str) -> tuple[Path, Path]:
        folder = self.root / kind
        return folder / f"{key}{suffix}", folder / f"{key}.json"

    def _files(self) -> list[Path]:
        return [p for kind in ("onnx", "counts") if (self.root / kind).is_dir()
                for p in (self.root / kind).iterdir() if p.is_file() and not p.name.startswith(".")]

    def _stats(self) -> list[tuple[Path, os.stat_result]]:
        """Each file with its stat, leaving out any that another process sharing the cache removed meanwhile."""
        out = []
        for p in self._files():
            try:
                out.append((p, p.stat()))
            except FileNotFoundError:
                continue
        return out

    @staticmethod
    def _discard(*paths: Path) -> None:
        for p in paths:
            p.unlink(missing_ok=True)


def default_build_cache(environ: Mapping[str, str] | None = None) -> BuildCache | None:
    """The cache the environment asks for (see the module docstring); None when switched off."""
    env = os.environ if environ is None else environ
    raw = env.get(CACHE_DIR_ENV)
    if raw is not None and raw.strip().lower() in _OFF:
        return None
    if raw:
        root = Path(raw).expanduser()
    else:
        base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base).expanduser() / "casprof"
    raw_max = env.get(CACHE_MAX_MB_ENV, str(DEFAULT_MAX_MB))
    try:
        max_mb = int(raw_max)
    except ValueError:
        max_mb = -1
    if max_mb < 0:
        raise UserInputError(f"{CACHE_MAX_MB_ENV}={raw_max!r} is not a size in MB (a whole number, 0 or more).")
    return BuildCache(root, max_mb * 1024 * 1024)
