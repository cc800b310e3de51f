"""Content hashes of a project's files, with the shortcut that spares re-reading a file
that has not changed: what the file cache (`opus_core.caching`) fingerprints inputs with.

A file's sha256 is kept with its size, inode, modification and change times. While
those four are what they were, the file is not read again; any write to a file
changes its change time (which no program can set back), so a changed file is always
read. A file whose modification time was within a second of when it was hashed is
read again regardless, as git does with its "racily clean" entries: on a file system
that keeps coarse times, a second write in the same instant would not show.

The hashes live in the persistence, one entry for the project (`HASHES_ID`), saved at
the end of a run. Losing them (a crash, two runs at once writing it) costs only the
time to read the files again, never a wrong answer.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opus_core.errors import OpusError

if TYPE_CHECKING:
    from opus_core.persistence import StatePersistence

HASHES_ID = "opus-cache:file-hashes"
"""The state identifier of the project's file hashes."""

RACY = 1_000_000_000
"""Nanoseconds: a file modified this close to its hashing is read again next time."""

_MAGIC = frozenset("*?[")


def glob_regex(parts: list[str]) -> str:
    """A regular expression for the `/`-separated `parts` of a glob, as `glob` reads them."""
    pieces = []
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part == "**":
            pieces.append(r"(?:(?!\.)[^/]+/)*" if i < last else r"(?:(?!\.)[^/]+/)*(?!\.)[^/]+")
            continue
        piece = r"(?!\.)" if part[:1] in ("*", "?", "[") else ""
        j = 0
        while j < len(part):
            char = part[j]
            close = part.find("]", j + 2) if char == "[" else -1
            if char == "*":
                piece += "[^/]*"
            elif char == "?":
                piece += "[^/]"
            elif close != -1:
                body = part[j + 1 : close]
                body = "^" + body[1:] if body.startswith("!") else body
                piece += "[" + body.replace("\\", "\\\\") + "]"
                j = close
            else:
                piece += re.escape(char)
            j += 1
        pieces.append(piece + ("/" if i < last else ""))
    return "".join(pieces)


def is_glob(pattern: str) -> bool:
    """Whether `pattern` has a glob's special characters (`*`, `?`, `[`)."""
    return not _MAGIC.isdisjoint(pattern)


