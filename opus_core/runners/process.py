"""The `process` runner: one OS process per task, killed on stop or timeout.

Each task runs in a `multiprocessing` process of the `fork` context, so
functions defined anywhere, closures included, run without being pickled.
The result comes back as one message on a `multiprocessing` pipe the moment
the function returns. One watcher thread waits on every task's pipe and on
its process's sentinel (`Process.sentinel`), registered once each with an
epoll selector.

Task processes die with the process that started them, whatever ends it:

* each puts itself in a process group of its own, so `stop()` and timeouts
  kill the task and everything it started (`os.killpg`);
* each watches a *lifeline*, a pipe only the parent holds open for writing:
  when the parent ends — exit, crash, SIGKILL — the pipe closes and the
  task's whole group is killed (on Linux by SIGIO, which the kernel sends the
  group when the pipe closes; elsewhere by a thread that waits for it);
* a task process the main thread started also has Linux's parent-death
  signal set, whose handler kills the task's group, so it dies with opus even
  if it ignores SIGIO;
* `ProcessRunner.shutdown()` kills a task process that sent its result but
  lingers on (a thread the task left running), and the program's exit kills
  every task process still there: a program that wants a result waits for it.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.errors import OpusError, ProcessDiedError, RemoteTaskError
from opus_core.report import REMOTE_TRACEBACK
from opus_core.runners.base import BaseTaskRun, Runner, run_name

if TYPE_CHECKING:
    from multiprocessing.connection import Connection


def _context() -> Any:
    """`multiprocessing`'s fork context, imported with the first task (not at start-up)."""
    import multiprocessing

    return multiprocessing.get_context("fork")


