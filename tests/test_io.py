"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from casprof._io import atomic_write_json, atomic_write_text, ensure_parent_exists
from casprof.errors import UserInputError, WriteError


def test_atomic_write_replaces_and_has_normal_permissions(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1})
    atomic_write_json(path, {"x": 2})
    assert path.read_text().strip().endswith("}") and '"x": 2' in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_write_leaves_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")

    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(WriteError, match=r"Cannot write .*a\.txt \(No space left on device\); nothing was written\."):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_an_output_path_that_cannot_take_a_file_is_refused_before_any_work(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(UserInputError, match="is a folder; give the name of a file in it"):
        ensure_parent_exists(tmp_path / "dir")
    ensure_parent_exists(tmp_path / "p.json")
    # root (CI) may write into any folder, so a read-only one is what os.access says of it
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(UserInputError, match=f"The output folder {tmp_path} is not writable"):
        ensure_parent_exists(tmp_path / "p.json")


def test_missing_folder_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        atomic_write_text(tmp_path / "no" / "a.txt", "x")
