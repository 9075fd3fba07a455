"""Interrupted ``casprof fidelity`` and ``casprof calibrate`` runs resume from their checkpoints.

Real runs of the tiny profile: the interruption is a real ``KeyboardInterrupt`` raised from the
progress callback (where Ctrl-C would land) or a real SIGINT to a real ``casprof`` process.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casprof.block_checkpoint import BlockCheckpoint, BlockTimes, checkpoint_key
from casprof.errors import UserInputError
from casprof.profile import Profile
from tests._fidelity_support import two_sweep_order, warmed_blocks

#: The block labels of the checks below (two blocks of networks).
TWO_BLOCKS = ("block 1/2", "block 2/2")


def _copy(profile: Path, folder: Path) -> Path:
    """The tiny profile in a folder of the test's own (checkpoints are written beside the profile)."""
    return Path(shutil.copy(profile, folder / "tiny.json"))


def _interrupt_at(stage_prefix: str, seen: list[str]):  # type: ignore[no-untyped-def]
    """A progress callback that records the stages and raises Ctrl-C's exception when one starts with ``stage_prefix``."""
    def on_progress(event) -> None:  # type: ignore[no-untyped-def]
        seen.append(event.stage)
        if event.stage.startswith(stage_prefix):
            raise KeyboardInterrupt
    return on_progress


def test_block_times_and_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    key = checkpoint_key("fidelity", "abc", {"seed": 1}, [("block 1/1", ["a", "b"])], "hw")
    times = BlockTimes({"a": ([1.0, 2.0], [3.0]), "b": ([4.0], [5.0])}, {"a": ([9.0, 9.5], [9.1]), "b": ([9.2], [9.3])},
                       [9.0, 9.1, 9.2])
    assert BlockTimes.from_dict(json.loads(json.dumps(times.to_dict()))) == times
    fresh = BlockCheckpoint.open(path, key, resume=True)  # nothing there yet: a fresh one
    assert fresh.done == set() and fresh.resumed_count == 0 and not path.exists()
    fresh.record(0, 0, times)
    back = BlockCheckpoint.open(path, key, resume=True)
    assert back.is_done(0, 0) and not back.is_done(1, 0) and back.measured == {0: times} and back.resumed_count == 1
    assert back.earlier_seconds >= 0 and back.elapsed() >= back.earlier_seconds
    assert BlockCheckpoint.open(path, key, resume=False).done == set()  # without --resume: afresh
    back.discard()
    assert not path.exists()


def test_a_checkpoint_of_another_check_or_a_broken_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    key = checkpoint_key("fidelity", "abc", {"seed": 1}, [("block 1/1", ["a"])], "hw")
    BlockCheckpoint.open(path, key, resume=False).record(0, 0, BlockTimes({"a": ([1.0], [])}, {"a": ([2.0], [])}, [2.0]))
    other = checkpoint_key("fidelity", "abd", {"seed": 2}, [("block 1/1", ["a"])], "hw")
    with pytest.raises(UserInputError, match=r"does not fit this run \(its profile and settings differ\); rerun without --resume"):
        BlockCheckpoint.open(path, other, resume=True)
    for text in ("{", json.dumps({"schema_version": 1, "key": key}), json.dumps({**json.loads(path.read_text()), "schema_version": 99}),
                 json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "schema_version"})):
        path.write_text(text)
        with pytest.raises(UserInputError, match="checkpoint"):
            BlockCheckpoint.open(path, key, resume=True)


def test_an_interrupted_fidelity_check_resumes_without_timing_finished_blocks_again(tiny_profile_path: Path,
                                                                                     tmp_path: Path) -> None:
    from casprof.fidelity import FidelitySettings, run_fidelity
    from casprof.fidelity_report import report_markdown
    from casprof.hardware import detect_hardware

    profile = Profile.load(tiny_profile_path)
    hw = detect_hardware()
    ckpt = tmp_path / "check.partial.json"
    # 5 networks in blocks of 3 and 2, 2 sweeps: 4 (sweep, block) timings, in this order
    settings = FidelitySettings(samples=5, seed=2, rounds=8, sweeps=2, block_size=3, extremes=False)
    labels = two_sweep_order(TWO_BLOCKS, 2)
    first: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_fidelity(profile, hw, settings, checkpoint=ckpt, progress=_interrupt_at(f"warming up ({labels[2]})", first))
    assert warmed_blocks(first) == labels[:3]
    kept = json.loads(ckpt.read_text())
    assert kept["done"] == [[0, 0], [0, 1]]  # the first sweep, both blocks
    kept_times = {k: v for block in kept["measured"].values() for k, v in block["times"].items()}
    assert len(kept_times) == 5 and all(len(a) == len(b) == 2 for a, b in kept_times.values())  # rounds 0-3: 2 per instance

    again: list[str] = []
    report = run_fidelity(profile, hw, settings, checkpoint=ckpt, resume=True, progress=lambda e: again.append(e.stage))
    assert warmed_blocks(again) == labels[2:]  # sweep 1 is not timed again
    assert not ckpt.exists() and report.settings["resumed_block_sweeps"] == 2
    for r in report.networks:  # the first sweep's times are the kept ones, the second sweep's follow them
        assert [list(s[:2]) for s in r.samples_ms] == kept_times[r.name]
        assert len(r.samples_ms[0]) == len(r.samples_ms[1]) == 4
    assert report.seconds >= kept["seconds"]
    assert "resumed after an interruption: 2 block sweep(s)" in report_markdown(report)


