"""The live `[done/total] running N, failed N` line of `opus run` on a terminal.

It is a plugin: `opus run` registers it when standard error is a terminal (and
`--no-progress` is not given). While the run lasts, what the program writes to
the terminal — opus's log lines, a processor's logging or `print`, a plugin's
warning — goes through `Progress.attached()`, which clears the progress line,
writes the complete lines, and draws the progress line again below them: a log
line and the progress line never share a line of the screen. Task processes
(the `process` and `processpool` runners) write to pipes that opus reads
(`opus_core.runners.output`), and their lines come to the display the same way.

The line is drawn by a thread that wakes every `REFRESH` seconds while the run
lasts and draws it again when what it says has changed, and after every line
written above it. Nothing is done as each task ends: the counts are asked of the
engine as the line is drawn, so a run of many short tasks costs no more on a
terminal than on a pipe, and the line is never behind by more than `REFRESH`.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from opus_core.capture import Tee
from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.graph import Plan

CLEAR = "\r\033[K"

REFRESH = 0.1
"""How often, in seconds, the line is drawn again if what it says has changed."""


class Progress:
    """The run's counts, drawn on the last line of `stream`, asked of the engine as the
    line is drawn so that no hook is called as each task starts or ends.

    `finished` says how many tasks have finished and how many of them failed or timed
    out (`Tasks.finished`), `running` how many run now (`Tasks.running`), and `waiting`
    how many are ready but held back for a resource (`Tasks.waiting`). The total comes
    from `opus_run_started`.
    """

    def __init__(
        self,
        stream: TextIO = sys.stderr,
        running: Callable[[], int] = int,
        waiting: Callable[[], int] = int,
        finished: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> None:
        self.stream = stream
        self.running = running
        self.waiting = waiting
        self.finished = finished
        self.total = 0
        self._drawn = ""
        self._lock = threading.RLock()
        self._shown = False
        self._ended = threading.Event()
        self._refresher: threading.Thread | None = None

    def _line(self) -> str:
        done, failed = self.finished()
        waiting = self.waiting()
        held = f", waiting for resources {waiting}" if waiting else ""
        return f"[{done}/{self.total}] running {self.running()}{held}, failed {failed}"

    def _draw(self) -> None:
        with self._lock:
            self._drawn = self._line()
            self.stream.write(CLEAR + self._drawn)  # no newline: the next write replaces it
            self.stream.flush()
            self._shown = True

    def _refresh(self) -> None:
        """While the run lasts, draw the line again when what it says changed since."""
        while not self._ended.wait(REFRESH):
            with self._lock:
                if self._line() != self._drawn:
                    self._draw()

    def _clear(self) -> None:
        if self._shown:
            self.stream.write(CLEAR)
            self._shown = False

    def write_lines(self, target: TextIO, text: str) -> None:
        """Write complete lines to `target` above the progress line, then draw it again."""
        with self._lock:
            self._clear()
            self.stream.flush()
            target.write(text)
            target.flush()
            self._draw()

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Route what is written to the terminal (stdout and stderr) through the display."""
        saved = sys.stdout, sys.stderr
        proxies = [
            _AboveProgress(self, stream) if _is_terminal(stream) else stream for stream in saved
        ]
        sys.stdout, sys.stderr = proxies
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
            with self._lock:
                for proxy in proxies:
                    if isinstance(proxy, _AboveProgress):
                        proxy.close_line()
                self._clear()
                self.stream.flush()

    # -- the lifecycle, after every other plugin has reacted --------------------------------

    @hookimpl(tryfirst=True)
    def opus_run_started(self, plan: Plan) -> None:
        self.total = len(plan.tasks)  # before the other plugins write: the line they redraw
        if self._refresher is None:
            self._ended.clear()
            self._refresher = threading.Thread(
                target=self._refresh, name="opus-progress", daemon=True
            )
            self._refresher.start()

    @hookimpl(trylast=True)
    def opus_run_finished(self) -> None:
        self._ended.set()
        refresher, self._refresher = self._refresher, None
        if refresher is not None and refresher is not threading.current_thread():
            refresher.join(timeout=1.0)
        with self._lock:
            self._clear()
            self.stream.flush()


def _detach_in_child() -> None:
    """A forked task process writes to its own standard streams (which opus's task
    processes read from pipes): it gets the real streams back, since its copy of the
    display would draw a line of its own, and keep partial lines."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, Tee):  # an attempt's output is kept: below what keeps it
            if isinstance(stream.target, _AboveProgress):
                stream.target = stream.target.target
        elif isinstance(stream, _AboveProgress):
            setattr(sys, name, stream.target)


os.register_at_fork(after_in_child=_detach_in_child)


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


class _AboveProgress(io.TextIOBase):
    """A terminal stream whose complete lines are written above the progress line.

    A partial line (`print` writes the text, then the newline) waits for its end, or
    for the run's end; each thread's separately, so lines printed by tasks running at
    once on a thread pool come out whole.
    """

    def __init__(self, progress: Progress, target: TextIO) -> None:
        super().__init__()
        self.progress = progress
        self.target = target
        self.pending: dict[int, str] = {}

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        with self.progress._lock:
            pending = self.pending.pop(thread, "") + text
            complete, newline, rest = pending.rpartition("\n")
            if rest:
                self.pending[thread] = rest
            if newline:
                self.progress.write_lines(self.target, complete + newline)
        return len(text)

    def close_line(self) -> None:
        """Write what is left of partial lines (at the end of the run), each ended."""
        if self.pending:
            self.progress._clear()
            self.target.write("".join(f"{line}\n" for line in self.pending.values()))
            self.pending.clear()

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> object:
        return getattr(self.target, name)  # buffer, errors, ...: the terminal's own

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")
