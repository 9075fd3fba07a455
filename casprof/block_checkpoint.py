"""Resumable timing of derived networks in blocks (``casprof fidelity`` and ``casprof calibrate``).

A check times its networks block by block, sweep after sweep (:func:`casprof.fidelity.time_blocks`);
at 768x1536 on a 2-core CPU one block's sweep takes a minute or two and a whole check 8–15
minutes. After every finished (sweep, block) the times measured so far are written atomically
to a checkpoint file; a run with ``resume`` reads it back and skips what is done, so an
interrupted check loses at most the block it was timing. A block interrupted mid-sweep is timed
again from the start of that sweep with new instances, as every sweep opens its own: the rounds
(and their shuffled orders, seeded per round) are the same as in an uninterrupted run.

The checkpoint is bound to what it measured: the command, the profile's content, the check's
settings, the blocks' networks, the machine and the toolkit's version. A checkpoint made with
anything else is refused with one sentence naming the difference, as ``casprof measure``'s is.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casprof import __version__
from casprof._io import atomic_write_json, check_schema_version, read_json_file
from casprof.errors import UserInputError

CHECKPOINT_VERSION = 1


@dataclass
class BlockTimes:
    """What one block's rounds measured: per network and instance, times and bracket means."""

    times: dict[str, tuple[list[float], ...]]
    brackets: dict[str, tuple[list[float], ...]]
    baseline: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"times": {k: [list(x) for x in v] for k, v in self.times.items()},
                "brackets": {k: [list(x) for x in v] for k, v in self.brackets.items()},
                "baseline": list(self.baseline)}

    @classmethod
    def from_dict(cls, d: Any) -> BlockTimes:
        def per_instance(m: Any) -> dict[str, tuple[list[float], ...]]:
            return {str(k): tuple([float(t) for t in x] for x in v) for k, v in m.items()}

        return cls(per_instance(d["times"]), per_instance(d["brackets"]), [float(t) for t in d["baseline"]])


def check_checkpoint_key(path: Path | str, key: Mapping[str, Any], made: Mapping[str, Any]) -> None:
    """Refuse to resume from the checkpoint at ``path`` if it was made (``made``) for another run than
    this one (``key``), naming the parts of the key that differ.

    Raises:
        UserInputError: the keys differ.
    """
    if made != key:
        diffs = sorted(k for k in set(key) | set(made) if key.get(k) != made.get(k))
        raise UserInputError(f"The checkpoint {path} does not fit this run (its {' and '.join(diffs)} differ); "
                             "rerun without --resume to start afresh.")


def checkpoint_beside(profile: Path, check: str) -> Path:
    """Where an unfinished ``check`` (``fidelity`` or ``calibration``) of ``profile`` keeps its finished blocks."""
    return profile.with_name(f"{profile.name}.{check}.partial.json")


def content_digest(obj: Any) -> str:
    """16 hex characters of SHA-256 over ``obj`` as canonical JSON (a profile's ``to_dict()``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def checkpoint_key(command: str, profile_digest: str, settings: dict[str, Any],
                   blocks: list[tuple[str, list[str]]], hardware_digest: str) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed."""
    return {"command": command, "profile": profile_digest, "settings": json.loads(json.dumps(settings)),
            "blocks": [[label, list(names)] for label, names in blocks], "hardware": hardware_digest,
            "tool_version": __version__}


@dataclass
class BlockCheckpoint:
    """The finished (sweep, block) timings of one check, saved to ``path`` after each.

    ``path=None`` keeps nothing on disk (the API's default: nothing to resume).
    """

    path: Path | None
    key: dict[str, Any]
    measured: dict[int, BlockTimes] = field(default_factory=dict)
    done: set[tuple[int, int]] = field(default_factory=set)
    #: wall time of the earlier, interrupted attempts
    earlier_seconds: float = 0.0
    #: how many (sweep, block) timings came from the file at opening
    resumed_count: int = 0
    _opened: float = field(default_factory=time.perf_counter, repr=False)

    @classmethod
    def open(cls, path: Path | None, key: dict[str, Any], resume: bool, started: float | None = None) -> BlockCheckpoint:
        """A fresh checkpoint, or with ``resume`` the one at ``path`` if there is one; this attempt's
        wall time counts from ``started`` (a ``time.perf_counter()``; default: now).

        Raises:
            UserInputError: the file at ``path`` is malformed or was made for another check.
        """
        opened = time.perf_counter() if started is None else started
        if path is None or not resume or not Path(path).exists():
            return cls(None if path is None else Path(path), key, _opened=opened)
        raw = read_json_file(path, "checkpoint")
        try:
            check_schema_version(raw, "checkpoint", CHECKPOINT_VERSION)
            made = raw["key"]
            measured = {int(b): BlockTimes.from_dict(t) for b, t in raw["measured"].items()}
            done = {(int(s), int(b)) for s, b in raw["done"]}
            seconds = float(raw["seconds"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserInputError(f"The checkpoint {path} is malformed; delete it to start afresh.") from None
        check_checkpoint_key(path, key, made)
        return cls(Path(path), key, measured, done, seconds, len(done), opened)

    def is_done(self, sweep: int, block: int) -> bool:
        return (sweep, block) in self.done

    def elapsed(self) -> float:
        """Wall time of this check so far, the interrupted attempts included."""
        return self.earlier_seconds + time.perf_counter() - self._opened

    def record(self, sweep: int, block: int, times: BlockTimes) -> None:
        """Block ``block`` finished sweep ``sweep`` with ``times`` (all its sweeps so far); save."""
        self.measured[block] = times
        self.done.add((sweep, block))
        if self.path is not None:
            atomic_write_json(self.path, {
                "schema_version": CHECKPOINT_VERSION, "key": self.key, "seconds": self.elapsed(),
                "done": sorted([s, b] for s, b in self.done),
                "measured": {str(b): t.to_dict() for b, t in sorted(self.measured.items())},
            })

    def discard(self) -> None:
        """The check's timing is complete: remove the file."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
