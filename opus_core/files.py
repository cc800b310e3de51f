"""Writing a file whole or not at all: `atomic_write`, the one way opus replaces a file
(the HTML report, `opus config init`, the file persistence's state)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DEFAULT_UMASK = 0o022
"""The umask assumed where the process's own cannot be read."""


def umask() -> int:
    """This process's umask, read without changing it (`os.umask` sets it to read it, which
    another thread may see); `DEFAULT_UMASK` where `/proc` does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return DEFAULT_UMASK


def atomic_write(
    target: str | os.PathLike[str],
    data: bytes,
    mode: int | None = None,
    temporary: str | os.PathLike[str] | None = None,
) -> None:
    """Replace `target` with `data`, all or nothing, and durably: the data goes into a new
    file beside it (never following a symlink there), is flushed to the disk, renamed over
    `target`, and the folder is flushed too, so a crash or SIGKILL at any instant leaves
    the old file or the new one, never a part.

    `mode` gives the new file's permission bits; by default it keeps those of the file it
    replaces, else takes 0o666 less the umask (as an editor would make it). `temporary`
    names the new file (by default `.NAME.PID.RANDOM.partial` beside `target`), for a
    caller that recognises its own leftovers. Raises `OSError`; the new file is removed then.
    """
    target = Path(target)
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except OSError:
            mode = 0o666 & ~umask()
    partial = (
        Path(temporary)
        if temporary is not None
        else target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.partial")
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    fsync_folder(target.parent)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush `folder` itself to the disk, so that a rename in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
