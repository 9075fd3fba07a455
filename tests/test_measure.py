"""The measurement protocol: pairing, interruption and resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casprof.devices import resolve_device
from casprof.errors import UserInputError
from casprof.hardware import detect_hardware
from casprof.measure import MeasureSettings, Progress, checkpoint_path, run_measurement
from casprof.profile import Profile
from tests.conftest import TINY, TINY_RES

SETTINGS = MeasureSettings(backend="torch", resolution=TINY_RES, threads=1, rounds=3, warmup_iters=1)


def _run(out: Path, settings: MeasureSettings = SETTINGS, **kw) -> Profile:
    hw = detect_hardware()
    return run_measurement(TINY, settings, resolve_device("cpu", hw), hw, out=out, **kw)


def test_interrupted_measurement_resumes_without_remeasuring(tmp_path: Path) -> None:
    out = tmp_path / "p.json"

    def interrupt(event: Progress) -> None:
        if event.stage == "reduce: measuring" and event.done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(out, progress=interrupt)
    assert not out.exists()
    ckpt = json.loads(checkpoint_path(out).read_text())
    assert ckpt["blocks"]["normal"]["rounds_done"] == 3
    assert ckpt["blocks"]["reduce"]["rounds_done"] == 1
    assert "ms" not in ckpt["blocks"]

    seen: list[str] = []
    profile = _run(out, resume=True, progress=lambda e: seen.append(e.stage))
    assert not checkpoint_path(out).exists()
    assert "normal: measuring" not in seen and "counting parameters and MACs" in seen
    raw = json.loads(out.read_text())
    for op, samples in ckpt["blocks"]["normal"]["samples"].items():
        assert raw["costs"]["normal"][op.split("/")[1]]["latency_ms"]["absolute"]["samples"] == samples
    for op, samples in ckpt["blocks"]["reduce"]["samples"].items():
        kept = raw["costs"]["reduce"][op.split("/")[1]]["latency_ms"]["absolute"]["samples"]
        assert kept[0] == samples[0] and len(kept) == 3
    assert profile.settings["rounds"] == 3


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "p.json"

    def interrupt(event: Progress) -> None:
        if event.stage == "normal: measuring" and event.done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(out, progress=interrupt)
    other = MeasureSettings(backend="torch", resolution=TINY_RES, threads=1, rounds=4, warmup_iters=1)
    with pytest.raises(UserInputError, match="different settings"):
        _run(out, other, resume=True)
    assert not out.exists()


def test_paired_differences_are_probe_minus_bracketing_baseline(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    cost = p.cost("normal", "conv_3x3_x2", "latency_ms")
    assert cost.measurement is not None and cost.absolute is not None
    # each paired difference is below the probe's own time by a positive baseline time
    for diff, absolute in zip(cost.measurement.samples, cost.absolute.samples):
        assert 0 < absolute - diff < 10 * p.baseline["latency_ms"].value
    assert cost.value == pytest.approx(cost.measurement.median)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"rounds": 2}, "At least 3"), ({"threads": 0}, "thread count"), ({"warmup_iters": -1}, "cannot be negative"),
     ({"instances": 0}, "At least one instance"), ({"baseline_instances": 0}, "At least one instance")],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        MeasureSettings(**kwargs)


def test_bad_resolution_writes_nothing(tmp_path: Path) -> None:
    bad = MeasureSettings(backend="torch", resolution=(30, 64), threads=1, rounds=3)
    with pytest.raises(UserInputError, match="not divisible"):
        _run(tmp_path / "p.json", bad)
    assert list(tmp_path.iterdir()) == []


def test_rounds_alternate_between_instances(tmp_path: Path) -> None:
    """Round r uses instance r % instances of every probe; the baseline brackets rotate through theirs run by run."""
    from casprof.backends.base import Runner

    used: list[int] = []
    original = Runner.time_once

    def spy(self: Runner) -> float:
        used.append(id(self))
        return original(self)

    settings = MeasureSettings(backend="onnxruntime", resolution=TINY_RES, threads=1, rounds=4, warmup_iters=0, instances=2,
                               baseline_instances=3)
    from tests.conftest import MINI

    hw = detect_hardware()
    Runner.time_once = spy  # type: ignore[method-assign]
    try:
        profile = run_measurement(MINI, settings, resolve_device("cpu", hw), hw, out=tmp_path / "p.json")
    finally:
        Runner.time_once = original  # type: ignore[method-assign]
    from casprof.probes import measurement_blocks

    blocks = measurement_blocks(MINI)
    per_round = 2 * len(blocks[0][1]) + 1  # the normal block: its probes, each bracketed by baseline runs
    assert blocks[0][0] == "normal" and per_round == 2 * 10 + 1
    assert len(used) == 4 * sum(2 * len(probes) + 1 for _, probes in blocks)
    normal = used[:4 * per_round]
    probes = [set(normal[i * per_round + 1:(i + 1) * per_round:2]) for i in range(4)]  # odd positions
    assert probes[0].isdisjoint(probes[1])  # consecutive rounds run other instances of the probes
    assert probes[0] == probes[2] and probes[1] == probes[3]
    brackets = [b for i in range(4) for b in normal[i * per_round:(i + 1) * per_round:2]]  # even positions
    assert len(set(brackets)) == 3 and set(brackets).isdisjoint(probes[0] | probes[1])
    assert all(brackets[k] == brackets[k + 3] != brackets[k + 1] for k in range(len(brackets) - 3))  # run-by-run rotation
    assert profile.settings["baseline_instances"] == 3
    assert profile.settings["instances"] == 2
    assert profile.backend.details["intra_op_thread_pool"] == "per session"  # the shared pool is opt-in
    assert profile.backend.details["intra_op_spinning"] is False