_DEFERRED = {signal.SIGINT, signal.SIGTERM}
_forking = threading.local()  # the signal mask of the thread forking, for its child
_PARENT_GONE = getattr(signal, "SIGRTMIN", signal.SIGUSR2) + 2  # a real-time signal nobody uses


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a `RemoteTaskError` with its type and message.

    Either way it carries this process's traceback as text in a note (see
    `opus_core.report.format_traceback`): the frames themselves cannot travel.
    """
    import pickle
    import traceback

    detail = "".join(traceback.format_exception(exc)).rstrip()
    try:
        exc.add_note(f"{REMOTE_TRACEBACK}{detail}")
        pickle.loads(pickle.dumps(exc))
    except Exception:
        kind = type(exc)
        portable = RemoteTaskError(f"{kind.__module__}.{kind.__qualname__}", _text(exc))
        portable.add_note(f"{REMOTE_TRACEBACK}{detail}")
        return portable
    return exc


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be shown>"


def _message(fn: Callable[..., Any], args: Any, kwargs: Any) -> bytes:
    """Run `fn` and pickle what it returned or raised."""
    import pickle

    try:
        message: tuple[bool, Any] = (True, fn(*args, **kwargs))
    except BaseException as exc:
        message = (False, _portable(exc))
    try:
        return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        what = "result" if message[0] else "exception"
        error = OpusError(
            f"the {what} of task {run_name(fn)!r} could not be sent "
            f"back from its process: {type(exc).__name__}: {exc}"
        )
        return pickle.dumps((False, error), pickle.HIGHEST_PROTOCOL)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


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
            atexit.register(_end_lingering, everything=True)
        return _lifeline


def _forked() -> None:
    """In every forked child: the parent's lifeline is the parent's alone to hold open."""
    global _lifeline
    if _lifeline is not None:
        os.close(_lifeline[1])  # only the parent may keep the pipe open for writing
        _lifeline = None  # a task that starts tasks makes a lifeline of its own


os.register_at_fork(after_in_child=_forked)


def _die_with_parent(
    read_end: int, parent: int, own_group: bool
) -> None:  # pragma: no cover - runs in the child
    """Arrange for this task's process group to be killed when the parent ends.

    On Linux the lifeline is reopened (a description of its own) and set to send
    SIGIO to the group when it changes — which happens only when the parent's
    end closes; SIGIO's default action ends each process of the group at once,
    even one blocked in C code. Elsewhere a thread waits for the end of file.
    """
    try:
        import fcntl

        own = os.open(f"/proc/self/fd/{read_end}", os.O_RDONLY)
        # The group this process leads; never a group it shares with others.
        fcntl.fcntl(own, fcntl.F_SETOWN, -os.getpid() if own_group else os.getpid())
        fcntl.fcntl(own, fcntl.F_SETFL, os.O_RDONLY | os.O_ASYNC)
    except (OSError, ImportError, AttributeError, ValueError):
        waiter = threading.Thread(target=_wait_for_parent, args=(read_end, own_group), daemon=True)
        waiter.start()
        return
    if os.getppid() != parent:  # the parent ended before the signal was armed
        if own_group:
            os.killpg(0, signal.SIGKILL)
        os._exit(1)


def _parent_death_signal(own_group: bool) -> None:  # pragma: no cover - runs in the child
    """Linux's PR_SET_PDEATHSIG, for a task that ignores SIGIO: a signal when the thread that
    forked this process ends, whose handler kills the task's group.

    Set only for forks made by the main thread, whose end is the program's. The signal
    is handled (not SIGKILL) so that the whole group goes: the task's own death would
    otherwise close the lifeline description SIGIO is armed on before the kernel sends it.
    """

    def parent_gone(signum: int, frame: object) -> None:
        if own_group:
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    try:
        import ctypes

        signal.signal(_PARENT_GONE, parent_gone)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(_PARENT_GONE), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError, ImportError, ValueError):
        pass


def _wait_for_parent(read_end: int, own_group: bool) -> None:  # pragma: no cover - in the child
    try:
        while os.read(read_end, 1):
            pass
    except OSError:
        pass
    if own_group:  # the parent is gone: so are this task and what it started
        os.killpg(0, signal.SIGKILL)
    os._exit(1)


def _child(
    send: Connection,
    lifeline: int,
    parent: int,
    main_thread: bool,
    fn: Callable[..., Any],
    args: Any,
    kwargs: Any,
) -> None:  # pragma: no cover - runs in the child
    # The task starts with the signal handling of a plain Python program, not with what the
    # program that started it set up (the `opus` command's SIGTERM handler, say).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Masked across the fork: the task gets the mask its caller had before.
    signal.pthread_sigmask(signal.SIG_SETMASK, getattr(_forking, "mask", set()))
    try:
        os.setpgid(0, 0)  # a group of its own, so stop() can kill whatever it starts too
        own_group = True
    except OSError:
        own_group = False
    if main_thread:
        _parent_death_signal(own_group)
    _die_with_parent(lifeline, parent, own_group)
    try:  # tasks do not read the caller's terminal
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    except OSError:
        pass
    message = _message(fn, args, kwargs)
    _flush_std_streams()  # what the task printed is out before its result is
    send.send_bytes(message)
    send.close()
    # multiprocessing ends the process: it waits for the task's own threads and
    # processes, flushes the standard streams and exits.


# -- the watcher ---------------------------------------------------------------------------------


class _Watcher:
    """One thread that collects what every task process sends back, and its end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector: Any = None
        self._thread: threading.Thread | None = None

    def watch(self, run: MultiprocessTaskRun) -> None:
        import selectors

        with self._lock:
            if self._selector is None:
                self._selector = selectors.DefaultSelector()
            self._selector.register(run._receive.fileno(), selectors.EVENT_READ, (run, True))
            self._selector.register(run._process.sentinel, selectors.EVENT_READ, (run, False))
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
                run, is_result = key.data
                try:
                    if is_result:
                        run._receive_result()
                    else:
                        run._reap()
                except Exception as exc:  # this thread must go on for every other run
                    run._finish(
                        exception=OpusError(
                            f"lost track of the process of task {run.name!r}: "
                            f"{type(exc).__name__}: {exc}"
                        )
                    )


_watcher = _Watcher()
_live: dict[MultiprocessTaskRun, ProcessRunner | None] = {}  # runs whose process is not reaped
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


def _end_lingering(owner: ProcessRunner | None = None, everything: bool = False) -> None:
    """Kill task processes that sent their result but live on (or, with `everything`, all),
    and wait (briefly) for the watcher to collect them."""
    import time

    with _live_lock:
        runs = [run for run, runner in _live.items() if owner is None or runner is owner]
    killed = [run for run in runs if everything or run.done()]
    for run in killed:
        run._kill()
    deadline = time.monotonic() + 5
    while any(not run._reaped for run in killed) and time.monotonic() < deadline:
        time.sleep(0.01)


def _out_of_files(exc: OSError, name: str) -> BaseException:
    """A clear error for a task that cannot start for want of file descriptors."""
    import errno

    if exc.errno not in (errno.EMFILE, errno.ENFILE):
        return exc
    with _live_lock:
        running = len(_live)
    return OpusError(
        f"cannot start task {name!r}: too many open files with {running} task process(es) "
        "running (each holds two); wait for some runs, cap them with max_workers, or "
        "raise the limit (ulimit -n)"
    )


