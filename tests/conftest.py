"""Shared fixtures: tiny network configurations and real (tiny) measured profiles.

Everything is measured for real (torch and ONNX Runtime on this CPU), just on networks small
enough to keep the suite fast on 2 cores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
# No build cache unless a test asks for one (tests/test_build_cache.py): every other test, and every
# subprocess it starts, exports and counts afresh and leaves nothing in ~/.cache.
os.environ["CASPROF_CACHE_DIR"] = "off"

from casprof.config import NetworkConfig  # noqa: E402

#: A tiny skeleton (same layout and operations as the default, a fraction of its width).
TINY = NetworkConfig(stem_channels=(4, 4, 8), channels=4, ms_channels=4, num_classes=5)
#: An even smaller graph (fewer cells and nodes) for the ONNX export paths, which cost per node.
MINI = NetworkConfig(stem_channels=(4, 4, 8), channels=4, ms_channels=4, num_classes=5, layout="NNRN", nodes=2, ms_nodes=2)
TINY_RES = (32, 64)


@pytest.fixture()
def tiny_config() -> NetworkConfig:
    return TINY


@pytest.fixture(scope="session")
def network_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("networks")
    files = {}
    for name, cfg in (("tiny", TINY), ("mini", MINI)):
        path = folder / f"{name}.json"
        path.write_text(json.dumps(cfg.to_dict()))
        files[name] = path
    return files


@pytest.fixture(scope="session")
def tiny_profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real torch/CPU profile of the tiny network at 32x64 (3 rounds)."""
    from casprof.devices import resolve_device
    from casprof.hardware import detect_hardware
    from casprof.measure import MeasureSettings, run_measurement

    hw = detect_hardware()
    out = tmp_path_factory.mktemp("profiles") / "tiny-torch.json"
    settings = MeasureSettings(backend="torch", resolution=TINY_RES, threads=1, rounds=3, warmup_iters=1)
    run_measurement(TINY, settings, resolve_device("cpu", hw), hw, out=out)
    return out


def as_schema_1(profile_path: Path, folder: Path) -> Path:
    """A version-1 copy of a schema-2 profile (no edge model): the uniform-share model of older files."""
    raw = json.loads(profile_path.read_text())
    raw["schema_version"] = 1
    del raw["edge_model"]
    old = folder / "v1.json"
    old.write_text(json.dumps(raw))
    return old
