"""Small helpers that several commands share."""

from __future__ import annotations

from pathlib import Path

from casprof._io import read_json_file
from casprof.config import DEFAULT_CONFIG, NetworkConfig


def load_network_config(path: Path | None) -> NetworkConfig:
    """The built-in configuration, or one read from a JSON file (a bare config or a network block)."""
    if path is None:
        return DEFAULT_CONFIG
    data = read_json_file(path, "network configuration")
    if isinstance(data, dict) and isinstance(data.get("network"), dict):
        data = data["network"]
    return NetworkConfig.from_dict(data)
