"""Test support for the search tests: in-memory profiles with known costs for 19-class tiny networks.

The synthetic dataset has Cityscapes' 19 classes, so the search tests use 19-class variants of
the tiny networks of ``conftest.py``. Costs are made up but fixed (an operation's index in its
candidate set, scaled per cell type), so expected results can be computed by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from casprof.config import NetworkConfig
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.profile import BackendRecord, CostValue, Method, Profile

TINY19 = NetworkConfig(stem_channels=(4, 4, 8), channels=4, ms_channels=4, num_classes=19)
MINI19 = NetworkConfig(
    stem_channels=(4, 4, 8), channels=4, ms_channels=4, num_classes=19, layout="NNRN", nodes=2, ms_nodes=2
)
SCALE = {"normal": 1.0, "reduce": 0.5, "ms": 0.25}
BASELINE = 10.0


def known_cost(cell_type: str, op: str) -> float:
    """c_o of the made-up profile: the op's position in its candidate set times a per-type scale."""
    return SCALE[cell_type] * candidate_ops(cell_type).index(op)


def make_profile(config: NetworkConfig = MINI19, method: Method = Method.MEASURED,
                 metrics: tuple[str, ...] = ("latency_ms", "macs")) -> Profile:
    costs = {
        t: {op: {m: CostValue(known_cost(t, op), source="exact") for m in metrics} for op in candidate_ops(t)}
        for t in CELL_TYPES
    }
    return Profile(
        device="cpu", hardware={}, backend=BackendRecord("torch", "test", "fp32", "cpu"), method=method,
        network=config, input_size=(32, 64), baseline={m: CostValue(BASELINE, source="exact") for m in metrics},
        costs=costs,
    )


def write_profile(path: Path, **kwargs: object) -> Path:
    make_profile(**kwargs).save(path)  # type: ignore[arg-type]
    return path


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run each test on one torch thread: on a shared 2-core machine, two threads per process
    oversubscribe the CPU and a tiny search becomes 30x slower (measured: 5 s vs 170 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
