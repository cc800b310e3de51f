"""The `process` runner: one OS process per task, killed on stop or timeout.

Each task runs in a `multiprocessing` process of the `fork` context, so
functions defined anywhere, closures included, run without being pickled.
The result comes back as one message on a `multiprocessing` pipe the moment
the function returns. One watcher thread waits on every task's pipe and on
its process's sentinel (`Process.sentinel`), registered once each with an
epoll selector.

Task processes die with the process that started them, whatever ends it:

* the process forked is the task's *keeper* (`opus_core.runners.fork`): it
  leads a process group of its own, forks the task process into it, and runs
  no code of the task's; `stop()` and timeouts kill the keeper, the task and
  everything it started (below the keeper, and its process group);
* the keeper watches a *lifeline*, a pipe only the parent holds open for
  writing: when the parent ends — exit, crash, SIGKILL — the pipe closes and
  the keeper kills the task, everything below it (in a session of its own
  too: the keeper is a child subreaper) and its group, even a task stuck in
  C code holding the GIL;
* `ProcessRunner.shutdown()` kills a task process that sent its result but
  lingers on (a thread the task left running), and the program's exit kills
  every task process still there: a program that wants a result waits for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.errors import OpusError, ProcessDiedError
from opus_core.runners.base import BaseTaskRun, Runner, check_count, run_name
from opus_core.runners.remote import read_outcome
from opus_core.runners.task_process import (
    TaskProcess,
    end_processes,
    how_it_ended,
    release,
    run_task,
    unwatch,
    watch,
)

if TYPE_CHECKING:
    pass


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
        self._runner = runner
        TaskProcess(run_task, (fn, args, kwargs), self.name, adopt=self._adopt)

    def _adopt(self, child: TaskProcess) -> None:
        """Take the process just forked for this run, and have the watcher watch it."""
        self._child = child
        watch(self, self._runner)

    @property
    def pid(self) -> int:
        """The id of the process forked for the task (its keeper, which forks the task process
        and ends with it)."""
        return self._child.pid

    @property
    def child(self) -> TaskProcess:
        """The task's process."""
        return self._child

    def receive_message(self) -> None:
        """The pipe is readable: the result, or its end because the process ended without one."""
        receive = self._child.receive
        with self._child.pipe_lock:
            if receive.closed:
                return  # taken already, when the process's end was seen first
            unwatch(receive.fileno())
            try:
                data = receive.recv_bytes()
            except (EOFError, OSError):
                return  # no result: the sentinel says how the process ended
            finally:
                receive.close()
        self._child.flush_output()
        ok, payload = read_outcome(data, self.name)
        if ok:
            self.finish(value=payload)
        else:
            self.finish(exception=payload)

    def reap(self) -> None:
        """The process ended: collect it, and say how it died if it sent no result."""
        if self._child.reaped:
            return
        if not self._child.receive.closed and self._child.receive.poll():
            self.receive_message()  # what the process sent just before it ended
        code = self._child.collect()
        release(self)
        if self.done():
            return
        self.finish(
            exception=ProcessDiedError(
                f"the process of task {self.name!r} (pid {self.pid}) {how_it_ended(code)} "
                "without sending back a result"
            )
        )

    def lost(self, error: Exception) -> None:
        """The watcher could not handle this run's process: the run fails saying so."""
        self.finish(
            exception=OpusError(
                f"lost track of the process of task {self.name!r}: {type(error).__name__}: {error}"
            )
        )

    def halt(self) -> None:
        """Kill the task's process group (its process, and whatever it started)."""
        self._child.kill()


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
        self.max_workers = check_count("max_workers", max_workers)

    @property
    def max_concurrency(self) -> int | None:
        """`max_workers`, or the number of CPUs plus four (at most 32)."""
        return self.max_workers or min(32, (os.cpu_count() or 1) + 4)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Start a process that runs `fn(*args, **kwargs)`."""
        return self.run_class(fn, args, kwargs, self)

    def shutdown(self, wait: bool = True) -> None:
        """Kill this runner's task processes that linger (all of them, without `wait`)."""
        super().shutdown(wait)
        end_processes(self, everything=not wait)