class MultiprocessTaskRun(BaseTaskRun):
    """A run in a process of its own; `stop()` kills the process and its children."""

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        runner: ProcessRunner | None = None,
    ):
        super().__init__(run_name(fn))
        # What the child will import, imported here first: a module another thread is
        # importing at the moment of the fork stays locked in the child for ever.
        import ctypes  # noqa: F401
        import fcntl  # noqa: F401
        import pickle  # noqa: F401
        import selectors  # noqa: F401
        import traceback  # noqa: F401

        lifeline, _ = _lifeline_fds()
        try:
            receive, send = _context().Pipe(duplex=False)
        except OSError as exc:
            raise _out_of_files(exc, self.name) from None
        self._receive = receive
        self._process = _context().Process(
            target=_child,
            args=(
                send,
                lifeline,
                os.getpid(),
                threading.current_thread() is threading.main_thread(),
                fn,
                args,
                kwargs,
            ),
            name=f"opus-{self.name}",
        )
        self._reaped = False
        self._kill_lock = threading.Lock()
        _flush_std_streams()  # or the child would print what the caller printed again
        # Ctrl-C or SIGTERM arriving in the middle of the fork would run its handler in
        # whichever at-fork hook is running (logging's holds a lock): it waits until the
        # child is started, and is then raised here, where the child is cleaned up.
        _forking.mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
        try:
            self._process.start()
        except OSError as exc:
            receive.close()
            raise _out_of_files(exc, self.name) from None
        finally:
            send.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, _forking.mask)
        self._pid: int = self._process.pid
        try:
            try:
                os.setpgid(self._pid, self._pid)
            except OSError:
                pass  # the child did it first, or has already ended
            with _live_lock:
                _live[self] = runner
            _watcher.watch(self)
        except BaseException:
            # Ctrl-C (or anything else) between the start and the watch: nobody would ever
            # stop or collect this process, so it goes now.
            self._kill()
            self._process.join()
            self._reaped = True
            self._closed()
            raise

    @property
    def pid(self) -> int:
        """The task process's id."""
        return self._pid

    def _receive_result(self) -> None:
        """The pipe is readable: the result, or its end because the process ended without one."""
        import pickle

        if self._receive.closed:
            return  # taken already, when the process's end was seen first
        _watcher.forget(self._receive.fileno())
        try:
            data = self._receive.recv_bytes()
        except (EOFError, OSError):
            return  # no result: the sentinel says how the process ended
        finally:
            self._receive.close()
        try:
            ok, payload = pickle.loads(data)
        except Exception as exc:
            ok, payload = (
                False,
                OpusError(
                    f"the result of task {self.name!r} could not be read back from its "
                    f"process: {type(exc).__name__}: {exc}"
                ),
            )
        if ok:
            self._finish(value=payload)
        else:
            self._finish(exception=payload)

    def _reap(self) -> None:
        """The process ended: collect it, and say how it died if it sent no result."""
        if self._reaped:
            return
        _watcher.forget(self._process.sentinel)
        if not self._receive.closed and self._receive.poll():
            self._receive_result()  # what the process sent just before it ended
        with self._kill_lock:
            for _ in range(40):  # another thread may be collecting it at this instant
                if self._process.exitcode is not None:
                    break
                self._process.join(0.05)
            # Still nothing: someone else collected it (SIGCHLD ignored, say); it has ended.
            self._reaped = True
        code = self._process.exitcode
        self._closed()
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

    def _closed(self) -> None:
        """The process is collected: let go of it and of the pipe."""
        with _live_lock:
            _live.pop(self, None)
        if not self._receive.closed:
            _watcher.forget(self._receive.fileno())
            self._receive.close()
        try:
            self._process.close()  # its sentinel, and its place among multiprocessing's children
        except ValueError:
            pass  # collected by someone else: multiprocessing never saw it end

    def _kill(self) -> None:
        """Kill the task's process group (its process, and whatever it started)."""
        with self._kill_lock:
            if self._reaped:
                return  # its pid may belong to another process by now
            for kill in (os.killpg, os.kill):
                try:
                    kill(self._pid, signal.SIGKILL)
                except OSError:
                    pass

    def _halt(self) -> None:
        self._kill()


class ProcessRunner(Runner):
    """Runs each task in a new OS process (`"process"`).

    Processes are forked (`multiprocessing`'s `fork` context), so functions
    defined anywhere, closures included, run without being pickled; the
    result or exception comes back pickled. `max_workers` caps how many tasks
    of a graph run at once (default: the number of CPUs plus four, at most
    32); `@task` calls are not capped. `shutdown()` kills what is left of the
    processes it started: all of them with `wait=False`, else those that sent
    their result but live on.
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
        """Start a process that runs `fn(*args, **kwargs)`."""
        return self.run_class(fn, args, kwargs, self)

    def shutdown(self, wait: bool = True) -> None:
        """Kill this runner's task processes that linger (all of them, without `wait`)."""
        _end_lingering(self, everything=not wait)