def test_resuming_with_other_settings_is_refused_before_anything_is_timed(tiny_profile_path: Path, tmp_path: Path) -> None:
    from casprof.fidelity import FidelitySettings, run_fidelity
    from casprof.hardware import detect_hardware

    profile, hw, ckpt = Profile.load(tiny_profile_path), detect_hardware(), tmp_path / "check.partial.json"
    settings = FidelitySettings(samples=5, seed=2, rounds=4, sweeps=2, block_size=3, extremes=False)
    with pytest.raises(KeyboardInterrupt):
        run_fidelity(profile, hw, settings, checkpoint=ckpt,
                     progress=_interrupt_at(f"warming up ({two_sweep_order(TWO_BLOCKS, 2)[1]})", []))
    stages: list[str] = []
    with pytest.raises(UserInputError, match=r"\(its settings differ\)"):
        run_fidelity(profile, hw, FidelitySettings(samples=5, seed=3, rounds=4, sweeps=2, block_size=3, extremes=False),
                     checkpoint=ckpt, resume=True, progress=lambda e: stages.append(e.stage))
    assert stages == [] and ckpt.exists()  # refused up front; the checkpoint is left for the right command


def test_an_interrupted_calibration_resumes(tiny_profile_path: Path, tmp_path: Path) -> None:
    from casprof.calibration import CalibrationSettings, run_calibration
    from casprof.hardware import detect_hardware

    profile, hw, ckpt = Profile.load(tiny_profile_path), detect_hardware(), tmp_path / "cal.partial.json"
    settings = CalibrationSettings(networks=4, seed=3, rounds=8, sweeps=2, block_size=2, max_drift_pct=1000)
    first: list[str] = []
    labels = two_sweep_order(TWO_BLOCKS, 3)
    with pytest.raises(KeyboardInterrupt):
        run_calibration(profile, hw, settings, checkpoint=ckpt, progress=_interrupt_at(f"warming up ({labels[3]})", first))
    assert warmed_blocks(first) == labels
    second_sweeps_first = int(labels[2].split()[1].split("/")[0]) - 1
    assert json.loads(ckpt.read_text())["done"] == sorted([[0, 0], [0, 1], [1, second_sweeps_first]])
    again: list[str] = []
    # another --max-drift is judged after the timing: the checkpoint still fits
    cal = run_calibration(profile, hw, CalibrationSettings(networks=4, seed=3, rounds=8, sweeps=2, block_size=2,
                                                           max_drift_pct=2000),
                          checkpoint=ckpt, resume=True, progress=lambda e: again.append(e.stage))
    assert warmed_blocks(again) == labels[3:] and not ckpt.exists()
    assert len(cal.networks) == 4 and all(n.measured_ms > 0 for n in cal.networks)


@pytest.mark.parametrize("command", ["fidelity", "calibrate"])
def test_ctrl_c_on_the_console_script_keeps_the_finished_blocks_and_resume_finishes(
        tiny_profile_path: Path, tmp_path: Path, command: str) -> None:
    """A real SIGINT to a real ``casprof`` process once a block is kept: exit 130 and one sentence;
    ``--resume`` finishes the job and removes the checkpoint."""
    exe = Path(sys.executable).parent / "casprof"
    profile = _copy(tiny_profile_path, tmp_path)
    ckpt = profile.with_name(f"tiny.json.{'fidelity' if command == 'fidelity' else 'calibration'}.partial.json")
    out = tmp_path / "report"
    out.mkdir()
    # enough rounds that the second sweep is still running when the signal comes (a few seconds at 32x64)
    common = [str(exe), command, "--profile", str(profile), "--rounds", "200", "--sweeps", "2", "--build-workers", "1"]
    args = (["--samples", "5", "--no-extremes", "--no-retime-structure", "--report", str(out)] if command == "fidelity"
            else ["--networks", "3", "--max-drift", "1000", "--out", str(out / "calibrated.json")])
    # a process started in the background of a non-interactive shell inherits SIGINT ignored, and Python then sets
    # no KeyboardInterrupt handler: give the child the default disposition, as a terminal's foreground job has
    proc = subprocess.Popen([*common, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"Interrupted; the finished blocks of networks are kept in {ckpt}" in " ".join(err.split())
    assert "Traceback" not in err and ckpt.exists() and list(out.iterdir()) == []

    done = subprocess.run([*common, *args, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"Resuming from {ckpt}" in " ".join(done.stderr.split()) and not ckpt.exists()
    if command == "fidelity":
        assert json.loads((out / "fidelity.json").read_text())["settings"]["resumed_block_sweeps"] == 1
    else:
        assert Profile.load(out / "calibrated.json").calibration is not None


@pytest.mark.parametrize("command", ["fidelity", "calibrate"])
def test_resume_from_a_checkpoint_of_another_run_exits_2_and_keeps_it(tiny_profile_path: Path, tmp_path: Path,
                                                                        command: str) -> None:
    from typer.testing import CliRunner

    from casprof.cli.app import app

    profile = _copy(tiny_profile_path, tmp_path)
    ckpt = profile.with_name(f"tiny.json.{'fidelity' if command == 'fidelity' else 'calibration'}.partial.json")
    key = checkpoint_key("measure", "0" * 16, {}, [], "hw")  # nothing this command would make
    BlockCheckpoint.open(ckpt, key, resume=False).record(0, 0, BlockTimes({}, {}, []))
    before = ckpt.read_text()
    extra = ["--samples", "5"] if command == "fidelity" else ["--networks", "3"]
    result = CliRunner().invoke(app, [command, "--profile", str(profile), "--rounds", "2", "--sweeps", "1", *extra, "--resume"])
    assert result.exit_code == 2, result.output
    assert f"Resuming from {ckpt}." in result.output and "does not fit this run (its " in result.output
    assert "rerun without --resume to start afresh." in result.output and "Traceback" not in result.output
    assert ckpt.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(["tiny.json", ckpt.name])
