"""Task processes, as the `process` and `processpool` runners start and watch them.

`TaskProcess` is one forked process (the task's keeper: `opus_core.runners.fork`) with
its lifeline and result pipe; one watcher thread waits on every task process's pipe and
sentinel; `end_processes` kills what is left at the end of a run or of the program.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from opus_core.errors import OpusError
from opus_core.runners.base import Runner
from opus_core.runners.fork import become_task_process, end_descendants, prepare
from opus_core.runners.output import TaskOutput, flush_std_streams
from opus_core.runners.remote import run_work

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess


def fork_context() -> Any:
    """`multiprocessing`'s fork context, imported with the first task (not at start-up)."""
    import multiprocessing

    return multiprocessing.get_context("fork")


DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_forking = threading.local()  # the signal mask of the thread forking, for its child


# -- the lifeline -----------------------------------------------------------------------------

_lifeline: tuple[int, int] | None = None  # (read end, write end), made by the first task
_lifeline_lock = threading.Lock()


def _lifeline_fds() -> tuple[int, int]:
    global _lifeline
    with _lifeline_lock:
        if _lifeline is None:
            import multiprocessing.util  # noqa: F401  (its exit function registers first)

            _lifeline = os.pipe()
            # Registered after multiprocessing's own exit function, so it runs before it: the
            # task processes still running are killed rather than waited for.
            atexit.register(end_processes, everything=True)
        return _lifeline


def _forked() -> None:
    """In every forked child: the parent's lifeline is the parent's alone to hold open."""
    global _lifeline
    if _lifeline is not None:
        os.close(_lifeline[1])  # only the parent may keep the pipe open for writing
        _lifeline = None  # a task that starts tasks makes a lifeline of its own


os.register_at_fork(after_in_child=_forked)


def forking_mask() -> set[signal.Signals]:
    """In a child just forked by `TaskProcess`: the signal mask its forking thread had."""
    return set(getattr(_forking, "mask", set()))


def _start_child(
    output: TaskOutput, target: Callable[..., None], *args: Any
) -> None:  # pragma: no cover - runs in the child
    """The first thing a forked task process does: its output goes to the parent."""
    output.become_child_streams()
    target(*args)


def unwatch(fd: int) -> None:
    """Stop watching `fd` (a task process's result pipe or sentinel) before it is closed."""
    _watcher.forget(fd)


def run_task(
    send: Connection,
    lifeline: int,
    fn: Callable[..., Any],
    args: Any,
    kwargs: Any,
) -> None:  # pragma: no cover - runs in the child
    # Masked across the fork: the task gets the mask its caller had before.
    become_task_process(lifeline, forking_mask())
    message = run_work(fn, args, kwargs)
    end_descendants(os.getpid())  # what the task started ends with it
    flush_std_streams()  # what the task printed is out before its result is
    send.send_bytes(message)
    send.close()
    # multiprocessing ends the process: it waits for the task's own threads and
    # processes, flushes the standard streams and exits.


# -- one task process ----------------------------------------------------------------------------


