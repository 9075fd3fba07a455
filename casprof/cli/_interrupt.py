"""Ctrl-C that is not lost: a SIGINT remembered as well as raised.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to be.
When that is Python code called back from C (``copy.deepcopy`` of a network reaches
``copyreg._slotnames`` through ``object.__reduce_ex__``), the exception can be cleared on its way
out: one ``casprof fidelity`` in about fifty, interrupted while it opened a sweep's networks, ran
on to its end and exited 0. :class:`InterruptWatch` remembers the signal, so the next progress
event raises the interruption again (:func:`casprof.cli._progress.stage_progress` does that for
every command with progress bars).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from casprof.measure import Progress as ProgressEvent
from casprof.measure import ProgressCallback


class InterruptWatch:
    """A SIGINT handler that raises ``KeyboardInterrupt`` as Python's own does and remembers that it did."""

    def __init__(self) -> None:
        self.requested = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a SIGINT came (again, if something swallowed the first)."""
        if self.requested:
            raise KeyboardInterrupt

    def checked(self, progress: ProgressCallback) -> ProgressCallback:
        """``progress`` that first checks for an interruption: long jobs report progress often."""

        def on_progress(event: ProgressEvent) -> None:
            self.check()
            progress(event)

        return on_progress


@contextmanager
def watch_interrupts() -> Iterator[InterruptWatch]:
    """An :class:`InterruptWatch` as the SIGINT handler while the block runs, where SIGINT has
    Python's default handler; a SIGINT ignored (a background job of a shell script) or handled by
    someone else is left as it is, and the watch then never sees one. Inside another watch's block,
    that watch."""
    current = signal.getsignal(signal.SIGINT)
    if isinstance(getattr(current, "__self__", None), InterruptWatch):
        yield current.__self__  # type: ignore[union-attr]
        return
    watch = InterruptWatch()
    if threading.current_thread() is not threading.main_thread() or current is not signal.default_int_handler:
        yield watch
        return
    previous = signal.signal(signal.SIGINT, watch.handler)
    try:
        yield watch
    finally:
        signal.signal(signal.SIGINT, previous)
