"""The `processpool` runner: reusable worker processes, killed on stop or timeout.

Up to `max_workers` worker processes are forked (`multiprocessing`'s `fork`
context) as tasks arrive, and each runs one task after another. A task travels
to its worker pickled: functions by reference (a function `@task` decorated is
found through its decorator), and, where that fails (closures, lambdas), by
value with `cloudpickle` (`opus_core.runners.remote.dumps_work`). A task that cannot travel either
way (a lock or a `multiprocessing` queue among its arguments), or that its
worker cannot unpickle (a function defined in `__main__` after the worker was
forked), is not refused: it is handed to a worker forked for it, which inherits
it as the `process` runner's processes do, and then stays in the pool.

A worker is a task process of the `process` runner's kind (`TaskProcess`),
collected by the same watcher thread: a keeper (one per worker, not per task)
that watches the lifeline and kills what is below it, and a process group of its
own. So a worker dies with opus, whatever ends opus, and so does whatever its
task started; `stop()` or a timeout kills the worker running that task — its
keeper, its process group, with whatever the task started — and a fresh worker
takes its place for the tasks that follow. A worker that dies on its own fails the one task it was
running (`ProcessDiedError`) and is replaced the same way.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.errors import OpusError, ProcessDiedError, TaskCancelledError
from opus_core.runners.base import BaseTaskRun, Runner, Work, check_count
from opus_core.runners.fork import become_task_process, end_descendants
from opus_core.runners.output import flush_std_streams
from opus_core.runners.remote import dumps_work, read_outcome, run_work
from opus_core.runners.task_process import (
    DEFERRED_SIGNALS,
    TaskProcess,
    end_processes,
    fork_context,
    forking_mask,
    how_it_ended,
    out_of_files,
    release,
    watch,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

_Work = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


# -- a task on its way to a worker ---------------------------------------------------------------


def _dumps(call: _Work) -> bytes | None:
    """`call` pickled for a worker, or None if it cannot be (then a worker is forked for it)."""
    try:  # workers are forked from this process: its `__main__` is theirs
        return dumps_work(call, main_by_value=False)
    except Exception:
        return None


def _serve(
    send: Connection,
    lifeline: int,
    tasks: Connection,
    first: list[_Work],
) -> None:  # pragma: no cover - runs in the worker
    """A worker's life: the task in `first`, then each task that comes on `tasks`, one
    answer each.

    The answer is `run_work`'s `(True, value)` or `(False, exception)`, or
    `(None, why)` when the task could not be unpickled here (a function defined in
    `__main__` after this worker started, say): the pool then forks a worker for it.
    """
    import pickle

    # A worker serves tasks of many callers: it starts with Ctrl-C and SIGTERM unmasked,
    # whichever thread forked it (the watcher masks them for itself).
    become_task_process(lifeline, forking_mask() - DEFERRED_SIGNALS)
    fn, args, kwargs = first.pop()  # popped: nothing of a task outlives it here
    message = run_work(fn, args, kwargs)
    end_descendants(os.getpid())  # what the task started ends with it
    del fn, args, kwargs
    while True:
        flush_std_streams()  # what the task printed is out before its result is
        send.send_bytes(message)
        try:
            data = tasks.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)
        try:
            fn, args, kwargs = pickle.loads(data)
        except BaseException as exc:
            why = f"{type(exc).__name__}: {exc}"
            message = pickle.dumps((None, why), pickle.HIGHEST_PROTOCOL)
            continue
        message = run_work(fn, args, kwargs)
        end_descendants(os.getpid())
        del fn, args, kwargs


# -- runs and workers ---------------------------------------------------------------------------


class PoolTaskRun(BaseTaskRun):
    """A run on a process pool; `stop()` kills the worker running it (a fresh one follows)."""

    def __init__(self, name: str, call: _Work, pool: ProcessPoolRunner) -> None:
        super().__init__(name)
        self._call: _Work | None = call
        self._payload: bytes | None = None
        self._pool = pool
        self._worker: _Worker | None = None

    @property
    def pid(self) -> int | None:
        """The id of the worker process running (or that ran) this task, None before it starts."""
        worker = self._worker
        return None if worker is None else worker.child.pid

    def halt(self) -> None:
        """Kill the worker running this task (a fresh one takes its place)."""
        self._pool.halt_run(self)


class _Worker:
    """One worker process of a pool, and the run it is working on (None: idle)."""

    __slots__ = ("__weakref__", "alive", "child", "pool", "run", "served", "tasks")

    def __init__(self, pool: ProcessPoolRunner, first: PoolTaskRun) -> None:
        self.pool = pool
        self.run: PoolTaskRun | None = first
        self.alive = True  # False once it is killed, retired or dead: it takes no more tasks
        self.served = 0  # tasks it answered
        try:
            receive, self.tasks = fork_context().Pipe(duplex=False)
        except OSError as exc:
            raise out_of_files(exc, first.name) from None
        name = f"{pool.name}-worker"
        try:
            TaskProcess(_serve, (receive, [first._call]), name, adopt=self._adopt)
        except BaseException:
            self.tasks.close()
            raise
        finally:
            receive.close()

    def _adopt(self, child: TaskProcess) -> None:
        """Take the process just forked, and have the watcher watch it."""
        self.child = child
        first = self.run
        if first is not None:
            first._worker = self
            first.mark_running()
        watch(self, self.pool)

    def done(self) -> bool:
        """A worker never lingers the way a finished task process does."""
        return False

    def receive_message(self) -> None:
        self.pool._received(self)

    def reap(self) -> None:
        self.pool._ended(self)

    def lost(self, error: Exception) -> None:
        self.child.kill()
        run = self.run
        if run is not None:
            run.finish(
                exception=OpusError(
                    f"lost track of the worker process of task {run.name!r}: "
                    f"{type(error).__name__}: {error}"
                )
            )


_pools: weakref.WeakSet[ProcessPoolRunner] = weakref.WeakSet()


def _forget_pools_after_fork() -> None:
    # A worker (or any forked child) starts with no pool of its own: the parent's workers
    # are not its children, and a lock held at the instant of the fork stays held.
    for pool in list(_pools):
        pool._forget()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


class ProcessPoolRunner(Runner):
    """Runs tasks in reusable worker processes that are killed on stop or timeout
    (`"processpool"`).

    Up to `max_workers` workers (default: the number of CPUs) are forked as
    tasks arrive and run one task after another, so a task costs a message
    each way instead of a new process. Functions travel pickled by reference
    (module-level functions, `@task` functions, methods and classes), else by
    value with `cloudpickle` (closures, lambdas); a task
    that still cannot travel (a lock among its arguments),
    or that a worker cannot unpickle (a function defined in `__main__` after
    the worker was forked), gets a worker forked for it, which inherits it.
    Results and exceptions come back pickled, as on `process`.

    `stop()` and timeouts kill the worker running the task, with whatever the
    task started, and a fresh worker takes its place; a worker that dies fails
    only the task it was running (`ProcessDiedError`). Workers die with opus.

    Unlike on `process`, tasks share their worker with the tasks before them:
    module-level state they change, or threads they leave running, are seen by
    the next task on that worker, and a worker knows the program as it was when
    it was forked; `max_tasks_per_worker` (default: no limit) replaces a worker
    with a fresh one after that many tasks, so what tasks leak (memory, threads)
    goes with it. A timeout counts from when a worker takes the task: time
    waiting for a free worker is not running. `shutdown()` waits for the runs, then ends the
    workers (`wait=False`: cancels what has not ended and kills them at once).
    """

    name: ClassVar[str] = "processpool"
    shares_memory: ClassVar[bool] = False
    run_class: ClassVar[type[PoolTaskRun]] = PoolTaskRun

    def __init__(
        self, max_workers: int | None = None, max_tasks_per_worker: int | None = None
    ) -> None:
        self.max_workers = check_count("max_workers", max_workers)
        self.max_tasks_per_worker = check_count("max_tasks_per_worker", max_tasks_per_worker)
        self._forget()
        _pools.add(self)

    def _forget(self) -> None:
        """Start with no workers and nothing queued (also in a forked child)."""
        self._lock = threading.Lock()
        self._pending: deque[PoolTaskRun] = deque()
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()  # alive: working or idle

    @property
    def max_concurrency(self) -> int:
        """`max_workers`, or the number of CPUs."""
        return self.max_workers or os.cpu_count() or 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Run `fn(*args, **kwargs)` on a free worker, a new one, or the first to be free."""
        work = Work.of(fn, *args, **kwargs)
        call: _Work = (work.fn, work.args, work.kwargs)
        run = self.run_class(work.name, call, self)
        run._payload = _dumps(call)
        with self._lock:
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                if len(self._workers) < self.max_concurrency:
                    self._workers.add(_Worker(self, run))
                else:
                    run.mark_queued()  # its timeout waits for a worker to take it
                    self._pending.append(run)
                return run
            worker.run = run
            run._worker = worker
        self._send(worker, run)
        return run

    def shutdown(self, wait: bool = True) -> None:
        """End the workers; with `wait`, once every run has ended, else at once (the runs
        that have not ended are cancelled)."""
        super().shutdown(wait)
        while wait:
            with self._lock:
                running = [w.run for w in self._workers if w.run is not None]
                running += [run for run in self._pending if not run.done()]
            if not running:
                break
            for run in running:
                run.wait()
        with self._lock:
            left = [run for run in self._pending if not run.done()]
            left += [w.run for w in self._workers if w.run is not None]
            self._pending.clear()
            self._idle.clear()
            for worker in self._workers:
                worker.alive = False
            self._workers.clear()
        for run in left:
            run.finish(
                exception=TaskCancelledError(
                    f"task run {run.instance_name} was cancelled: its runner was shut down"
                )
            )
        end_processes(self, everything=True)

    # -- what the watcher thread reports ----------------------------------------------------

    def _received(self, worker: _Worker) -> None:
        """A worker answered: its run ends, and the worker takes the next task waiting."""
        try:
            data = worker.child.receive.recv_bytes()
        except (EOFError, OSError):
            return  # the worker ended: its sentinel says how
        worker.child.flush_output()  # what the task printed, before the next task prints
        answered = worker.run
        ok, payload = read_outcome(data, "?" if answered is None else answered.name)
        worn = False
        with self._lock:
            run, worker.run = worker.run, None
            if ok is not None:
                worker.served += 1
            limit = self.max_tasks_per_worker
            if worker.alive and limit is not None and worker.served >= limit:
                self._retire(worker)  # served its tasks: it ends, a fresh one replaces it
                worn = True
            if not worker.alive:
                following = None
            else:
                if ok is None and run is not None:  # it could not be unpickled there
                    run._payload = None  # so it goes to a worker forked for it, first
                    self._pending.appendleft(run)
                    run = None
                following = self._next()
                if following is None:
                    self._idle.append(worker)
                else:
                    worker.run = following
                    following._worker = worker
                    following.mark_running()
        if following is not None:
            self._send(worker, following)
        if worn:
            worker.tasks.close()  # the worker exits at the end of its task pipe
            self._refill()
        if run is not None:
            run._call = run._payload = None
            if ok:
                run.finish(value=payload)
            else:
                run.finish(exception=payload)

    def _ended(self, worker: _Worker) -> None:
        """A worker ended (killed, or on its own): collect it, fail the run it was running,
        and fork workers for the tasks waiting."""
        child = worker.child
        if child.reaped:
            return
        with self._lock:
            self._retire(worker)
        if not child.receive.closed and child.receive.poll():
            self._received(worker)  # what it sent just before it ended
        code = child.collect()
        release(worker)
        run, worker.run = worker.run, None
        if run is not None:
            run._call = run._payload = None
            run.finish(
                exception=ProcessDiedError(
                    f"the worker process of task {run.name!r} (pid {child.pid}) "
                    f"{how_it_ended(code)} while running it"
                )
            )
        self._refill()

    # -- under the lock ---------------------------------------------------------------------------

    def _next(self) -> PoolTaskRun | None:
        """The next queued run that has not ended (stopped while it waited), if any."""
        while self._pending:
            run = self._pending.popleft()
            if not run.done():
                return run
        return None

    def _retire(self, worker: _Worker) -> None:
        """The worker takes no more tasks; its place is free for a new one."""
        if worker.alive:
            worker.alive = False
            self._workers.discard(worker)
            if worker in self._idle:
                self._idle.remove(worker)

    # -- starting and stopping work ---------------------------------------------------------------

    def _send(self, worker: _Worker, run: PoolTaskRun) -> None:
        """Hand `run` to `worker`, which was given it under the lock."""
        if run._payload is None:  # it cannot travel: a worker forked now inherits it
            with self._lock:
                if worker.run is run:
                    worker.run = None
                    self._retire(worker)
                    worker.child.kill()
                    self._pending.appendleft(run)
            self._refill()
            return
        try:
            worker.tasks.send_bytes(run._payload)
        except OSError:
            pass  # the worker died: its end fails the run

    def _refill(self) -> None:
        """Fork workers for the runs waiting, up to `max_workers`."""
        while True:
            with self._lock:
                if len(self._workers) >= self.max_concurrency:
                    return
                run = self._next()
                if run is None:
                    return
                try:
                    self._workers.add(_Worker(self, run))
                    continue
                except Exception as exc:
                    error: Exception = exc
            run.finish(exception=error)

    def halt_run(self, run: PoolTaskRun) -> None:
        """`run` was stopped or timed out: kill its worker if it is running it."""
        with self._lock:
            worker = run._worker
            if worker is not None and worker.run is run:
                self._retire(worker)
                worker.child.kill()
        run._call = run._payload = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} max_workers={self.max_concurrency}>"
