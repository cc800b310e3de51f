"""The `file` persistence: one JSON file per state identifier, in one directory.

Guarantees:

* **Atomic and durable.** Every save writes a temporary file in the same
  directory, flushes and fsyncs it, renames it over the old file and fsyncs
  the directory. A crash at any instant leaves the old state or the new one,
  never a torn file; once `save_object_state` returns, the state survives a
  power cut.
* **No path from an unchecked name.** A simple identifier (letters, digits,
  `_`, `-`, `.`, at most 100 characters, not starting with a dot) becomes
  `t-<id>.json`; any other becomes `h-<sha256 of the id>.json`. The id itself
  is stored inside the file, so every identifier round-trips and none can
  reach outside the directory.
* **Only its own files.** Opus's temporary files are named
  `.tmp-opus-<pid>-<16 hex digits>.json`. Leftovers of a killed write are removed by
  the next write (under the lock, so no write is in progress), and only if they
  are regular files with exactly that name; nothing else in the directory is
  ever removed, and reading (`opus state list`, `state show`) creates, changes
  or removes nothing.
* **JSON only**, never pickle. A directory it creates has mode 0700 and files
  mode 0600. An existing directory's mode is kept (it may be the user's, with
  `directory = "."`), with a warning when other users can write to it.
* **Two processes, one directory.** Every write takes an exclusive `flock` on
  `<directory>/.lock`, so writes never interleave; a second process *waits*
  for the lock (up to `lock_timeout` seconds, then fails naming the
  directory). The lock is opened without following symbolic links; a `.lock`
  that is not a regular file is an error naming it.
* **Damaged entries are reported, not fatal.** A record file is read only if
  it is a regular file in the directory (never through a symbolic link, never
  a FIFO or device), of at most 64 MiB, holding a JSON record whose stored id
  is the one its name was made from (a file copied over another's name is
  damaged). Anything else is skipped by `retrieve_all_state_from_persistence`
  with one warning line naming the file; `get_object_state` of that
  identifier warns the same way and raises an error naming the file;
  `delete_object_state` removes it; `remove_damaged()` removes every damaged
  entry. The rest of the state stays usable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from opus_core import OpusError, StatePersistence, hookimpl
from opus_core.files import atomic_write, fsync_folder
from opus_core.persistence import state_folder, to_json

__version__ = "0.1.0"

_SIMPLE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
_RECORD = re.compile(r"[th]-.+\.json", re.DOTALL)
_TEMP_PREFIX = ".tmp-opus-"
_TEMP = re.compile(r"\.tmp-opus-[0-9]+-[0-9a-f]{16}\.json")
_LOCK_NAME = ".lock"
MAX_RECORD_BYTES = 64 * 1024 * 1024
"""A record file larger than this is damaged, not read."""


def file_name(object_identifier: str) -> str:
    """The file that holds `object_identifier`'s state (never a path, never hidden)."""
    if _SIMPLE.fullmatch(object_identifier):
        return f"t-{object_identifier}.json"
    import hashlib  # here, not at the top: `opus plugins list` imports this module

    digest = hashlib.sha256(object_identifier.encode("utf-8", "surrogatepass")).hexdigest()
    return f"h-{digest}.json"


def default_directory() -> Path:
    """The project's state folder (`opus_core.persistence.state_folder`): two checkouts
    of one project never share records."""
    return state_folder()


class StateFileError(OpusError):
    """A state file could not be read or written."""


class DamagedRecord(StateFileError):
    """A record file that cannot be used: not a regular file, too large, not an opus record."""


def _read_bounded(path: Path) -> bytes:
    """The bytes of `path`: a regular file, not through a symlink, at most MAX_RECORD_BYTES.

    Raises FileNotFoundError if it is gone, DamagedRecord for anything else.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO cannot hang
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise DamagedRecord(f"state file {path} is damaged: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DamagedRecord(f"state file {path} is damaged: it is not a regular file")
        chunks: list[bytes] = []
        size = info.st_size if info.st_size > MAX_RECORD_BYTES else 0  # too large: read nothing
        while size <= MAX_RECORD_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_RECORD_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_RECORD_BYTES:
            raise DamagedRecord(
                f"state file {path} is damaged: larger than "
                f"{MAX_RECORD_BYTES // (1024 * 1024)} MiB, which no opus record is"
            )
        return b"".join(chunks)
    except OSError as exc:
        raise DamagedRecord(f"state file {path} is damaged: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def flock_within(fd: int, seconds: float) -> bool:
    """Take an exclusive `flock` on `fd`, waiting up to `seconds` while another process holds
    it; False if it is still held then.

    `flock` itself waits for ever or not at all, so the wait is a retry every 5 ms. (The
    `filelock` library waits the same way; version 4.3 took about 30 times as long to take
    and release a lock, and 40 ms to import, so it is not used.)
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


