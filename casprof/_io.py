"""Atomic file writes: write beside the target, then rename, so nothing is left half-written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Mapping
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_usual_permissions(path: Path | str) -> None:
    """Give a file made by ``mkstemp`` (0600) the permissions a plain write would have (0666 & ~umask)."""
    os.chmod(path, 0o666 & ~_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    ensure_parent_exists(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"Cannot write {path} ({exc.strerror or exc.__class__.__name__}).") from None
    try:
        give_usual_permissions(tmp)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"Cannot write {path} ({exc.strerror or exc.__class__.__name__}); nothing was written.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest`` atomically (temporary file in ``dest``'s folder, then rename)."""
    dest = Path(dest)
    ensure_parent_exists(dest)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise WriteError(f"Cannot write {dest} ({exc.strerror or exc.__class__.__name__}).") from None
    os.close(fd)
    try:
        give_usual_permissions(tmp)
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"Cannot write {dest} ({exc.strerror or exc.__class__.__name__}); nothing was written.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


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
