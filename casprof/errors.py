"""Error types that separate a user's bad input (exit 2) from a failure of the work (exit 1)."""

from __future__ import annotations

import enum
from typing import TypeVar

_E = TypeVar("_E", bound=enum.Enum)


class CasError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    exit_code: int = 1


class UserInputError(CasError):
    """Bad input: a missing or corrupt file, an unknown name, an impossible setting.

    The message is one clear sentence; the CLI prints it and exits with status 2.
    """

    exit_code = 2


class BackendUnavailableError(UserInputError):
    """The requested backend or device cannot run here; nothing falls back silently."""


class MeasurementError(CasError):
    """The measurement itself failed (exit 1)."""


class WriteError(CasError, OSError):
    """An output file could not be written (disk full, permissions changed while working; exit 1).

    Also an ``OSError``, so that code which skips an optional write (the build cache) still does.
    """


def parse_choice(choices: type[_E], value: _E | str, what: str) -> _E:
    """The member of ``choices`` that ``value`` is or names; anything else is a :class:`UserInputError`
    that says "Unknown <what> <value>; use one of: <the names>."."""
    try:
        return choices(value)
    except ValueError:
        known = ", ".join(str(c.value) for c in choices)
        raise UserInputError(f"Unknown {what} {value!r}; use one of: {known}.") from None
