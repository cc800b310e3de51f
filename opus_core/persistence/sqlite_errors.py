"""What the `sqlite` persistence says when its database cannot be used: one error, naming
the database, what was being done, and what to do about it."""

from __future__ import annotations

from pathlib import Path

from opus_core.errors import OpusError

__all__ = ["StateDatabaseError", "damaged", "database_error"]


class StateDatabaseError(OpusError):
    """The state database cannot be opened, read or written."""


def database_error(
    path: Path, doing: str, exc: BaseException, busy_timeout: float
) -> StateDatabaseError:
    """The error for `exc`, raised while doing `doing` to the database at `path`."""
    import sqlite3

    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        message = exc.strerror or message
    lowered = message.lower()
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered
    ):
        return damaged(path, message)
    if "locked" in lowered or "busy" in lowered:
        advice = (
            f"another process held it for over {busy_timeout:g}s; wait for it to "
            "finish, or raise [persistence.sqlite] busy_timeout"
        )
    elif "readonly" in lowered or "read-only" in lowered or "permission" in lowered:
        advice = "state needs a writable file: choose another with [persistence.sqlite] path"
    elif "disk is full" in lowered or "no space" in lowered:
        advice = "the disk is full; what was committed before is intact"
    else:
        advice = message
        message = ""
    detail = f"{message}; " if message else ""
    return StateDatabaseError(f"state database {path}: cannot {doing}: {detail}{advice}")


def damaged(path: Path, reason: str) -> StateDatabaseError:
    """The one error for a database that is damaged or not SQLite at all."""
    return StateDatabaseError(
        f"state database {path} is damaged or not an SQLite database ({reason}); "
        "opus leaves it as it is, and `opus state clear` cannot repair it: move it "
        "aside (opus then starts a new one) or choose another file with "
        "[persistence.sqlite] path"
    )
