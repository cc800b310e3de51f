"""What each attempt of a task prints and logs, kept for the run history.

While an attempt runs, `attempt_output(output)` makes `output` (an `AttemptOutput`)
the current one of its thread (a `contextvars` variable, so the threads a task's
asyncio loop or a Command's readers run in take it along). Three things write to it:

* `sys.stdout` and `sys.stderr`, replaced for the run by `Tee`s (`capturing()`),
  which write everything through to the stream they replaced — the terminal, the
  progress display, a redirection — and keep a copy of what the current attempt
  wrote;
* `LoggerWrapper`'s `debug` ... `critical` (what processors log through
  `self.logger`), as "log" lines;
* Python's `logging`, through the log record factory (`RecordKeeper`), as "log"
  lines: every record a logger lets through (at its level: WARNING unless the
  program sets another), whatever handlers there are; logging itself works as it did.

Each of the three streams keeps at most `KEEP` characters per attempt: the first
half and the last half of what was written, with a line in between saying how many
characters were dropped. A task printing 50 MB holds `KEEP` in memory, not 50 MB.

What is written past Python — by C code or a program the task starts itself, to
file descriptors 1 and 2 — is shown as it is written but not kept; a Command task's
output is logged, so kept. A thread the task starts itself does not carry the
attempt along (start it with `contextvars.copy_context().run` to keep its output).
"""

from __future__ import annotations

import contextvars
import io
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import logging

KEEP = 65536
"""Characters of each of stdout, stderr and log kept per attempt: the first half and
the last half of what it wrote."""

STREAMS = ("stdout", "stderr", "log")
"""The parts of an attempt's output, in the order they are shown."""

LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}

_current: contextvars.ContextVar[AttemptOutput | None] = contextvars.ContextVar(
    "opus_attempt_output", default=None
)
_installed = 0
"""How many runs of this process capture now (`capturing()`)."""
_lock = threading.Lock()
_owner: int | None = None
"""The process whose runs installed the tees (`capturing()`); any other (a pool worker,
a Dask worker) installs them for good at its first attempt."""


class Kept:
    """The head and the tail of one stream of text, at most `KEEP` characters."""

    __slots__ = ("dropped", "head", "head_size", "tail", "tail_size")

    def __init__(self) -> None:
        self.head: list[str] = []
        self.head_size = 0
        self.tail: deque[str] = deque()
        self.tail_size = 0
        self.dropped = 0

    def add(self, text: str) -> None:
        """Keep `text`, dropping from the middle what is past `KEEP`."""
        half = KEEP // 2
        room = half - self.head_size
        if room > 0:
            self.head.append(text[:room])
            self.head_size += min(room, len(text))
            text = text[room:]
            if not text:
                return
        self.tail.append(text)
        self.tail_size += len(text)
        tail = self.tail
        while self.tail_size > half:
            excess = self.tail_size - half
            first = tail[0]
            if len(first) <= excess:
                tail.popleft()
                self.tail_size -= len(first)
                self.dropped += len(first)
            else:
                tail[0] = first[excess:]
                self.tail_size -= excess
                self.dropped += excess

    def text(self) -> str:
        """What was kept; where characters were dropped, a line says how many."""
        middle = ""
        if self.dropped:
            head = "".join(self.head)
            newline = "" if head.endswith("\n") else "\n"
            middle = f"{newline}[... {self.dropped:,} characters dropped ...]\n"
        return "".join(self.head) + middle + "".join(self.tail)


class AttemptOutput:
    """What one attempt wrote: `kept()` gives {"stdout": ..., "stderr": ..., "log": ...}
    with the parts it wrote to (an empty dict if none)."""

    __slots__ = ("_streams",)

    def __init__(self) -> None:
        self._streams: dict[str, Kept] | None = None  # made at the first write: most never

    def write(self, stream: str, text: str) -> None:
        """Keep `text`, written to `stream` ("stdout", "stderr" or "log")."""
        streams = self._streams
        if streams is None:
            streams = self._streams = {}
        kept = streams.get(stream)
        if kept is None:
            kept = streams[stream] = Kept()
        kept.add(text)

    def log(self, level: int, message: str, name: str | None = None) -> None:
        """Keep a log line: the time, the level, the logger's name if given, the message."""
        clock = time.strftime("%H:%M:%S")
        where = f"{name}: " if name else ""
        label = LEVEL_NAMES.get(level, f"Level {level}")
        self.write("log", f"{clock} {label:<7} {where}{message}\n")

    def kept(self) -> dict[str, str]:
        """The text kept of each stream written to, in `STREAMS` order."""
        streams = self._streams
        if not streams:
            return {}
        return {name: streams[name].text() for name in STREAMS if name in streams}

    def __reduce__(self) -> tuple[object, ...]:  # sent to a task process empty, every time
        return (AttemptOutput, ())


