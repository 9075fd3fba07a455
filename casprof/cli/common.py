"""Small helpers that several commands share."""

from __future__ import annotations

from pathlib import Path

from casprof._io import read_json_file
from casprof.build_cache import BuildCache, default_build_cache
from casprof.config import DEFAULT_CONFIG, NetworkConfig


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


def build_cache_line(profile_settings: dict[str, object]) -> str | None:
    """One sentence on what a measurement took from the build cache (None if it used none)."""
    got = profile_settings.get("build_cache")
    if not isinstance(got, dict) or not got:
        return None
    parts = [f"{v.get('cached', 0)} of {v.get('cached', 0) + v.get('built', 0)} {k}" for k, v in sorted(got.items())
             if isinstance(v, dict)]
    return "From the build cache (built before, verified; nothing timed): " + ", ".join(parts) + "."
