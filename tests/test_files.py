"""`atomic_write`: the one way opus replaces a file, whole or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from opus_core.files import atomic_write, umask


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_takes_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path: Path) -> None:
    new = tmp_path / "new.txt"
    atomic_write(new, b"one")
    assert new.read_bytes() == b"one" and mode(new) == 0o666 & ~umask()
    new.chmod(0o640)
    atomic_write(new, b"two")
    assert new.read_bytes() == b"two" and mode(new) == 0o640
    atomic_write(new, b"three", mode=0o600)
    assert mode(new) == 0o600


def test_umask_is_read_without_changing_it() -> None:
    before = os.umask(0o027)
    try:
        assert umask() == 0o027
        assert umask() == 0o027  # reading it did not set it to anything else
    finally:
        os.umask(before)


def test_a_failed_write_leaves_the_old_file_and_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()  # a folder cannot be replaced by a file: the rename fails
    with pytest.raises(OSError):
        atomic_write(target, b"data")
    assert target.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["target"]


def test_a_symlink_planted_where_the_new_file_goes_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    planted = tmp_path / ".state.partial"
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "state", b"data", temporary=planted)
    assert victim.read_text() == "keep me" and not (tmp_path / "state").exists()
    assert planted.is_symlink()  # not ours to remove: it was there before
