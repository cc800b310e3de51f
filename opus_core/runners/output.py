"""What a task process prints, carried to the process that started it.

A forked task process (a `process` run, a `processpool` worker) does not write
to the terminal itself: its file descriptors 1 and 2 are the write ends of two
pipes (`TaskOutput.become_child_streams`), so `print`, logging, `sys.stdout.buffer`,
C code and the commands it starts all write there. The parent reads the pipes
on the watcher thread that already waits for the task's result, and writes
what arrives, line by line, to its own `sys.stdout` and `sys.stderr` as they are
at that moment: the terminal, a redirection, or the progress display of
`opus run`, which writes each line above its progress line.

Only whole lines are written while the task runs, so the lines of tasks
running at once never share a line; what a task printed is written before its
result is reported (`drain`, then `end_lines`, which writes a last line that
has no newline). A line longer than `LONGEST_LINE` is written in pieces, so a
task printing without end never holds more than that in the parent.
"""

from __future__ import annotations

import codecs
import os
import sys
import threading
from collections.abc import Callable
from typing import TextIO

CHUNK = 65536
"""How many bytes are read from a pipe at a time."""

LONGEST_LINE = 65536
"""The most characters of a line held back waiting for its end."""


class _Stream:
    """One of the two pipes: its read end, and the line it has begun."""

    __slots__ = ("decoder", "fd", "name", "pending")

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""


def flush_std_streams() -> None:
    """Flush standard output and error, so what was printed goes out before what follows."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


class TaskOutput:
    """The standard output and error of one task process, read by the parent.

    Made in the parent before the fork. In the child, `become_child_streams` puts
    the pipes in place of fds 1 and 2; in the parent, `parent_side` closes their
    write ends, and `read(fd)` is called whenever one of `fds` is readable.
    `forget(fd)` is called before a read end is closed (to stop watching it).
    """

    def __init__(self, forget: Callable[[int], None] | None = None) -> None:
        self._forget = forget
        out_read, self._out_write = os.pipe()
        try:
            err_read, self._err_write = os.pipe()
        except OSError:
            os.close(out_read)
            os.close(self._out_write)
            raise
        for fd in (out_read, err_read):
            os.set_blocking(fd, False)
        self._streams = {
            fd: _Stream(fd, name) for fd, name in ((out_read, "stdout"), (err_read, "stderr"))
        }
        self._lock = threading.Lock()
        self.closed = False

    @property
    def fds(self) -> tuple[int, ...]:
        """The read ends still open, to watch for reading."""
        return tuple(self._streams)

    def become_child_streams(self) -> None:  # pragma: no cover - runs in the child
        """In the forked child: fds 1 and 2 become the pipes (`sys.stdout` and `sys.stderr`,
        which wrap them, with them); the read ends are the parent's."""
        flush_std_streams()
        os.dup2(self._out_write, 1)
        os.dup2(self._err_write, 2)
        for fd in (self._out_write, self._err_write, *self._streams):
            os.close(fd)

    def parent_side(self) -> None:
        """In the parent, once the child is forked: the write ends are the child's alone."""
        for fd in (self._out_write, self._err_write):
            try:
                os.close(fd)
            except OSError:
                pass

    def read(self, fd: int) -> bool:
        """`fd` is readable: write the whole lines that arrived. False once the pipe is at
        its end (every writer is gone), and `fd` is then closed."""
        with self._lock:
            stream = self._streams.get(fd)
            if stream is None:
                return False
            return self._read(stream)

    def drain(self) -> None:
        """Write what the pipes hold now (what the task printed before it sent its result)."""
        with self._lock:
            for stream in list(self._streams.values()):
                while self._read(stream, until_empty=True):
                    pass

    def end_lines(self) -> None:
        """The task ended: write the lines it began without ending them."""
        with self._lock:
            for stream in self._streams.values():
                if stream.pending:
                    text, stream.pending = stream.pending, ""
                    _write(stream.name, text, unended=True)

    def close(self) -> None:
        """Write what is left and close the read ends (the child is collected)."""
        self.drain()
        self.end_lines()
        with self._lock:
            self.closed = True
            for fd in list(self._streams):
                self._close(fd)

    def _read(self, stream: _Stream, until_empty: bool = False) -> bool:
        """One read of `stream`; True if it gave bytes (and, `until_empty`, may give more)."""
        try:
            data = os.read(stream.fd, CHUNK)
        except BlockingIOError:
            return not until_empty
        except OSError:
            data = b""
        if not data:
            text = stream.decoder.decode(b"", final=True)
            stream.pending += text
            if stream.pending:
                text, stream.pending = stream.pending, ""
                _write(stream.name, text, unended=True)
            self._close(stream.fd)
            return False
        text = stream.pending + stream.decoder.decode(data)
        lines, newline, rest = text.rpartition("\n")
        if newline:
            _write(stream.name, lines + newline)
        if len(rest) > LONGEST_LINE:
            _write(stream.name, rest, unended=True)
            rest = ""
        stream.pending = rest
        return True

    def _close(self, fd: int) -> None:
        if self._streams.pop(fd, None) is not None:
            if self._forget is not None:
                self._forget(fd)
            try:
                os.close(fd)
            except OSError:
                pass


def _write(name: str, text: str, unended: bool = False) -> None:
    """Write `text` to `sys.stdout` or `sys.stderr` (`name`) as it is now.

    `unended`: the text does not end with a newline (the task ended, or the line is too
    long to hold). On a terminal a newline is added, so that the next line (another
    task's, the progress line) starts on a line of its own; elsewhere (a file, a pipe)
    the text is written as the task wrote it.
    """
    target: TextIO | None = getattr(sys, name)
    if target is None:
        return
    try:
        if unended and _is_terminal(target):
            text += "\n"
        target.write(text)
        target.flush()
    except Exception:  # the reader went away (`| head`), the stream is closed or cannot
        pass  # take the text: the task goes on, and what it printed is dropped


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
