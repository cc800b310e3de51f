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
* **JSON only**, never pickle. The directory is created with mode 0700 and
  files with mode 0600.
* **Two processes, one directory.** Every write takes an exclusive `flock` on
  `<directory>/.lock`, so writes never interleave; a second process *waits*
  for the lock (up to `lock_timeout` seconds, then fails naming the
  directory).
* **Damaged files are reported, not fatal.** A file that is not valid JSON
  (hand-edited, truncated by a full disk) is skipped by
  `retrieve_all_state_from_persistence` with a warning naming it, and
  `get_object_state` of that identifier raises an error naming the file; the
  rest of the state stays usable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from opus_core import OpusError, StatePersistence, hookimpl
from opus_core.persistence import check_state

__version__ = "0.1.0"

_SIMPLE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
_TEMP_PREFIX = ".tmp-"
_LOCK_NAME = ".lock"


def file_name(object_identifier: str) -> str:
    """The file that holds `object_identifier`'s state (never a path, never hidden)."""
    if _SIMPLE.fullmatch(object_identifier):
        return f"t-{object_identifier}.json"
    import hashlib  # here, not at the top: `opus plugins list` imports this module

    digest = hashlib.sha256(object_identifier.encode("utf-8", "surrogatepass")).hexdigest()
    return f"h-{digest}.json"


def default_directory() -> Path:
    """The project's own folder under `platformdirs.user_state_dir("opus")`.

    See `opus_core.config.project_state_dir`: two checkouts never share records.
    """
    from opus_core.config import current_state_dir

    return current_state_dir()


class StateFileError(OpusError):
    """A state file could not be read or written."""


class FilePersistence(StatePersistence):
    """Task state as JSON files in `directory` (`"file"`).

    Options: `directory` (default: the project's folder under `user_state_dir("opus")`;
    relative to the opus.toml that sets it) and `lock_timeout` (seconds a
    write waits for another process's, default 30).
    """

    name: ClassVar[str] = "file"

    def __init__(self, directory: Path | None = None, lock_timeout: float = 30.0) -> None:
        super().__init__()
        self.directory = Path(directory) if directory is not None else default_directory()
        self.lock_timeout = float(lock_timeout)
        self.problems: list[str] = []
        self._ready = False

    # -- the directory and its lock ----------------------------------------------------

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateFileError(
                f"cannot create the state directory {self.directory}: {exc.strerror or exc}"
            ) from None
        if not self.directory.is_dir():
            raise StateFileError(f"state directory {self.directory} is not a directory")
        with self._locked():
            for leftover in self.directory.glob(f"{_TEMP_PREFIX}*"):
                leftover.unlink(missing_ok=True)  # a write that crashed; the old file is intact
        self._ready = True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        path = self.directory / _LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateFileError(
                f"cannot open the lock file {path}: {exc.strerror or exc}"
            ) from None
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StateFileError(
                            f"state directory {self.directory} is locked by another opus "
                            f"process for over {self.lock_timeout:g}s; wait for it to finish "
                            "or use another directory"
                        ) from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------

    def _read(self, path: Path) -> tuple[str, dict[str, Any]]:
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise StateFileError(
                f"state file {path} is unreadable ({exc}); remove it, or "
                "`opus state clear` the task it belongs to"
            ) from None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("id"), str)
            or not isinstance(record.get("state"), dict)
        ):
            raise StateFileError(f"state file {path} does not hold an opus state record; remove it")
        return record["id"], record["state"]

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        """Every identifier and its state; damaged files are skipped with a warning."""
        self._prepare()
        state: dict[str, dict[str, Any]] = {}
        self.problems = []
        for path in sorted(self.directory.glob("[th]-*.json")):
            try:
                identifier, data = self._read(path)
            except FileNotFoundError:
                continue  # removed meanwhile by another process
            except StateFileError as exc:
                self.problems.append(str(exc))
                sys.stderr.write(f"opus: warning: {exc}\n")
                continue
            state[identifier] = data
        return state

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        """The state of `object_identifier`, or an empty dict."""
        self._prepare()
        try:
            _, data = self._read(self.directory / file_name(object_identifier))
        except FileNotFoundError:
            return {}
        return data

    # -- writing -----------------------------------------------------------------------

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Replace the state of `object_identifier`, atomically and durably."""
        check_state(object_identifier, data)
        try:
            payload = json.dumps(
                {"id": object_identifier, "state": data},
                ensure_ascii=False,
                allow_nan=False,
                sort_keys=True,
            ).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError) as exc:
            raise StateFileError(
                f"state for {object_identifier!r} is not JSON data: {exc}"
            ) from None
        self._prepare()
        target = self.directory / file_name(object_identifier)
        with self._locked():
            temporary = self.directory / f"{_TEMP_PREFIX}{os.getpid()}-{target.name}"
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temporary, target)
                self._fsync_directory()
            except OSError as exc:
                temporary.unlink(missing_ok=True)
                reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or exc
                raise StateFileError(
                    f"cannot save state for {object_identifier!r} in {self.directory}: "
                    f"{reason}; the previous state is intact"
                ) from None

    def delete_object_state(self, object_identifier: str) -> bool:
        """Forget `object_identifier`; True if it had state."""
        self._prepare()
        with self._locked():
            try:
                (self.directory / file_name(object_identifier)).unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise StateFileError(
                    f"cannot remove state for {object_identifier!r} in {self.directory}: "
                    f"{exc.strerror or exc}"
                ) from None
            self._fsync_directory()
        return True

    def persist_all_state(self) -> None:
        """Nothing to do: every save is already durable."""

    def __repr__(self) -> str:
        return f"FilePersistence({str(self.directory)!r})"


@hookimpl
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """The `file` persistence."""
    return [FilePersistence]
