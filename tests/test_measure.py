"""The measurement protocol: pairing, interruption and resume, refusals."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from casprof.devices import resolve_device
from casprof.errors import UserInputError
from casprof.hardware import detect_hardware
from casprof.measure import MeasureSettings, Progress, checkpoint_path, run_measurement
from casprof.profile import Profile
from tests.conftest import TINY, TINY_RES
from tests._runner_support import ScriptedRunner

SETTINGS = MeasureSettings(backend="torch", resolution=TINY_RES, threads=1, rounds=3, warmup_iters=1, sweeps=1)


def _run(out: Path, settings: MeasureSettings = SETTINGS, **kw) -> Profile:
    hw = detect_hardware()
    return run_measurement(TINY, settings, resolve_device("cpu", hw), hw, out=out, **kw)


@pytest.mark.parametrize("sweeps", [1, 2])
def test_interrupted_measurement_resumes_without_remeasuring(tmp_path: Path, sweeps: int) -> None:
    """Interrupted in the reduce block (with two sweeps: in the second sweep, after its first pass)."""
    out = tmp_path / "p.json"
    settings = MeasureSettings(backend="torch", resolution=TINY_RES, threads=1, rounds=3, warmup_iters=1, sweeps=sweeps)
    reduce_stage = "reduce: measuring" if sweeps == 1 else "reduce (sweep 2/2): measuring"
    normal_stages = {"normal: measuring", "normal (sweep 1/2): measuring", "normal (sweep 2/2): measuring"}

    def interrupt(event: Progress) -> None:
        if event.stage == reduce_stage and event.done == sweeps:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(out, settings, progress=interrupt)
    assert not out.exists()
    ckpt = json.loads(checkpoint_path(out).read_text())
    assert ckpt["blocks"]["normal"]["rounds_done"] == 3
    assert ckpt["blocks"]["reduce"]["rounds_done"] == sweeps  # sweep 1 of 2 ran rounds 1-2 of every block
    assert ("ms" in ckpt["blocks"]) == (sweeps == 2)

    seen: list[str] = []
    profile = _run(out, settings, resume=True, progress=lambda e: seen.append(e.stage))
    assert not checkpoint_path(out).exists()
    assert normal_stages.isdisjoint(seen) and "counting parameters and MACs" in seen
    raw = json.loads(out.read_text())
    for op, samples in ckpt["blocks"]["normal"]["samples"].items():
        assert raw["costs"]["normal"][op.split("/")[1]]["latency_ms"]["absolute"]["samples"] == samples
    for op, samples in ckpt["blocks"]["reduce"]["samples"].items():
        kept = raw["costs"]["reduce"][op.split("/")[1]]["latency_ms"]["absolute"]["samples"]
        assert kept[:sweeps] == samples and len(kept) == 3
    assert profile.settings["rounds"] == 3 and profile.settings["sweeps"] == sweeps


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "p.json"

    def interrupt(event: Progress) -> None:
        if event.stage == "normal: measuring" and event.done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(out, progress=interrupt)
    other = MeasureSettings(backend="torch", resolution=TINY_RES, threads=1, rounds=4, warmup_iters=1)
    with pytest.raises(UserInputError, match=r"does not fit this run \(its settings differ\); rerun without --resume"):
        _run(out, other, resume=True)
    assert not out.exists()


def test_paired_differences_are_probe_minus_bracketing_baseline(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    cost = p.cost("normal", "conv_3x3_x2", "latency_ms")
    assert cost.measurement is not None and cost.absolute is not None
    # each paired difference is the probe's own time less the mean of two of the baseline's runs
    base = p.baseline["latency_ms"].measurement
    assert base is not None
    for diff, absolute in zip(cost.measurement.samples, cost.absolute.samples):
        assert 0 < min(base.samples) - 1e-9 <= absolute - diff <= max(base.samples) + 1e-9
    assert cost.value == pytest.approx(cost.measurement.median)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"rounds": 2}, "At least 3"), ({"threads": 0}, "thread count"), ({"warmup_iters": -1}, "cannot be negative"),
     ({"warmup_passes": -1}, "cannot be negative"), ({"sweeps": 0}, "between 1 and the rounds"),
     ({"rounds": 3, "sweeps": 4}, "between 1 and the rounds"), ({"instances": 0}, "At least one instance"), ({"baseline_instances": 0}, "At least one instance")],
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
    warmed: list[tuple[int, int]] = []
    original, original_warmup = Runner.time_once, Runner.warmup
    made = itertools.count()

    def ident(runner: Runner) -> int:  # not id(): a closed block's runners are freed and their ids reused
        if not hasattr(runner, "_test_ident"):
            runner._test_ident = next(made)  # type: ignore[attr-defined]
        return runner._test_ident  # type: ignore[attr-defined]

    def spy(self: Runner) -> float:
        used.append(ident(self))
        return original(self)

    def spy_warmup(self: Runner, min_iters: int = 3, min_seconds: float = 0.0) -> int:
        warmed.append((ident(self), min_iters))
        return original_warmup(self, min_iters, min_seconds)

    settings = MeasureSettings(backend="onnxruntime", resolution=TINY_RES, threads=1, rounds=4, warmup_iters=0, instances=2,
                               baseline_instances=3, sweeps=1, probes_per_bracket=1)
    from tests.conftest import MINI

    hw = detect_hardware()
    Runner.time_once, Runner.warmup = spy, spy_warmup  # type: ignore[method-assign]
    try:
        profile = run_measurement(MINI, settings, resolve_device("cpu", hw), hw, out=tmp_path / "p.json")
    finally:
        Runner.time_once, Runner.warmup = original, original_warmup  # type: ignore[method-assign]
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
    # the sweep's three baseline instances serve all its blocks: opened and warmed alone once
    baseline_ids = set(brackets)
    assert len(set(used)) == 3 + 2 * sum(len(probes) for _, probes in blocks)  # no block opened baselines of its own
    assert baseline_ids <= set(used[-per_round:])  # the last block's brackets ran on the first block's instances
    assert sorted(r for r, iters in warmed if iters == 0 and r in baseline_ids) == sorted(baseline_ids)
    assert profile.settings["baseline_instances"] == 3
    assert profile.settings["instances"] == 2
    assert profile.settings["probes_per_bracket"] == 1
    # before its rounds, every instance of the block ran once more, in turn with the others (one warm pass)
    in_turn = [r for r, iters in warmed if iters == 1]
    assert len(in_turn) == sum(2 * len(probes) + 3 for _, probes in blocks)
    assert set(in_turn[:2 * 10 + 3]) == set(normal)
    assert profile.backend.details["intra_op_thread_pool"] == "per session"  # the shared pool is opt-in
    assert profile.backend.details["intra_op_spinning"] is False


def test_time_bracketed_pairs_each_network_with_the_runs_around_it() -> None:
    from casprof.measure import time_bracketed

    log: list[str] = []
    baselines = [ScriptedRunner(f"B{i}", [100.0 + i, 110.0 + i], log) for i in range(3)]
    got = time_bracketed([("x", ScriptedRunner("x", [150.0], log)), ("y", ScriptedRunner("y", [170.0], log))], baselines, first=4)
    assert log == ["B1", "x", "B2", "y", "B0"]  # baseline run j uses instance (first + j) % 3
    assert got.baseline == [101.0, 102.0, 100.0]
    assert got.times == {"x": 150.0, "y": 170.0}
    assert got.brackets == {"x": 101.5, "y": 101.0}


def test_time_bracketed_puts_probes_per_bracket_between_two_baseline_runs() -> None:
    from casprof.measure import baseline_runs_per_round, time_bracketed

    log: list[str] = []
    baselines = [ScriptedRunner(f"B{i}", [100.0 + i, 110.0 + i], log) for i in range(3)]
    networks = [(n, ScriptedRunner(n, [t], log)) for n, t in (("x", 150.0), ("y", 170.0), ("z", 190.0))]
    got = time_bracketed(networks, baselines, first=2, per_bracket=2)
    assert log == ["B2", "x", "y", "B0", "z", "B1"]
    assert baseline_runs_per_round(3, 2) == 3 == len(got.baseline)
    assert got.brackets == {"x": 101.0, "y": 101.0, "z": 100.5}
    assert got.times == {"x": 150.0, "y": 170.0, "z": 190.0}
    assert [baseline_runs_per_round(n, k) for n, k in ((10, 1), (10, 2), (9, 2), (3, 2), (14, 2), (1, 5))] == [11, 6, 6, 3, 8, 2]
    with pytest.raises(ValueError):
        time_bracketed(networks, baselines, first=0, per_bracket=0)


def test_profiles_bracket_two_probes_by_default(tmp_path: Path) -> None:
    """``B p1 p2 B p3 p4 ... B``: every block's round runs ceil(n / 2) + 1 baseline runs, and the
    baseline instances rotate across rounds as they do with one probe per bracket."""
    from casprof.backends.base import Runner
    from casprof.probes import measurement_blocks
    from tests.conftest import MINI

    used: list[int] = []
    original = Runner.time_once

    def spy(self: Runner) -> float:
        used.append(id(self))
        return original(self)

    settings = MeasureSettings(backend="onnxruntime", resolution=TINY_RES, threads=1, rounds=3, warmup_iters=0,
                               baseline_instances=4, sweeps=1)
    assert settings.probes_per_bracket == 2
    hw = detect_hardware()
    Runner.time_once = spy  # type: ignore[method-assign]
    try:
        profile = run_measurement(MINI, settings, resolve_device("cpu", hw), hw, out=tmp_path / "p.json")
    finally:
        Runner.time_once = original  # type: ignore[method-assign]
    blocks = measurement_blocks(MINI)
    assert len(used) == 3 * sum(len(m) + (len(m) + 1) // 2 + 1 for _, m in blocks)
    normal = used[:3 * (10 + 6)]
    round0 = normal[:16]
    baseline_ids = {round0[i] for i in range(0, 16, 3)}
    assert len(baseline_ids) == 4 and all(round0[i] not in baseline_ids for i in range(16) if i % 3)
    assert profile.settings["probes_per_bracket"] == 2
    assert "B p1 p2 B p3 p4" in profile.settings["order"]
    # every session kept its activations in the process's one CPU arena (the default), and said so
    assert profile.settings["ort_shared_arena"] is True
    assert profile.backend.details["cpu_memory_arena"] == "shared by every session of the process"
    assert profile.costs["normal"]["conv_3x3"]["latency_ms"].measurement is not None


def test_shared_arena_is_the_onnxruntime_default_and_not_claimed_by_other_backends() -> None:
    assert MeasureSettings(backend="onnxruntime").ort_shared_arena is True
    assert MeasureSettings(backend="onnxruntime", ort_shared_arena=False).to_dict()["ort_shared_arena"] is False
    assert MeasureSettings(backend="torch").to_dict()["ort_shared_arena"] is False  # nothing of ONNX Runtime's to share


def test_warm_interleaved_runs_every_instance_once_per_pass_in_a_seeded_order() -> None:
    from casprof.measure import warm_interleaved

    def order(seed: str) -> list[str]:
        log: list[str] = []
        warm_interleaved([ScriptedRunner(n, [], log) for n in "abcdef"], passes=2, seed=seed)
        return log

    first = order("s")
    assert sorted(first[:6]) == sorted(first[6:]) == [f"warm:{n}" for n in "abcdef"]
    assert first == order("s") and first[:6] != first[6:]  # reproducible, reshuffled each pass
    assert order("s") != order("t")
    log: list[str] = []
    warm_interleaved([ScriptedRunner("a", [], log)], passes=0, seed="s")
    assert log == []


@pytest.fixture()
def exports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The class names of the models ONNX Runtime runners export (the real exporter still runs)."""
    from casprof.backends import onnxruntime_runner

    names: list[str] = []
    real_export = onnxruntime_runner.export_onnx

    def counting_export(model, *args, **kwargs):
        names.append(type(model).__name__)
        return real_export(model, *args, **kwargs)

    monkeypatch.setattr(onnxruntime_runner, "export_onnx", counting_export)
    return names