def read_record(path: Path) -> tuple[str, dict[str, Any]]:
    """The id and state stored in the record file `path`, checked to belong to that name.

    Raises FileNotFoundError if it is gone, DamagedRecord if it cannot be used.
    """
    data = _read_bounded(path)
    try:
        import json  # here: the json module is not needed to list plugins

        record = json.loads(data)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise DamagedRecord(f"state file {path} is damaged: not valid JSON ({reason})") from None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("id"), str)
        or not isinstance(record.get("state"), dict)
    ):
        raise DamagedRecord(f"state file {path} is damaged: not an opus state record")
    identifier: str = record["id"]
    if file_name(identifier) != path.name:
        raise DamagedRecord(
            f"state file {path} is damaged: it holds the state of {identifier!r}, which "
            f"belongs in {file_name(identifier)} (a copied or renamed file)"
        )
    return identifier, record["state"]


def _advice(path: Path) -> str:
    """How a user removes the damaged record file `path`."""
    identifier = path.name[2:-5]
    if file_name(identifier) == path.name:  # `t-<id>.json`: the id is in the name
        return f"`opus state clear {identifier}` removes it"
    return "delete the file to forget it"  # a hash: no id to name


class FilePersistence(StatePersistence):
    """Task state as JSON files in `directory` (`"file"`).

    Options: `directory` (default: the project's folder under `user_state_dir("opus")`;
    relative to the opus.toml that sets it) and `lock_timeout` (seconds a
    write waits for another process's, default 30).
    """

    name: ClassVar[str] = "file"
    supports_concurrent_processes: ClassVar[bool] = True

    def __init__(self, directory: Path | None = None, lock_timeout: float = 30.0) -> None:
        super().__init__()
        self.directory = Path(directory) if directory is not None else default_directory()
        self.lock_timeout = float(lock_timeout)
        self.problems: list[str] = []
        self._checked = False  # the directory's mode was looked at
        self._cleaned = False  # leftovers of killed writes were removed
        self._warned: set[str] = set()

    # -- the directory and its lock ----------------------------------------------------

    def _exists(self) -> bool:
        """Whether the directory exists (checked, not created: reading changes nothing)."""
        try:
            info = self.directory.stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateFileError(
                f"cannot use the state directory {self.directory}: {exc.strerror or exc}"
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            raise StateFileError(f"state directory {self.directory} is not a directory")
        if not self._checked:
            self._checked = True
            if info.st_mode & 0o022:
                self._warn(
                    f"state directory {self.directory} is writable by other users (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}); `chmod 700` it unless that is meant"
                )
        return True

    def _prepare(self) -> None:
        """Create the directory (mode 0700) for a write."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateFileError(
                f"cannot create the state directory {self.directory}: {exc.strerror or exc}"
            ) from None
        self._exists()

    def _remove_leftovers(self) -> None:
        """Remove the temporary files of writes that were killed (call with the lock held)."""
        if self._cleaned:
            return
        self._cleaned = True
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if _TEMP.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        path = self.directory / _LOCK_NAME
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                advice = "it is a symbolic link; remove it"
            elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                advice = (
                    f"{exc.strerror}; state needs a writable directory: choose another with "
                    "[persistence.file] directory"
                )
            else:
                advice = f"{exc.strerror or exc}"
            raise StateFileError(f"cannot open the lock file {path}: {advice}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StateFileError(
                    f"cannot open the lock file {path}: it is not a regular file; remove it"
                )
            if not flock_within(fd, self.lock_timeout):
                raise StateFileError(
                    f"state directory {self.directory} is locked by another opus "
                    f"process for over {self.lock_timeout:g}s; wait for it to finish "
                    "or use another directory"
                )
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _fsync_directory(self) -> None:
        fsync_folder(self.directory)

    def _warn(self, message: str) -> None:
        """One warning line on stderr, once per message for this object."""
        if message not in self._warned:
            self._warned.add(message)
            sys.stderr.write(f"opus: warning: {message}\n")

    def _record_files(self) -> list[Path]:
        """The directory's record files (by name), sorted; none if it does not exist."""
        if not self._exists():
            return []
        with os.scandir(self.directory) as entries:
            return sorted(self.directory / e.name for e in entries if _RECORD.fullmatch(e.name))

    # -- reading ---------------------------------------------------------------------

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        """Every identifier and its state; damaged entries are skipped with a warning."""
        state: dict[str, dict[str, Any]] = {}
        self.problems = []
        for path in self._record_files():
            try:
                identifier, data = read_record(path)
            except FileNotFoundError:
                continue  # removed meanwhile by another process
            except DamagedRecord as exc:
                self.problems.append(str(exc))
                self._warn(f"{exc}; skipped ({_advice(path)})")
                continue
            state[identifier] = data
        return state

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        """The state of `object_identifier`, or an empty dict.

        A damaged record file is reported on stderr and raises `DamagedRecord`.
        """
        if not self._exists():
            return {}
        try:
            _, data = read_record(self.directory / file_name(object_identifier))
        except FileNotFoundError:
            return {}
        except DamagedRecord as exc:
            advice = f"`opus state clear {object_identifier}` removes it"
            self._warn(f"{exc}; skipped ({advice})")
            raise DamagedRecord(f"{exc}; {advice}") from None
        return data

    # -- writing -----------------------------------------------------------------------

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Replace the state of `object_identifier`, atomically and durably."""
        to_json(object_identifier, data)  # refuses what JSON would not bring back unchanged
        try:
            import json

            payload = json.dumps(
                {"id": object_identifier, "state": data},
                ensure_ascii=False,
                allow_nan=False,
                sort_keys=True,
            ).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError, RecursionError) as exc:
            raise StateFileError(
                f"state for {object_identifier!r} is not JSON data: {exc}"
            ) from None
        if len(payload) > MAX_RECORD_BYTES:
            raise StateFileError(
                f"state for {object_identifier!r} is {len(payload)} bytes as JSON, over the "
                f"{MAX_RECORD_BYTES // (1024 * 1024)} MiB a record may hold"
            )
        self._prepare()
        target = self.directory / file_name(object_identifier)
        with self._locked():
            self._remove_leftovers()
            temporary = self.directory / (f"{_TEMP_PREFIX}{os.getpid()}-{os.urandom(8).hex()}.json")
            try:
                atomic_write(target, payload, mode=0o600, temporary=temporary)
            except OSError as exc:
                reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or exc
                raise StateFileError(
                    f"cannot save state for {object_identifier!r} in {self.directory}: "
                    f"{reason}; the previous state is intact"
                ) from None

    def _unlink(self, path: Path) -> bool:
        """Remove the entry `path` (never what a link points to); False if it was gone."""
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateFileError(f"cannot remove {path}: {exc.strerror or exc}") from None
        return True

    def delete_object_state(self, object_identifier: str) -> bool:
        """Forget `object_identifier` (its file, even damaged); True if it had one."""
        if not self._exists():
            return False
        with self._locked():
            removed = self._unlink(self.directory / file_name(object_identifier))
            if removed:
                self._fsync_directory()
        return removed

    def remove_damaged(self) -> int:
        """Remove every damaged record file (see `read_record`); how many were removed."""
        if not self._exists():
            return 0
        removed = 0
        with self._locked():
            for path in self._record_files():
                try:
                    read_record(path)
                except FileNotFoundError:
                    continue
                except DamagedRecord:
                    try:
                        removed += self._unlink(path)
                    except StateFileError as exc:  # a directory: not opus's to remove
                        self._warn(str(exc))
            if removed:
                self._fsync_directory()
        return removed

    def persist_all_state(self) -> None:
        """Nothing to do: every save is already durable."""

    def __repr__(self) -> str:
        return f"FilePersistence({str(self.directory)!r})"


@hookimpl
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """The `file` persistence."""
    return [FilePersistence]