class RunOutputs:
    """The scheduler's side: each running attempt's output, and what ended attempts kept.

    An attempt running in this process (a thread runner) writes to the `AttemptOutput`
    `started` gives; one running elsewhere sends its `kept()` back with its outcome
    (`sent`). `ended` gives what the attempt kept, whichever way it came.
    """

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: dict[int, AttemptOutput | dict[str, str]] = {}

    def started(self, index: int, here: bool) -> AttemptOutput | None:
        """Attempt of task `index` starts; `here`: in this process (it then writes to what
        this returns; else None, and it makes its own)."""
        if not here:
            return None
        output = self._running[index] = AttemptOutput()
        return output

    def sent(self, index: int, kept: object) -> None:
        """What the attempt of task `index` sent back (its outcome's, or its exception's)."""
        if isinstance(kept, dict):
            self._running[index] = kept

    def ended(self, index: int) -> dict[str, str] | None:
        """What the attempt of task `index` that ended kept; None if it printed nothing."""
        output = self._running.pop(index, None)
        kept = output.kept() if isinstance(output, AttemptOutput) else output
        return kept or None


def current() -> AttemptOutput | None:
    """The output of the attempt running in this context, if one is."""
    return _current.get()


def keep_output(output: AttemptOutput) -> contextvars.Token[AttemptOutput | None]:
    """Keep what is printed and logged in this context in `output`, until `stop_keeping`
    is given the token this returns."""
    global _installed
    if not _installed and _owner != os.getpid():  # a pool or Dask worker: for good
        with _lock:
            _install()
            _installed = 1
    return _current.set(output)


def stop_keeping(token: contextvars.Token[AttemptOutput | None]) -> None:
    """Stop keeping output where `keep_output` (which returned `token`) started."""
    _current.reset(token)


def send_output(error: BaseException, output: AttemptOutput) -> None:
    """Attach what was kept to `error`, as `opus_output`, so it travels with it (pickled
    with the exception's attributes) from another process."""
    try:
        error.opus_output = output.kept()  # type: ignore[attr-defined]
    except Exception:  # an exception type that takes no attribute: its output is lost
        pass


@contextmanager
def unkept() -> Iterator[None]:
    """Nothing written in this block is kept (it was kept another way: as a log line)."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def capturing() -> Iterator[None]:
    """For the block (a run): the tees and the log record factory `RecordKeeper` are in place.

    Runs at once (or inside one another) share them; the last to end takes them out —
    those still in place, since the program may have set streams of its own meanwhile.
    """
    global _installed, _owner
    with _lock:
        _installed += 1
        if _installed == 1:
            _owner = os.getpid()
        _install()  # each time: the program may have set streams of its own since
    try:
        yield
    finally:
        with _lock:
            _installed -= 1
            if _installed == 0:
                _uninstall()


def _install() -> None:
    import logging

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, Tee):
            setattr(sys, name, Tee(stream, name))
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, RecordKeeper):
        logging.setLogRecordFactory(RecordKeeper(factory))


def _uninstall() -> None:
    import logging

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, Tee):
            setattr(sys, name, stream.target)
    factory = logging.getLogRecordFactory()
    if isinstance(factory, RecordKeeper):  # one the program set since stays
        logging.setLogRecordFactory(factory.inner)


class Tee(io.TextIOBase):
    """`sys.stdout` or `sys.stderr` while opus captures: writes go through to `target`,
    and a copy to the current attempt's output, if any."""

    def __init__(self, target: TextIO, name: str) -> None:
        super().__init__()
        self.target = target
        self.name_of_stream = name

    def write(self, text: str) -> int:
        written = self.target.write(text)  # what the stream refuses is not kept either
        output = _current.get()
        if output is not None and text:
            output.write(self.name_of_stream, text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.target, "encoding", "utf-8"))

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.target, "errors", None)

    def __getattr__(self, name: str) -> Any:  # buffer, mode, ... of the stream it replaced
        return getattr(self.target, name)


class RecordKeeper:
    """The log record factory while opus captures (`logging.setLogRecordFactory`): it makes
    each record with the factory it replaced, and keeps a line of it for the current attempt.

    A factory, not a handler, so that logging works as it did — `basicConfig`, and Python's
    own last resort for a record no handler takes — and every record a logger lets through
    is kept, whatever handlers the program has (or has not) set up.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        output = _current.get()
        if output is not None and record.name != "opus":
            try:
                message = record.getMessage()
            except Exception:  # a bad format: logging reports it when a handler formats it
                message = str(record.msg)
            if record.exc_info and record.exc_info[0] is not None:
                import logging

                message += "\n" + logging.Formatter().formatException(record.exc_info)
            output.log(record.levelno, message, record.name)
        return record
