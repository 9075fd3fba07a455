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
