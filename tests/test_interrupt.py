"""Ctrl-C is not lost when a library swallows the ``KeyboardInterrupt`` it caused.

Real SIGINTs to this process (``signal.raise_signal``); the swallowing is what CPython did once in
about fifty interrupted ``casprof fidelity`` runs (the exception raised in ``copyreg._slotnames``,
called from C by ``copy.deepcopy``, never came out), done here by an ``except BaseException: pass``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from casprof.cli._interrupt import watch_interrupts
from casprof.cli._progress import stage_progress
from casprof.cli.common import resumable
from casprof.measure import Progress


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """SIGINT with Python's own handler, as in a terminal: a test run started in the background of a
    non-interactive shell inherits SIGINT ignored, and Python then installs no handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _swallowed_sigint() -> None:
    """A real SIGINT whose KeyboardInterrupt something below us clears."""
    try:
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # the handler runs at the next check of the interpreter, well before this ends
            pass
    except BaseException:  # noqa: BLE001 - what the swallowing library does
        return
    raise AssertionError("the SIGINT raised no KeyboardInterrupt")


def test_a_swallowed_interrupt_is_raised_again_at_the_next_progress_event(python_sigint: None) -> None:
    seen: list[Progress] = []
    with watch_interrupts() as watch:
        on_progress = watch.checked(seen.append)
        on_progress(Progress("measuring", 0, 2))
        assert not watch.requested
        _swallowed_sigint()
        assert watch.requested
        with pytest.raises(KeyboardInterrupt):
            on_progress(Progress("measuring", 1, 2))
    assert [e.done for e in seen] == [0]  # the event after the interruption is not drawn
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_an_ignored_sigint_stays_ignored() -> None:
    """A background job of a shell script starts with SIGINT ignored; the watch leaves that alone."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with watch_interrupts() as watch:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            watch.check()  # nothing to raise
            assert not watch.requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_watch_inside_a_watch_is_the_same_watch(python_sigint: None) -> None:
    """Nested blocks share one watch: an inner, separate one would never see the signal."""
    with watch_interrupts() as outer, watch_interrupts() as inner:
        assert inner is outer
        _swallowed_sigint()
        with pytest.raises(KeyboardInterrupt):
            inner.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_progress_bars_raise_a_swallowed_interrupt_and_resumable_exits_130(
        python_sigint: None, capsys: pytest.CaptureFixture[str]) -> None:
    """What the measuring commands do: ``resumable`` around ``stage_progress``."""
    with pytest.raises(SystemExit) as exc:
        with resumable(None, "rounds", resume=False), stage_progress() as on_progress:
            on_progress(Progress("measuring", 0, 2))
            _swallowed_sigint()
            on_progress(Progress("measuring", 1, 2))
            raise AssertionError("the interruption was lost")
    assert exc.value.code == 130
    assert "Interrupted before any rounds were finished; nothing to resume." in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_fidelity_benchmark_interrupted_in_its_short_profile_exits_130_with_one_sentence(
        python_sigint: None, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """``benchmarks/fidelity_cpu.py --short`` measures a real profile first (in a temporary folder,
    nothing to resume): a Ctrl-C there, even one swallowed, ends in one sentence and exit 130."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "fidelity_cpu", Path(__file__).resolve().parent.parent / "benchmarks" / "fidelity_cpu.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    events: list[str] = []

    def on_progress(event: Progress) -> None:
        events.append(event.stage)
        if len(events) == 2:
            _swallowed_sigint()

    with pytest.raises(SystemExit) as exc, watch_interrupts() as interrupts:
        bench.short_profile("onnxruntime", tmp_path, interrupts.checked(on_progress))
    assert exc.value.code == 130 and len(events) == 2
    err = capsys.readouterr().err
    assert "Interrupted while measuring --short's own profile (in a temporary folder): nothing to resume." in err
    assert "Traceback" not in err and not (tmp_path / "tiny-onnxruntime.json").exists()
