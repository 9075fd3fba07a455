"""Atomic file writes: write beside the target, then rename, so nothing is left half-written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

from casprof.errors import UserInputError, WriteError


def ensure_parent_exists(path: Path) -> None:
    """Refuse an output path that cannot take a file: a missing or read-only folder, or a folder
    in the file's place (checked before any work, so that no run is lost at its end)."""
    target = Path(path).expanduser().resolve()
    parent = target.parent
    if not parent.is_dir():
        raise UserInputError(f"The output folder {parent} does not exist.")
    if target.is_dir():
        raise UserInputError(f"The output path {target} is a folder; give the name of a file in it.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserInputError(f"The output folder {parent} is not writable.")


def check_output_folder(path: Path) -> None:
    """Refuse an output folder that cannot be made or written: a file in its place or on its
    path, or a read-only folder where it would go (checked before any work; makes nothing)."""
    target = Path(path).expanduser().absolute()
    probe = target
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        if probe == target:
            raise UserInputError(f"The output folder {target} is a file.")
        raise UserInputError(f"Cannot make the output folder {target}: {probe} is not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == target:
            raise UserInputError(f"The output folder {target} is not writable.")
        raise UserInputError(f"Cannot make the output folder {target}: {probe} is not writable.")


def make_output_folder(path: Path) -> None:
    """Make an output folder (and its parents) after :func:`check_output_folder`; an operating
    system's refusal becomes one sentence."""
    check_output_folder(path)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"Cannot make the output folder {path} ({exc.strerror or type(exc).__name__}).") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_usual_permissions(path: Path | str) -> None:
    """Give a file made by ``mkstemp`` (0600) the permissions a plain write would have (0666 & ~umask)."""
    os.chmod(path, 0o666 & ~_umask())


def _write_error(path: Path, exc: OSError, outcome: str) -> WriteError:
    return WriteError(f"Cannot write {path} ({exc.strerror or exc.__class__.__name__}); {outcome}.")


def pending_file(path: Path, fill: Callable[[Path], None]) -> Path:
    """A new hidden temporary file beside ``path``, filled by ``fill(tmp)`` and given the permissions
    a plain write would have, for a later :func:`install` onto ``path``.

    Raises:
        WriteError: it could not be made or filled (it is removed).
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc, "nothing was written") from None
    tmp = Path(name)
    try:
        give_usual_permissions(tmp)
        fill(tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, exc, "nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def install(tmp: Path, path: Path, outcome: str = "nothing was written") -> None:
    """Rename the finished temporary file ``tmp`` onto ``path`` in one step.

    Raises:
        WriteError: the rename failed (``outcome`` says what that left; ``tmp`` stays for the caller).
    """
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc, outcome) from None


def synced_writer(data: bytes) -> Callable[[Path], None]:
    """A ``fill`` for :func:`pending_file` that writes ``data`` and flushes it to the disk."""
    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return fill


def _replace_atomically(path: Path, fill: Callable[[Path], None]) -> None:
    path = Path(path)
    ensure_parent_exists(path)
    tmp = pending_file(path, fill)
    try:
        install(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    _replace_atomically(path, synced_writer(data))


def atomic_copy(source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest`` atomically (temporary file in ``dest``'s folder, then rename)."""
    _replace_atomically(dest, lambda tmp: shutil.copyfile(source, tmp))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    """The toolkit's JSON file layout: indented, keys in their order, a final newline."""
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def read_json_file(path: Path, what: str) -> Any:
    """Read a JSON file, turning every way it can be bad into one clear sentence."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"The {what} file {path} does not exist.")
    if not path.is_file():
        raise UserInputError(f"The {what} path {path} is not a file.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"The {what} file {path} cannot be read ({exc.__class__.__name__}).") from None
    if not text.strip():
        raise UserInputError(f"The {what} file {path} is empty.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(
            f"The {what} file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); it may be truncated."
        ) from None


def check_schema_version(d: Mapping[str, Any], what: str, current: int) -> int:
    """The file's integer ``schema_version``; refuse a missing, invalid or newer one."""
    version = d.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserInputError(f"The {what} has no integer schema_version; it is not a casprof {what} file.")
    if version > current:
        raise UserInputError(
            f"The {what} has schema_version {version}, newer than this toolkit reads ({current}); upgrade the toolkit."
        )
    if version < 1:
        raise UserInputError(f"The {what} has an invalid schema_version {version}.")
    return version
