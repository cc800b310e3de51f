"""The `process` runner: one forked OS process per task, killed on stop or timeout.

Each task process is forked directly (`os.fork`), without `multiprocessing`'s
start-up work, which cost more than the fork itself. The child sends its
result back through a pipe as one length-prefixed pickle. One reaper thread
watches every task's pipe and its exit (a pidfd where the kernel has them,
else a pipe the child holds open until it exits).
"""

from __future__ import annotations

import gc
import os
import signal
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

from opus_core.errors import OpusError, ProcessDiedError, RemoteTaskError
from opus_core.runners.base import BaseTaskRun, Runner, run_name

_LENGTH = struct.Struct("!Q")  # each message: its length, then a pickle of (ok, payload)
_CHUNK = 1 << 16


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a `RemoteTaskError` with its type and message."""
    import pickle
    import traceback

    detail = "".join(traceback.format_exception(exc)).rstrip()
    try:
        exc.add_note(f"(raised in the task's process)\n{detail}")
        pickle.loads(pickle.dumps(exc))
    except Exception:
        kind = type(exc)
        portable = RemoteTaskError(f"{kind.__module__}.{kind.__qualname__}", str(exc))
        portable.add_note(f"(raised in the task's process)\n{detail}")
        return portable
    return exc


def _message(fn: Callable[..., Any], args: Any, kwargs: Any) -> bytes:
    """Run `fn` and pickle what it returned or raised, framed with its length."""
    import pickle

    try:
        message: tuple[bool, Any] = (True, fn(*args, **kwargs))
    except BaseException as exc:
        message = (False, _portable(exc))
    try:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        what = "result" if message[0] else "exception"
        error = OpusError(
            f"the {what} of task {run_name(fn)!r} could not be sent "
            f"back from its process: {type(exc).__name__}: {exc}"
        )
        data = pickle.dumps((False, error), pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def _begin_child() -> None:
    """Start the child as `multiprocessing` starts its own, so tasks may use it as in one."""
    try:
        os.setpgid(0, 0)  # a group of its own, so stop() can kill whatever it starts too
    except OSError:
        pass
    try:  # tasks do not read the caller's terminal (multiprocessing closes stdin too)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    except OSError:
        pass
    util = sys.modules.get("multiprocessing.util")  # if not imported, there is nothing to do
    if util is not None:
        from multiprocessing import process

        process._children = set()  # type: ignore[attr-defined]  # the parent's are not ours
        util._finalizer_registry.clear()
        util._run_after_forkers()  # e.g. a multiprocessing.Queue passed to a task


def _end_child() -> None:
    """Wait for the task's own threads and processes, as a `multiprocessing` child would."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util._exit_function()
    _flush_std_streams()


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _child_main(
    result_fd: int, fn: Callable[..., Any], args: Any, kwargs: Any
) -> NoReturn:  # pragma: no cover - runs in the child, which ends with os._exit
    # What the child inherits is set aside from the collector: a collection walking it would
    # write to every page of the parent's heap, and each such write copies the page.
    gc.freeze()
    code = 1
    try:
        _begin_child()
        data = _message(fn, args, kwargs)
        view = memoryview(data)
        while view:
            view = view[os.write(result_fd, view) :]
        os.close(result_fd)
        _end_child()
        code = 0
    except BaseException:
        try:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(code)  # never return into the caller's code: this is a copy of it


def _has_pidfd() -> bool:
    """Whether this kernel has pidfds (Linux 5.3+): an exit to wait on without a pipe."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


class _Reaper:
    """One thread that collects what every task process sends back, and its end.

    It reads each run's result pipe as data arrives (a child blocked writing a
    large result must be read from before it can exit) and waits for its exit.
    Each is registered once with an epoll (or the platform's best) selector, so
    a wake costs the same with 5 or 500 processes running.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._selector: Any = None
        self._timeout: float | None = None
        self._thread: threading.Thread | None = None
        self.pidfd: bool | None = None

    def watch(self, run: MultiprocessTaskRun) -> None:
        import selectors

        with self._lock:
            if self._selector is None:
                self._selector = selectors.DefaultSelector()
                # epoll and kqueue see a registration made while another thread waits;
                # select() and poll() only at their next call, so those wake up to look.
                live = ("EpollSelector", "KqueueSelector", "DevpollSelector")
                self._timeout = None if type(self._selector).__name__ in live else 0.05
            self._selector.register(run._result_fd, selectors.EVENT_READ, (run, "result"))
            self._selector.register(run._exit_fd, selectors.EVENT_READ, (run, "exit"))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="opus-reaper", daemon=True)
                self._thread.start()

    def forget(self, fd: int) -> None:
        """Stop watching `fd` (before it is closed), if it is watched."""
        with self._lock:
            if self._selector is not None and fd in self._selector.get_map():
                self._selector.unregister(fd)

    def _loop(self) -> None:
        # Ctrl-C is for the thread that waits on the runs, not for this one.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        selector = self._selector
        while True:
            for key, _ in selector.select(self._timeout):
                run, what = key.data
                try:
                    if what == "result":
                        run._read()
                    else:
                        run._reap()
                except Exception as exc:  # this thread must go on for every other run
                    run._finish(
                        exception=OpusError(
                            f"lost track of the process of task {run.name!r}: "
                            f"{type(exc).__name__}: {exc}"
                        )
                    )

    def _after_fork_in_child(self) -> None:
        # A forked child starts with no reaper thread, and must not share the parent's epoll
        # set: a task that starts processes itself gets a reaper of its own.
        self._reset()


