"""The `process` runner: one OS process per task, killed on stop or timeout."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.errors import OpusError, ProcessDiedError, RemoteTaskError
from opus_core.runners.base import BaseTaskRun, Runner, run_name

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

# multiprocessing is imported where it is used: `opus --help` and `opus plugins list`
# load this module (through the built-in plugin) and should not pay for it.


def _fork_context() -> Any:
    import multiprocessing

    return multiprocessing.get_context("fork")


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


def _child_main(conn: Connection, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    try:
        os.setpgid(0, 0)  # a group of its own, so stop() can kill whatever it starts too
    except OSError:
        pass
    try:
        message: tuple[bool, Any] = (True, fn(*args, **kwargs))
    except BaseException as exc:
        message = (False, _portable(exc))
    try:
        conn.send(message)
    except Exception as exc:
        what = "result" if message[0] else "exception"
        conn.send(
            (
                False,
                OpusError(
                    f"the {what} of task {run_name(fn)!r} could not be sent "
                    f"back from its process: {type(exc).__name__}: {exc}"
                ),
            )
        )
    conn.close()


class _Reaper:
    """One thread that collects what every task process sends back, and its end.

    It waits on each run's result pipe as well as its process: a child blocked
    writing a large result must be read from before it can exit. Each pipe and
    process is registered once with an epoll (or the platform's best) selector,
    so a wake costs the same with 5 or 500 processes running.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector: Any = None
        self._timeout: float | None = None
        self._thread: threading.Thread | None = None

    def watch(self, run: MultiprocessTaskRun) -> None:
        with self._lock:
            if self._selector is None:
                import selectors

                self._selector = selectors.DefaultSelector()
                # epoll and kqueue see a registration made while another thread waits;
                # select() and poll() only at their next call, so those wake up to look.
                live = ("EpollSelector", "KqueueSelector", "DevpollSelector")
                self._timeout = None if type(self._selector).__name__ in live else 0.05
            self._selector.register(run._conn, EVENT_READ, (run, "result"))
            self._selector.register(run._process.sentinel, EVENT_READ, (run, "exit"))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="opus-reaper", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        selector = self._selector
        while True:
            for key, _ in selector.select(self._timeout):
                with self._lock:
                    selector.unregister(key.fileobj)
                run, what = key.data
                if what == "result":
                    run._receive()
                else:
                    run._reap()


EVENT_READ = 1  # selectors.EVENT_READ, without importing selectors for `opus --help`


_reaper = _Reaper()


class MultiprocessTaskRun(BaseTaskRun):
    """A run in a child process of its own; `stop()` kills the process and its children."""

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: Any = None,
    ) -> None:
        super().__init__(run_name(fn))
        ctx = context or _fork_context()
        receiver, sender = ctx.Pipe(duplex=False)
        self._conn: Connection = receiver
        self._message: tuple[bool, Any] | None = None
        self._process = ctx.Process(
            target=_child_main, args=(sender, fn, args, kwargs), name=f"opus-{self.name}"
        )
        self._process.start()
        sender.close()
        pid = self._process.pid
        assert pid is not None
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it first, or has already ended
        _reaper.watch(self)

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        pid: int | None = self._process.pid
        return pid

    def _receive(self) -> None:
        """The result pipe is readable: a message, or the end of a child that sent none."""
        try:
            self._message = self._conn.recv()
        except (EOFError, OSError):
            pass
        finally:
            self._conn.close()

    def _reap(self) -> None:
        """The process ended: finish the run with what it sent, or say how it died."""
        process = self._process
        if self._message is None and not self._conn.closed:
            try:
                if self._conn.poll():
                    self._message = self._conn.recv()
            except (EOFError, OSError):
                pass
        process.join()
        if self._message is not None:
            ok, payload = self._message
            if ok:
                self._finish(value=payload)
            else:
                self._finish(exception=payload)
            return
        code = process.exitcode
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exited with code {code}"
        )
        self._finish(
            exception=ProcessDiedError(
                f"the process of task {self.name!r} (pid {process.pid}) {how} "
                "without sending back a result"
            )
        )

    def _halt(self) -> None:
        pid = self._process.pid
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
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
        self._context = _fork_context()

    @property
    def max_concurrency(self) -> int | None:
        """`max_workers`, or the number of CPUs plus four (at most 32)."""
        return self.max_workers or min(32, (os.cpu_count() or 1) + 4)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Fork a process that runs `fn(*args, **kwargs)`."""
        return self.run_class(fn, args, kwargs, self._context)
