"""Typer plumbing shared by ``casprof`` and ``cas``: error handling, consoles, app factory."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from casprof.errors import CasError

#: Set to 1 to see the traceback of an internal error instead of its one-line summary.
DEBUG_ENV = "CASPROF_DEBUG"

#: Results go to stdout; messages, progress and errors to stderr.
out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class ErrorHandlingGroup(TyperGroup):
    """Turn the toolkit's own errors into one sentence on stderr and an exit status.

    Bad input (:class:`~casprof.errors.UserInputError`) exits 2, a failure of the work exits 1,
    an interruption exits 130, a reader that closed the pipe early (``casprof show P | head``) ends it
    quietly with 141 as SIGPIPE would; none of them prints a traceback. Any other exception is a bug: one
    line naming it and exit 1 (``CASPROF_DEBUG=1`` lets the traceback through).
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CasError as exc:
            # literal text: messages name pip extras and shapes in brackets, which are not markup
            err_console.print(Text.assemble(("Error:", "bold red"), " ", str(exc)), highlight=False)
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("Interrupted.")
            raise typer.Exit(code=130) from None
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(code=141) from None
        except Exception as exc:
            if _is_cli_control(exc) or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            # a bug, not the user's doing: one line that says so and how to see the traceback
            err_console.print(Text.assemble(
                ("Internal error:", "bold red"), f" {type(exc).__name__}: {exc} (a bug; run again with {DEBUG_ENV}=1 "
                "for the traceback, and report it)."), highlight=False)
            raise typer.Exit(code=1) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError
    (the recipe of Python's signal module documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor behind stdout (a test runner's capture)
        pass


def _is_cli_control(exc: Exception) -> bool:
    """typer's and click's own exits, aborts and usage errors, which they turn into messages themselves."""
    return any(c.__module__.split(".")[0] in ("typer", "click") for c in type(exc).__mro__)


def make_app(name: str, help: str) -> typer.Typer:
    """A typer app with the project's settings (no pretty tracebacks, help on no arguments)."""
    return typer.Typer(
        name=name,
        help=help,
        cls=ErrorHandlingGroup,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="rich",
    )
