"""Writing a file whole or not at all: `atomic_write`, the one way opus replaces a file
(the HTML report, `opus config init`, the file persistence's state)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
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


def generated_file_main(
    argv: list[str] | None,
    *,
    module: str,
    default: Path,
    source: str,
    render: Callable[[], str],
) -> int:
    """The command line of a generator of a committed file (`python -m MODULE [--check]
    [--output FILE]`): write what `render()` returns to the file, or with `--check` say (exit
    1) that the file is missing or out of date with `source`, and write nothing."""
    import argparse
    import sys

    regenerate = f"python -m {module}"
    parser = argparse.ArgumentParser(
        prog=regenerate, description=f"Write {default.name} from {source}."
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file is stale; write nothing"
    )
    parser.add_argument("--output", type=Path, default=default, help=f"default: {default}")
    args = parser.parse_args(argv)
    target: Path = args.output
    text = render()
    if args.check:
        if not target.is_file():
            print(f"{target} is missing; run `{regenerate}` to write it", file=sys.stderr)
            return 1
        if target.read_text(encoding="utf-8") != text:
            print(
                f"{target} is out of date with {source}; run `{regenerate}` to regenerate it",
                file=sys.stderr,
            )
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0