_reaper = _Reaper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reaper._after_fork_in_child)


class MultiprocessTaskRun(BaseTaskRun):
    """A run in a child process of its own; `stop()` kills the process and its children."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        super().__init__(run_name(fn))
        if _reaper.pidfd is None:
            _reaper.pidfd = _has_pidfd()
        # What the child will import, imported here first: a module another thread is
        # importing at the moment of the fork stays locked in the child for ever.
        import pickle  # noqa: F401
        import selectors  # noqa: F401
        import traceback  # noqa: F401

        result_fd, result_w = os.pipe()
        exit_fd, exit_w = (-1, -1) if _reaper.pidfd else os.pipe()
        _flush_std_streams()  # or the child would print what the caller printed again
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(result_fd)
            if exit_fd >= 0:
                os.close(exit_fd)  # exit_w stays open until the child ends
            _child_main(result_w, fn, args, kwargs)
        self._pid = pid
        self._result_fd = result_fd
        self._exit_fd = exit_fd
        self._buffer = bytearray()
        self._reaped = False
        try:
            os.close(result_w)
            if exit_w >= 0:
                os.close(exit_w)
            try:
                os.setpgid(pid, pid)
            except OSError:
                pass  # the child did it first, or has already ended
            if _reaper.pidfd:
                self._exit_fd = os.pidfd_open(pid)
            os.set_blocking(result_fd, False)
            _reaper.watch(self)
        except BaseException:
            # Ctrl-C (or anything else) between the fork and the watch: nobody would ever
            # stop or collect this child, so it goes now.
            self._halt()
            os.waitpid(pid, 0)
            self._reaped = True
            for fd in {result_fd, self._exit_fd} - {-1}:
                _reaper.forget(fd)
                os.close(fd)
            raise

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._pid

    def _read(self, drain: bool = False) -> None:
        """Take what the result pipe holds (with `drain`, all of it); finish once it is whole.

        The pipe is closed once the whole message is in, or at its end of file.
        """
        while self._result_fd >= 0:
            try:
                chunk = os.read(self._result_fd, _CHUNK)
            except BlockingIOError:
                return  # more to come: the selector says when
            except OSError:
                chunk = b""
            if chunk:
                self._buffer += chunk
                if not self._deliver():
                    if drain:
                        continue
                    return
            _reaper.forget(self._result_fd)
            os.close(self._result_fd)
            self._result_fd = -1

    def _deliver(self) -> bool:
        """Finish the run if the whole message has arrived; True if it has."""
        buffer = self._buffer
        if len(buffer) < _LENGTH.size:
            return False
        (length,) = _LENGTH.unpack_from(buffer)
        if len(buffer) < _LENGTH.size + length:
            return False
        import pickle

        try:
            ok, payload = pickle.loads(buffer[_LENGTH.size : _LENGTH.size + length])
        except Exception as exc:
            ok, payload = (
                False,
                OpusError(
                    f"the result of task {self.name!r} could not be read back from its "
                    f"process: {type(exc).__name__}: {exc}"
                ),
            )
        self._buffer = bytearray()
        if ok:
            self._finish(value=payload)
        else:
            self._finish(exception=payload)
        return True

    def _reap(self) -> None:
        """The process ended: collect it, and say how it died if it sent no result."""
        _reaper.forget(self._exit_fd)
        os.close(self._exit_fd)
        try:
            _, status = os.waitpid(self._pid, 0)
            code: int | None = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = None  # collected by someone else
        self._reaped = True
        self._read(drain=True)  # what the child wrote before it ended
        if self.done():
            return
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exited with code {code}"
        )
        self._finish(
            exception=ProcessDiedError(
                f"the process of task {self.name!r} (pid {self._pid}) {how} "
                "without sending back a result"
            )
        )

    def _halt(self) -> None:
        if self._reaped:
            return  # its pid may belong to another process by now
        for kill in (os.killpg, os.kill):
            try:
                kill(self._pid, signal.SIGKILL)
            except OSError:
                pass


class ProcessRunner(Runner):
    """Runs each task in a new OS process (`"process"`).

    Processes are forked, so functions defined anywhere, closures included,
    run without being pickled; the result or exception comes back pickled.
    `max_workers` caps how many tasks of a graph run at once (default: the
    number of CPUs plus four, at most 32); `@task` calls are not capped.
    """

    name: ClassVar[str] = "process"
    shares_memory: ClassVar[bool] = False
    run_class: ClassVar[type[MultiprocessTaskRun]] = MultiprocessTaskRun

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            raise ValueError(
                f"max_workers must be a whole number of at least 1, got {max_workers!r}"
            )
        self.max_workers = max_workers

    @property
    def max_concurrency(self) -> int | None:
        """`max_workers`, or the number of CPUs plus four (at most 32)."""
        return self.max_workers or min(32, (os.cpu_count() or 1) + 4)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Fork a process that runs `fn(*args, **kwargs)`."""
        return self.run_class(fn, args, kwargs)
