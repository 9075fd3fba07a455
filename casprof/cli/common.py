"""Small helpers that several commands share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from casprof._io import ensure_parent_exists, read_json_file
from casprof.build_cache import BuildCache, default_build_cache
from casprof.config import DEFAULT_CONFIG, NetworkConfig
from casprof.errors import UserInputError


def load_network_config(path: Path | None) -> NetworkConfig:
    """The built-in configuration, or one read from a JSON file (a bare config or a network block)."""
    if path is None:
        return DEFAULT_CONFIG
    data = read_json_file(path, "network configuration")
    if isinstance(data, dict) and isinstance(data.get("network"), dict):
        data = data["network"]
    return NetworkConfig.from_dict(data)


def build_cache_for(enabled: bool) -> BuildCache | None:
    """The build cache the environment names when ``enabled`` (``--build-cache``), else None."""
    return default_build_cache() if enabled else None


def build_cache_line(profile_settings: dict[str, object], cache: BuildCache | None) -> str | None:
    """One sentence on what a measurement took from (or left in) the build cache; None without one."""
    got = profile_settings.get("build_cache")
    if cache is None or not isinstance(got, dict) or not got:
        return None
    kinds = {k: v for k, v in sorted(got.items()) if isinstance(v, dict)}
    if not any(v.get("cached", 0) for v in kinds.values()):
        built = ", ".join(f"{v.get('built', 0)} {k}" for k, v in kinds.items())
        return f"Kept in the build cache {cache.root} for later measurements of the same networks: {built}."
    parts = [f"{v.get('cached', 0)} of {v.get('cached', 0) + v.get('built', 0)} {k}" for k, v in kinds.items()]
    return "From the build cache (built before, verified; nothing timed): " + ", ".join(parts) + "."


def writable_checkpoint(path: Path) -> Path | None:
    """``path`` if a checkpoint can be kept there (:func:`casprof._io.ensure_parent_exists`); else None,
    after saying why and that this run cannot be resumed."""
    from casprof.cli._app import err_console

    try:
        ensure_parent_exists(path)
    except UserInputError as exc:
        err_console.print(f"{exc} No checkpoint is kept, so this run cannot be resumed if it is interrupted.",
                          highlight=False)
        return None
    return path


@contextmanager
def resumable(checkpoint: Path | None, finished: str, resume: bool) -> Iterator[None]:
    """Say what ``--resume`` (``resume``) found, and turn an interruption (Ctrl-C) into one sentence
    on what ``checkpoint`` kept and exit status 130 (``SystemExit``, so that scripts outside the CLI
    can use it as well)."""
    from casprof.cli._app import err_console

    if resume and checkpoint is not None:
        err_console.print(f"Resuming from {checkpoint}." if checkpoint.exists()
                          else f"No checkpoint {checkpoint} to resume from: starting afresh.", highlight=False)
    try:
        yield
    except KeyboardInterrupt:
        if checkpoint is not None and checkpoint.exists():
            err_console.print(f"Interrupted; the finished {finished} are kept in {checkpoint}. "
                              "Run the same command with --resume to continue.", highlight=False)
        else:
            err_console.print(f"Interrupted before any {finished} were finished; nothing to resume.", highlight=False)
        raise SystemExit(130) from None
