"""Typer plumbing shared by ``casprof`` and ``cas``: error handling, consoles, app factory."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from casprof.errors import CasError

#: Results go to stdout; messages, progress and errors to stderr.
out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class ErrorHandlingGroup(TyperGroup):
    """Turn the toolkit's own errors into one sentence on stderr and an exit status.

    Bad input (:class:`~casprof.errors.UserInputError`) exits 2, a failure of the work exits 1,
    an interruption exits 130; none of them prints a traceback.
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
