"""A rich progress bar on stderr fed by :class:`casprof.measure.Progress` events (one line per stage)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from casprof.cli._app import err_console
from casprof.cli._interrupt import watch_interrupts
from casprof.measure import Progress as ProgressEvent
from casprof.measure import ProgressCallback


@contextmanager
def stage_progress() -> Iterator[ProgressCallback]:
    """Yield a callback that draws one bar per stage named in the events, after raising an
    interruption (Ctrl-C) that came meanwhile again, in case a library swallowed it
    (:mod:`casprof.cli._interrupt`)."""
    with watch_interrupts() as interrupts, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"), console=err_console, transient=False,
    ) as bar:
        tasks: dict[str, int] = {}

        def on_progress(event: ProgressEvent) -> None:
            interrupts.check()
            if event.stage not in tasks:
                tasks[event.stage] = bar.add_task(event.stage, total=event.total, detail="")
            bar.update(tasks[event.stage], completed=event.done, total=event.total, detail=event.detail)

        yield on_progress