class TaskProcess:
    """A forked process of opus's own — a task's, or a `processpool` worker's — and the
    pipe it answers on.

    `target(send, lifeline, *args)` runs in the child, which calls
    `become_task_process` first (the process forked becomes the keeper, and the call
    returns in the task process it forks) and sends its messages on `send`. The keeper
    leads a process group of its own, so `kill()` takes whatever the task started with it;
    `pid` is the keeper's, and its exit code or signal is the task process's. What the
    child writes to its standard output and error comes through `output` (a
    `TaskOutput`): the watcher writes it, whole lines, to this process's own.

    `adopt(process)` is called once the child is forked, before Ctrl-C or SIGTERM can
    interrupt the caller: the holder takes the process and has the watcher `watch` it.
    The constructor either returns a process so held, or raises having killed and
    collected the child: an interruption never leaves a process nobody ends (multiprocessing
    would wait for it at the program's exit).
    """

    def __init__(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        name: str,
        adopt: Callable[[TaskProcess], None] | None = None,
    ) -> None:
        # What the child will import, imported here first: a module another thread is
        # importing at the moment of the fork stays locked in the child for ever.
        import ctypes  # noqa: F401
        import fcntl  # noqa: F401
        import pickle  # noqa: F401
        import resource  # noqa: F401
        import select  # noqa: F401
        import selectors  # noqa: F401
        import traceback  # noqa: F401

        prepare()
        lifeline, _ = _lifeline_fds()
        try:
            receive, send = fork_context().Pipe(duplex=False)
        except OSError as exc:
            raise out_of_files(exc, name) from None
        self.receive: Connection = receive
        try:
            self.output = TaskOutput(forget=unwatch)
        except OSError as exc:
            receive.close()
            send.close()
            raise out_of_files(exc, name) from None
        self.process: BaseProcess = fork_context().Process(
            target=_start_child,
            args=(self.output, target, send, lifeline, *args),
            name=f"opus-{name}",
        )
        self.reaped = False
        self.closed = False
        self.kill_lock = threading.Lock()
        self.pipe_lock = threading.Lock()  # held to read or close `receive` (two threads may)
        self.holder: ProcessHolder | None = None  # set by watch()
        flush_std_streams()  # or the child would print what the caller printed again
        # Ctrl-C or SIGTERM arriving in the middle of the fork would run its handler in
        # whichever at-fork hook is running (logging's holds a lock): it waits until the
        # child is started and adopted (watched, and so killed by `shutdown` and at exit),
        # and is raised when the mask is restored; the caller then never gets this
        # object, so the child is killed and collected here before the exception goes on.
        mask = _forking.mask = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
        try:
            try:
                self.process.start()
            except OSError as exc:
                receive.close()
                self.output.close()
                raise out_of_files(exc, name) from None
            finally:
                send.close()
                # Let go of it here: its __del__ would run as this returns, and a Ctrl-C
                # raised in a __del__ is lost (Python prints it and goes on).
                del send
                self.output.parent_side()
            self.pid: int = self.process.pid
            try:
                os.setpgid(self.pid, self.pid)
            except OSError:
                pass  # the child did it first, or has already ended
            if adopt is not None:
                adopt(self)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a deferred Ctrl-C lands here
        except BaseException:
            forked = None if self.reaped else self.process.pid
            if forked is not None:  # the caller never gets it: nobody else would end it
                self.pid = forked  # not set yet if the interruption came inside start()
                self.discard()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise

    def kill(self) -> None:
        """Kill the process, and whatever it started: what is below it (in a session of its
        own too, see `end_descendants`), then its process group."""
        with self.kill_lock:
            if self.reaped:
                return  # its pid may belong to another process by now
            self._kill()

    def _kill(self) -> None:
        end_descendants(self.pid)
        for kill in (os.killpg, os.kill):
            try:
                kill(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def collect(self) -> int | None:
        """The process ended: collect it and return its exit code (None if someone else
        collected it first)."""
        with self.kill_lock:
            for _ in range(40):  # another thread may be collecting it at this instant
                if self.process.exitcode is not None:
                    break
                self.process.join(0.05)
            # Still nothing: someone else collected it (SIGCHLD ignored, say); it has ended.
            self.reaped = True
        return self.process.exitcode

    def discard(self) -> None:
        """Kill the process and collect it now, and let go of it: it was started for a
        caller that will never see it (interrupted while it started)."""
        with self.kill_lock:
            if self.reaped:
                return  # collected already, by the watcher: it lets go of it too
            self._kill()
            self.process.join()
            self.reaped = True
        holder = self.holder
        if holder is not None:
            release(holder)
        else:
            self.close()

    def flush_output(self) -> None:
        """Write what the process printed so far, its unfinished lines too: it sent a
        result, and what it printed comes before."""
        self.output.drain()
        self.output.end_lines()

    def close(self) -> None:
        """Stop watching the collected process; let go of it and of its pipes (writing what
        it printed last). Once: the watcher and `discard` may both come here."""
        with self.kill_lock:
            if self.closed:
                return
            self.closed = True
            self.output.close()
            try:
                _watcher.forget(self.process.sentinel)
            except ValueError:
                return  # closed already
            with self.pipe_lock:
                if not self.receive.closed:
                    _watcher.forget(self.receive.fileno())
                    self.receive.close()
            try:
                self.process.close()  # its sentinel, and its place among multiprocessing's children
            except ValueError:
                pass  # collected by someone else: multiprocessing never saw it end


def how_it_ended(code: int | None) -> str:
    """`was killed by SIGKILL`, `exited with code 1`: the end of a process, for a message."""
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


# -- the watcher ---------------------------------------------------------------------------------


class ProcessHolder(Protocol):
    """What holds a `TaskProcess` (a process run, a pool's worker): the watcher reports to it."""

    @property
    def child(self) -> TaskProcess:
        """The process held."""

    def done(self) -> bool:
        """True when the process has sent what was asked of it but may live on."""

    def receive_message(self) -> None:
        """The process's pipe is readable (a message, or its end)."""

    def reap(self) -> None:
        """The process ended."""

    def lost(self, error: Exception) -> None:
        """Handling a message or the end raised `error`."""


_MESSAGE, _END, _OUTPUT = "message", "end", "output"  # what a watched fd is


class _Watcher:
    """One thread that collects what every task process sends back, and its end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector: Any = None
        self._thread: threading.Thread | None = None

    def watch(self, holder: ProcessHolder) -> None:
        import selectors

        child = holder.child
        with self._lock:
            if self._selector is None:
                self._selector = selectors.DefaultSelector()
            register = self._selector.register
            register(child.receive.fileno(), selectors.EVENT_READ, (holder, _MESSAGE))
            register(child.process.sentinel, selectors.EVENT_READ, (holder, _END))
            for fd in child.output.fds:
                register(fd, selectors.EVENT_READ, (child.output, _OUTPUT))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="opus-watcher", daemon=True)
                self._thread.start()

    def forget(self, fd: int) -> None:
        """Stop watching `fd` (before it is closed), if it is watched."""
        with self._lock:
            if self._selector is not None and fd in self._selector.get_map():
                self._selector.unregister(fd)

    def _loop(self) -> None:
        # Ctrl-C and SIGTERM are for the thread that waits on the runs, not for this one.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        # epoll sees a registration made while this thread waits; other selectors only
        # at their next call, so those wake up to look.
        timeout = None if type(self._selector).__name__ == "EpollSelector" else 0.05
        while True:
            for key, _ in self._selector.select(timeout):
                holder, what = key.data
                if what is _OUTPUT:
                    try:
                        holder.read(key.fd)
                    except Exception:  # never expected; this thread must go on regardless
                        self.forget(key.fd)
                    continue
                try:
                    if what is _MESSAGE:
                        holder.receive_message()
                    else:
                        holder.reap()
                except Exception as exc:  # this thread must go on for every other process
                    holder.lost(exc)


_watcher = _Watcher()
_live: dict[ProcessHolder, Runner | None] = {}  # holders whose process is not reaped
_live_lock = threading.Lock()


def _reset_after_fork() -> None:
    # The parent's thread, selector and locks are not this process's: a lock another thread
    # held at the instant of the fork would stay held here for ever.
    global _watcher, _live_lock, _lifeline_lock
    _watcher = _Watcher()
    _live.clear()
    _live_lock = threading.Lock()
    _lifeline_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def watch(holder: ProcessHolder, runner: Runner | None) -> None:
    """Have the watcher report to `holder` and the program's exit kill its process.

    If that is interrupted (Ctrl-C), nobody would ever stop or collect the process,
    so it is killed and collected before the exception goes on.
    """
    try:
        holder.child.holder = holder
        with _live_lock:
            _live[holder] = runner
        _watcher.watch(holder)
    except BaseException:
        holder.child.discard()
        raise


def release(holder: ProcessHolder) -> None:
    """The process of `holder` is collected: forget it, and let go of its pipe."""
    with _live_lock:
        _live.pop(holder, None)
    holder.child.close()


def end_processes(owner: Runner | None = None, everything: bool = False) -> None:
    """Kill the task processes of `owner` (of every runner if None) that sent their result
    but live on (or, with `everything`, all of them), and wait (briefly) for the watcher
    to collect them."""
    import time

    with _live_lock:
        holders = [holder for holder, runner in _live.items() if owner is None or runner is owner]
    killed = [holder for holder in holders if everything or holder.done()]
    for holder in killed:
        holder.child.kill()
    deadline = time.monotonic() + 5
    while any(not holder.child.reaped for holder in killed) and time.monotonic() < deadline:
        time.sleep(0.01)


def out_of_files(exc: OSError, name: str) -> BaseException:
    """A clear error for a task that cannot start for want of file descriptors."""
    import errno

    if exc.errno not in (errno.EMFILE, errno.ENFILE):
        return exc
    with _live_lock:
        running = len(_live)
    return OpusError(
        f"cannot start task {name!r}: too many open files with {running} task process(es) "
        "running (each holds four); wait for some runs, cap them with max_workers, or "
        "raise the limit (ulimit -n)"
    )
