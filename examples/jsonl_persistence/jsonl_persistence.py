"""A persistence that keeps task state as JSON lines: one file, each save appended as a line.

The worked example of docs/persistence.md, and a plugin as it stands: load it
with `opus -p jsonl_persistence ...`, `OPUS_PLUGINS=jsonl=jsonl_persistence`,
or an entry point, then choose it in opus.toml::

    [opus]
    persistence = "jsonl"

    [persistence.jsonl]
    path = "state/opus.jsonl"    # relative to this opus.toml; default: the project's state folder

Each line is `{"id": ..., "state": {...}}`, or `{"id": ..., "deleted": true}`;
the last line of an identifier wins. A save is one `write` of one whole line
to a file opened for appending, fsynced before it returns, under an exclusive
lock on `<path>.lock`: two processes never interleave, and a process killed
mid-write leaves at most a torn last line, which the next writer ends and every
reader skips (it was never a save that returned). `persist_all_state` (the end
of every run) compacts the file when most of its lines are dead: the live
state is written to a temporary file, fsynced, and renamed over the old one —
a crash leaves the old file or the new, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from opus_core import OpusError, StatePersistence, hookimpl
from opus_core.persistence import check_state, state_folder, to_json


class JsonlPersistence(StatePersistence):
    """Task state as JSON lines in one file (`"jsonl"`); option `path`."""

    name: ClassVar[str] = "jsonl"
    supports_concurrent_processes: ClassVar[bool] = True  # every write holds the lock

    def __init__(self, path: Path | None = None) -> None:
        # Only the path: a pickled copy (shipped with each task to a runner that does not
        # share memory) reopens the file itself. Nothing is opened or created here.
        self.path = Path(path) if path is not None else state_folder() / "state.jsonl"

    # -- the four state methods ---------------------------------------------------------

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        """The state of `object_identifier`, or an empty dict."""
        return self._replay().get(object_identifier, {})

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        """Every identifier and its state."""
        return self._replay()

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Append the new state of `object_identifier`; refuses what JSON would alter."""
        state = to_json(object_identifier, data)  # the value rules, and the identifier
        self._append(f'{{"id": {json.dumps(object_identifier)}, "state": {state}}}\n')

    def delete_object_state(self, object_identifier: str) -> bool:
        """Append a deletion of `object_identifier`; True if it had state."""
        check_state(object_identifier, {})
        with self._locked():
            if object_identifier not in self._replay():
                return False
            self._write_line(f'{{"id": {json.dumps(object_identifier)}, "deleted": true}}\n')
        return True

    # -- an override of a default: compaction at the end of each run ------------------------

    def persist_all_state(self) -> None:
        """Saves are durable already; compact the file when most of its lines are dead."""
        with self._locked():
            lines = self._lines()
            state = self._replay(lines)
            if len(lines) <= max(100, 2 * len(state)):
                return
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(temporary, "w", encoding="utf-8") as out:
                for identifier, data in state.items():
                    out.write(json.dumps({"id": identifier, "state": data}) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)  # atomic: the old file or the new
            self._fsync_folder()

    # -- the file -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on `<path>.lock`: a file of its own, so that compaction can
        replace the data file while every writer waits on the same lock."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits for the other writer
            yield
        finally:
            os.close(lock)  # closing releases the lock

    def _append(self, line: str) -> None:
        """Append `line` under the lock."""
        with self._locked():
            self._write_line(line)

    def _write_line(self, line: str) -> None:
        """Append `line` as one write, fsynced (call with the lock held). A torn line left
        by a killed writer is ended first, so that it cannot swallow this one."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            data = (b"\n" if torn else b"") + line.encode("utf-8")
            if os.write(fd, data) != len(data):
                raise OpusError(f"state file {self.path}: a save was cut short (disk full?)")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _fsync_folder(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _lines(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape") as file:
                return file.readlines()
        except FileNotFoundError:
            return []  # nothing saved yet: reading creates nothing

    def _replay(self, lines: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """The state the lines add up to: the last line of each identifier wins."""
        state: dict[str, dict[str, Any]] = {}
        for line in self._lines() if lines is None else lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn line: a save that never returned
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            if entry.get("deleted") is True:
                state.pop(entry["id"], None)
            elif isinstance(entry.get("state"), dict):
                state[entry["id"]] = entry["state"]
        return state

    def __repr__(self) -> str:
        return f"JsonlPersistence({str(self.path)!r})"


@hookimpl
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """The `jsonl` persistence."""
    return [JsonlPersistence]
