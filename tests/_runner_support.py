"""A runner stand-in for tests of the bracketing and warm-up order (no backend needed)."""

from __future__ import annotations


class ScriptedRunner:
    """``time_once`` returns the next of its scripted times and logs its name; ``warmup`` only logs."""

    def __init__(self, name: str, times: list[float], log: list[str]) -> None:
        self.name, self.times, self.log = name, list(times), log

    def time_once(self) -> float:
        self.log.append(self.name)
        return self.times.pop(0)

    def warmup(self, min_iters: int = 3, min_seconds: float = 0.0) -> int:
        self.log.extend([f"warm:{self.name}"] * min_iters)
        return min_iters
