"""What the fidelity and resume tests read off a check's progress events."""

from __future__ import annotations

from collections.abc import Sequence

from casprof.fidelity import block_order


def warmed_blocks(stages: Sequence[str]) -> list[str]:
    """The (block, sweep) labels that were warmed up, in order: one per timed block of a sweep."""
    return list(dict.fromkeys(s[s.index("(") + 1:s.index(")")] for s in stages if s.startswith("warming up")))


def two_sweep_order(labels: Sequence[str], seed: int) -> list[str]:
    """The (block, sweep) labels of a 2-sweep check of blocks ``labels`` in the order it times them."""
    return [f"{labels[b]}, sweep {k + 1}/2" for k in range(2) for b in block_order(len(labels), seed, k)]