class FileHashes:
    """The sha256 of files under `root`, read at most once per change (see the module).

    Paths are given and kept relative to `root` (an absolute path stays absolute).
    """

    def __init__(self, root: Path, persistence: StatePersistence | None = None) -> None:
        self.root = root
        self._root = os.fspath(root)
        self.persistence = persistence
        self._known: dict[str, list[Any]] = {}
        self._changed = False
        if persistence is not None:
            try:
                saved = persistence.get_object_state(HASHES_ID)
            except OpusError:
                saved = {}  # unreadable: every file is read again, and the entry rewritten
            files = saved.get("files") if isinstance(saved, dict) else None
            if isinstance(files, dict):
                self._known = {
                    path: entry
                    for path, entry in files.items()
                    if isinstance(entry, list) and len(entry) == 5
                }

    def expand(self, pattern: str) -> list[str]:
        """The files `pattern` names: a glob's matches (`**` for any depth), the files under
        a folder, the file itself; sorted, relative to `root`; empty when nothing exists.

        Folders linked to (symlinks) are followed, each real folder walked once, so a
        change inside one is seen and a link back up (a loop) ends the walk there."""
        if not is_glob(pattern):
            try:
                info = os.stat(os.path.join(self._root, pattern))
            except OSError:
                return [pattern] if os.path.islink(os.path.join(self._root, pattern)) else []
            return self._walk(pattern) if stat.S_ISDIR(info.st_mode) else [pattern]
        if "**" in pattern.split("/"):
            return self._deep(pattern)
        files: list[str] = []
        seen: set[str] = set()  # real folders walked: one folder matched twice is read once
        for path in glob.glob(pattern, root_dir=self.root):  # one level: no walking
            if os.path.isdir(os.path.join(self._root, path)):
                files.extend(self._walk(path, seen))
            else:
                files.append(os.path.normpath(path))
        return sorted(set(files))

    def _walk(self, folder: str, seen: set[str] | None = None) -> list[str]:
        """Every file under `folder`, relative to `root`, sorted; linked folders followed,
        each real folder once (once in `seen`, shared by walks that go together)."""
        files: list[str] = []
        seen = set() if seen is None else seen
        for parent, folders, names in os.walk(os.path.join(self._root, folder), followlinks=True):
            real = os.path.realpath(parent)
            if real in seen:
                folders[:] = []  # reached again through a link: walked already
                continue
            seen.add(real)
            files.extend(os.path.relpath(os.path.join(parent, name), self._root) for name in names)
        return sorted(files)

    def _deep(self, pattern: str) -> list[str]:
        """The files a `**` glob matches, found by walking (as `_walk`) from the folder its
        literal start names, and matched as `glob` would (`*` stays in one folder, `**`
        spans any, a name starting with "." only where the pattern says so)."""
        parts = pattern.split("/")
        first = next(i for i, part in enumerate(parts) if is_glob(part) or part == "**")
        base = "/".join(parts[:first])
        if base and not os.path.isdir(os.path.join(self._root, base)):
            return []
        matcher = re.compile(glob_regex(parts))
        return [
            path for path in self._walk(base or ".") if matcher.fullmatch(os.path.normpath(path))
        ]

    def exists(self, pattern: str) -> bool:
        """Whether a file or folder exists at `pattern`, following links (a link to nothing
        is nothing); a glob: whether it matches one."""
        if not is_glob(pattern):
            return os.path.exists(os.path.join(self._root, pattern))
        if "**" in pattern.split("/"):
            return bool(self._deep(pattern))
        matches = glob.glob(pattern, root_dir=self.root)
        return any(os.path.exists(os.path.join(self._root, m)) for m in matches)

    def digest(self, path: str) -> str | None:
        """The sha256 (hex) of the file at `path`, or None where there is none to read.

        Asked again, it looks again: a task of the run may have written the file since."""
        full = os.path.join(self._root, path)
        try:
            info = os.stat(full)
        except OSError:
            self._forget(path)
            return None
        if not stat.S_ISREG(info.st_mode):
            self._forget(path)
            return None
        key = [info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns]
        known = self._known.get(path)
        if known is not None and known[:4] == key:
            return str(known[4])
        hashed_at = time.time_ns()
        try:
            with open(full, "rb") as file:
                digest = hashlib.file_digest(file, "sha256").hexdigest()
        except OSError:
            self._forget(path)
            return None
        if hashed_at - info.st_mtime_ns > RACY:
            self._known[path] = [*key, digest]
        else:
            self._known.pop(path, None)
        self._changed = True
        return digest

    def _forget(self, path: str) -> None:
        if self._known.pop(path, None) is not None:
            self._changed = True

    def digests(self, patterns: Iterable[str]) -> dict[str, str | None]:
        """Per pattern, the sha256 of each file it names (`path → digest`); a pattern that
        names nothing is kept as `pattern → None`, so a file appearing there is a change."""
        found: dict[str, str | None] = {}
        for pattern in patterns:
            if not is_glob(pattern):  # a file (one stat), else a folder or nothing
                digest = self.digest(pattern)
                if digest is not None or not os.path.isdir(os.path.join(self._root, pattern)):
                    found[pattern] = digest
                    continue
            paths = self.expand(pattern)
            if not paths:
                found[pattern] = None
            for path in paths:
                found[path] = self.digest(path)
        return found

    def save(self) -> None:
        """Keep what was learnt for the next run (nothing to do when nothing changed)."""
        if self._changed and self.persistence is not None:
            self.persistence.save_object_state(HASHES_ID, {"files": self._known})
            self._changed = False