def test_sweeps_spread_every_block_over_the_run_and_export_each_network_once(tmp_path: Path, exports: list[str]) -> None:
    from casprof.measure import iter_costs
    from casprof.probes import measurement_blocks
    from tests.conftest import MINI

    rounds: list[tuple[str, int]] = []

    def record(event: Progress) -> None:
        if event.stage.endswith(": measuring") and event.detail:
            rounds.append((event.stage.removesuffix(": measuring"), event.done))

    settings = MeasureSettings(backend="onnxruntime", resolution=TINY_RES, threads=1, rounds=5, warmup_iters=1, sweeps=2)
    hw = detect_hardware()
    profile = run_measurement(MINI, settings, resolve_device("cpu", hw), hw, out=tmp_path / "p.json", progress=record)
    labels = [label for label, _ in measurement_blocks(MINI)]
    # sweep 1 runs rounds 1-3 of every block in turn, sweep 2 rounds 4-5
    expected = [(f"{label} (sweep 1/2)", r) for label in labels for r in range(3)]
    expected += [(f"{label} (sweep 2/2)", r) for label in labels for r in range(3, 5)]
    assert rounds == expected
    probes = {p.key for _, members in measurement_blocks(MINI) for p in members}
    assert len(exports) == len(probes) + 1  # every probe and the baseline once, reused by later blocks and sweeps
    measured = [c for _, _, c in iter_costs(profile, "latency_ms") if c.measurement is not None]
    assert measured and all(len(c.measurement.samples) == 5 for c in measured)
    assert profile.settings["sweeps"] == 2
    # the probes' weights come from the settings' seed: the baseline exports to the same file in every measurement
    from casprof.backends.onnx_export import export_onnx, file_sha256
    from casprof.probes import BASELINE, build_probe

    again = tmp_path / "baseline-again.onnx"
    export_onnx(build_probe(MINI, BASELINE, seed=settings.seed), (1, MINI.in_channels, *TINY_RES), again)
    assert profile.backend.details["onnx_sha256"] == file_sha256(again)


def test_open_reusing_exports_a_network_once(tmp_path: Path, exports: list[str]) -> None:
    """A later sweep (or block) opens new ONNX Runtime sessions on the file the first opening exported."""
    from contextlib import ExitStack

    from casprof.measure import make_runner_spec, open_reusing
    from casprof.probes import BASELINE, build_probe
    from tests.conftest import MINI

    settings = MeasureSettings(backend="onnxruntime", resolution=TINY_RES, threads=1, rounds=3, warmup_iters=1)
    spec = make_runner_spec(MINI, settings, resolve_device("cpu", detect_hardware()), tmp_path)
    exported: dict[str, Path] = {}
    model = build_probe(MINI, BASELINE)
    outputs = []
    for sweep in range(2):
        with ExitStack() as stack:
            runners = open_reusing(stack, "baseline", model, settings, spec, 2, exported)
            assert len(runners) == 2
            outputs.append([r.time_once() for r in runners])
    assert exports == ["CASNetwork"] and exported["baseline"].is_file()
    assert all(t > 0 for pair in outputs for t in pair)
