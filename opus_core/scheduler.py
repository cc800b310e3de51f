"""Running a `Plan` on a runner: start each task once its dependencies succeeded.

The scheduler never assumes tasks end in the order they started: runners
report back through done callbacks onto one queue, and the scheduler is the
only code that changes a run's bookkeeping.

Values: a task sees the store as it stood at the start of the run plus every
value published by the tasks it depends on, directly or not. When two of those
publish one key, the one later in the plan's topological order wins, so what
a task sees never depends on scheduling.
"""

from __future__ import annotations

import heapq
import queue
import time
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opus_core.aio import is_async
from opus_core.attempt import AttemptOutcome, attempt_work
from opus_core.capture import RunOutputs
from opus_core.errors import (
    MissingValueError,
    OpusError,
    PluginError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimeoutError,
    describe_exception,
)
from opus_core.graph import Adjacency, Plan
from opus_core.history import AttemptLogs, open_attempt
from opus_core.manifest import Task, display_name
from opus_core.persistence import StatePersistence
from opus_core.plugin.manager import PluginManager
from opus_core.processor import TaskProcessor
from opus_core.records import RunRecords
from opus_core.resources import ReadyQueue, Resources
from opus_core.results import (
    STATUS_CODE,
    STATUSES,
    RunReport,
    TaskResult,
    TaskResults,
    TaskStatus,
    format_traceback,
)
from opus_core.runners.base import SIGNAL_CHECK, BaseTaskRun, Runner, Work
from opus_core.store import View
from opus_core.substitution import substitute
from opus_core.timeouts import deadlines

_STOP = object()


_SUCCEEDED = TaskStatus.SUCCEEDED
_RESTORED = TaskStatus.RESTORED
_FAILED = TaskStatus.FAILED
_CANCELLED = TaskStatus.CANCELLED
_SKIPPED = TaskStatus.SKIPPED
_TIMED_OUT = TaskStatus.TIMED_OUT


def _adjacency(edges: Sequence[Sequence[int]]) -> Adjacency:
    return edges if isinstance(edges, Adjacency) else Adjacency.from_lists(edges)


class Scheduler:
    """Executes one plan; create one per run.

    What it keeps per task is flat: a byte for the status, numbers in arrays for the
    attempts and times, and errors, tracebacks, published values and the logs of
    retried tasks only for the tasks that have them — a million-task run holds no
    object per task for the garbage collector to walk. `results` reads them as
    `TaskResult`s; `attempt_logs()` gives each task's attempts.
    """

    def __init__(
        self,
        plan: Plan,
        processors: Mapping[tuple[str, str], TaskProcessor],
        runner: Runner,
        values: Mapping[str, Any],
        persistence: StatePersistence,
        hooks: PluginManager,
        fail_fast: bool = False,
        records: RunRecords | None = None,
        restoring: bool = False,
        run_id: str | None = None,
        resources: Resources | None = None,
    ) -> None:
        self.plan = plan
        self.processors = processors
        self.runner = runner
        self.persistence = persistence
        self.hooks = hooks
        self.fail_fast = fail_fast
        n = self.size = len(plan.tasks)
        deps = _adjacency(plan.deps)
        dependents = _adjacency(plan.dependents)
        self._deps_at, self._deps = deps.offsets, deps.targets
        self._dependents_at, self._dependents = dependents.offsets, dependents.targets
        self.completions: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.start_view = View({k: (-1, v) for k, v in values.items()})
        self.exported: list[View | None] = [None] * n
        self.published: dict[int, dict[str, Any]] = {}
        """What each task that published anything published, by position."""
        offsets = self._deps_at
        self.waiting = [offsets[i + 1] - offsets[i] for i in range(n)] if len(deps.targets) else []
        self.status = bytearray(n)
        """Per task, its status's code (`opus_core.results.STATUS_CODE`); 0 until it ends."""
        self.attempts = [0] * n
        zeros = bytes(8 * n)
        self.first_start = array("d", zeros)  # time.monotonic() of the first attempt
        self.started_at = array("d", zeros)  # time.time() of the first attempt
        self.ended_at = array("d", zeros)  # time.time() its last attempt ended, 0.0 while open
        self.durations = array("d", zeros)
        self.ready_at = array("d", zeros)  # time.time() its last dependency ended, 0.0 if none
        self.errors: dict[int, str] = {}
        self.tracebacks: dict[int, str] = {}
        self.retried: dict[int, list[dict[str, Any]]] = {}
        """The attempt logs of tasks that were retried (see `attempt_log`)."""
        self.outputs = RunOutputs()
        self.kept: dict[int, dict[str, str]] = {}
        """What the one attempt of each task not retried printed and logged, if anything."""
        self.results = TaskResults(
            plan.tasks, self.status, self.attempts, self.durations, self.errors, self.tracebacks
        )
        if records is not None:
            records.track(
                plan.tasks,
                self.status,
                self.attempts,
                self.ended_at,
                self.durations,
                self.errors,
                self.tracebacks,
            )
        self.running: dict[int, BaseTaskRun] = {}
        self.submitting: int | None = None
        """The task whose `submit` is under way (a blocking runner runs it there)."""
        first = (i for i, w in enumerate(self.waiting) if w == 0) if self.waiting else range(n)
        self.ready: deque[int] | ReadyQueue = deque(first)
        """The tasks ready to start, in the order they start: a plain queue, or with
        priorities or resources, a `ReadyQueue` that holds back what does not fit."""
        self.pool = None if resources is None else resources.queue(plan, self.ready)
        if self.pool is not None:
            self.ready = self.pool
        self.retries: list[tuple[float, int]] = []
        self.halted: str | None = None
        self.interrupted = False
        self.finished = 0
        self.failed = 0  # of the finished, how many failed or timed out
        self.limit = runner.max_concurrency
        self.records = records
        self.fatal_error: OpusError | None = None  # what stopped the run, if not the tasks
        self.restoring = restoring
        """Whether a plugin may restore a task instead of running it (`opus_task_restore`)."""
        self.run_id = run_id
        self._async: dict[int, bool] = {}  # whether each processor's process_task is async

    # -- the loop ------------------------------------------------------------

    def stop(self) -> None:
        """Ask the run to stop (thread-safe): nothing new starts, running tasks are stopped.

        A blocking runner (`sequential`) runs each task in the thread that runs the
        graph, where the task cannot be interrupted: the task running then ends as
        it would have (and is reported so), and no further task starts.
        """
        self.halted = self.halted or "stopped"  # seen by _can_start: nothing new starts
        self.completions.put(_STOP)

    def run(self) -> RunReport:
        started_at = time.time()
        started = time.monotonic()
        self.hooks.run_started(self.plan)
        total = self.size
        try:
            while self.finished < total:
                while self._can_start():
                    self._start(self.ready.popleft())
                self.runner.flush()
                if self.halted == "stopped" and not self.interrupted:
                    self._halt("stopped")  # stop() was called from another thread
                    break
                if self.finished == total or (self.halted and not self.running):
                    break
                item = self._next_event()
                if item is _STOP:
                    self._halt("stopped")
                elif item is not None:
                    index, run = item
                    current = self.running.get(index)
                    if current is not None and current is run:
                        del self.running[index]
                        self._completed(index, current)
        except KeyboardInterrupt:
            self._halt("interrupted")
        report = self._report(time.monotonic() - started)
        report.started_at = started_at
        self.hooks.run_finished(report)
        return report

    def running_now(self) -> int:
        """How many tasks are running: submitted and not finished (any thread may ask)."""
        submitting = self.submitting  # a blocking runner runs it inside submit
        return len(self.running) + (submitting is not None and submitting not in self.running)

    def _can_start(self) -> bool:
        return (
            not self.halted
            and (self.limit is None or len(self.running) < self.limit)
            and bool(self.ready)  # last: a `ReadyQueue` takes the needs of the next to start
        )

    def _next_event(self) -> Any:
        """The next completion or stop request, or None when a retry falls due first."""
        while self.retries and self.retries[0][0] <= time.monotonic():
            self.ready.append(heapq.heappop(self.retries)[1])
        if self._can_start():
            try:
                return self.completions.get_nowait()
            except queue.Empty:
                return None
        timeout = max(0.0, self.retries[0][0] - time.monotonic()) if self.retries else None
        if timeout is None and not self.running and not len(self.ready):
            raise AssertionError("scheduler has nothing to wait for")  # pragma: no cover
        # Never wait without a limit: the kernel may hand Ctrl-C's SIGINT to another thread
        # (a runner's), which does not wake this one, and Python handles it only once this
        # thread runs again.
        timeout = SIGNAL_CHECK if timeout is None else min(timeout, SIGNAL_CHECK)
        try:
            return self.completions.get(timeout=timeout)
        except queue.Empty:
            return None

    def _halt(self, why: str) -> None:
        """Stop everything: running tasks are stopped, the rest cancelled."""
        self.halted = why
        self.interrupted = True
        for index, run in list(self.running.items()):
            run.stop()
            del self.running[index]
            self._finish(index, _CANCELLED, f"{why} while running")
        status = self.status
        for index in range(self.size):
            if not status[index]:
                self._finish(index, _CANCELLED, f"run {why} before it started")
        self.ready.clear()
        self.retries.clear()

    # -- one task ------------------------------------------------------------

    def _view(self, index: int) -> View:
        offsets = self._deps_at
        first, end = offsets[index], offsets[index + 1]
        if first == end:
            return self.start_view
        if end - first == 1:
            view = self.exported[self._deps[first]]
            assert view is not None
            return view
        exported = self.exported
        views = [exported[d] for d in self._deps[first:end]]
        return View.merged([view for view in views if view is not None])

    def _start(self, index: int) -> None:
        task = self.plan.tasks[index]
        view = self._view(index)
        values = view.plain
        if self.restoring and self._restored(index, task, values):
            return
        if task.has_placeholders:
            try:
                task = task.with_spec(substitute(task.spec, values, display_name(task)))
            except MissingValueError as exc:
                self._finish(index, _FAILED, str(exc))
                self._skip_dependents(index)
                return
        attempt_number = self.attempts[index] + 1
        self.attempts[index] = attempt_number
        if attempt_number == 1:
            self.first_start[index] = time.monotonic()
            self.started_at[index] = time.time()
        else:
            self.ended_at[index] = 0.0
            self.retried[index].append(open_attempt(attempt_number, time.time()))
        runner = self.runner
        timeout = task.meta.timeout
        processor = self.processors[task.kind, task.version]
        asynchronous = self._async.get(id(processor))
        if asynchronous is None:
            asynchronous = self._async[id(processor)] = is_async(processor.process_task)
        self.hooks.task_started(task, attempt_number)
        contexts = self.hooks.attempt_contexts(task, attempt_number, runner)
        output = self.outputs.started(index, runner.shares_memory)
        work = attempt_work(
            processor,
            task,
            self.plan.command,
            self.plan.context,
            values,
            self.persistence,
            runner,
            asynchronous,
            attempt_number,
            output,
            contexts,
        )
        self.submitting = index
        submit: Callable[[Work], object] = runner.submit  # a broken runner returns anything
        run: object = None
        try:
            run = submit(work)
            if isinstance(run, BaseTaskRun) and not (runner.blocking and run.done()):
                self.running[index] = run  # from here on, _halt stops it
        except KeyboardInterrupt:
            # Ctrl-C in submit or just after it: a run that started is stopped, not left
            # running unseen (its process would outlive the report, or hold up the exit).
            if isinstance(run, BaseTaskRun):
                self.running.pop(index, None)
                run.stop()
            self._finish(index, _CANCELLED, "interrupted while running")
            raise
        except Exception as exc:
            self._failed_attempt(index, exc)
            return
        finally:
            self.submitting = None
        if not isinstance(run, BaseTaskRun):
            self._runner_returned(index, run)
            return
        if index not in self.running:  # a blocking runner ran it to its end
            self._completed(index, run, view)
            return
        if timeout is not None and not runner.blocking:
            deadlines.watch(run, timeout)
        completions = self.completions
        run.add_done_callback(lambda r: completions.put((index, r)))

    def _completed(self, index: int, run: BaseTaskRun, view: View | None = None) -> None:
        if self.pool is not None:
            self.pool.release(index)  # the attempt ended: what it held is free
        exc = run.exception()
        if exc is None:
            outcome = run.get_result()
            self.outputs.sent(index, outcome.output)
            self._succeeded(index, outcome, view=view)
        else:
            self.outputs.sent(index, getattr(exc, "opus_output", None))
            self._failed_attempt(index, exc)

    def _runner_returned(self, index: int, returned: object) -> None:
        """The runner's `submit` returned something that is not a run: the run stops."""
        from opus_core.assembly import provided_by

        try:
            shown = repr(returned)[:80]
        except Exception:
            shown = f"a {type(returned).__name__}"
        error = PluginError(
            f"run stopped: {provided_by(self.hooks, 'runners', self.runner)} is broken: "
            f"its submit returned {shown}, not a BaseTaskRun"
        )
        self._finish(index, _CANCELLED, str(error))
        self._fatal(error)

    def _fatal(self, error: OpusError) -> None:
        """Stop the run because of `error` (the first one is kept for the engine to raise)."""
        if self.fatal_error is None:
            self.fatal_error = error
        if not self.interrupted:
            self._halt("stopped")

    def _restored(self, index: int, task: Task, values: Mapping[str, Any]) -> bool:
        """Ask plugins for the values of `task`, ready to start, to restore instead of running
        it (`opus_task_restore`); True when one did (or failed: the run then stops)."""
        offsets, tasks, status = self._deps_at, self.plan.tasks, self.status
        upstream = {
            tasks[d].task_id: STATUSES[status[d] - 1].value
            for d in self._deps[offsets[index] : offsets[index + 1]]
        }
        plan = self.plan
        try:
            restored = self.hooks.restore(
                task, plan.command, plan.context, self.persistence, values, upstream
            )
        except OpusError as exc:
            self._finish(index, _FAILED, str(exc))
            self._skip_dependents(index)
            self._fatal(exc)
            return True
        if restored is None:
            return False
        self._succeeded(index, AttemptOutcome(restored, None), restored=True)
        return True

    def _persistence_failed(self, what: str, doing: str, exc: Exception) -> None:
        """Persistence raised (anything) while saving: name it and its plugin, stop the run."""
        from opus_core.assembly import provided_by

        culprit = provided_by(self.hooks, "persistence", self.persistence)
        message = describe_exception(exc)
        self._fatal(
            OpusError(
                f"run stopped: {what} could not be saved: {culprit} failed to {doing}: {message}"
            )
        )

    def _succeeded(
        self,
        index: int,
        outcome: AttemptOutcome,
        restored: bool = False,
        view: View | None = None,
    ) -> None:
        """The task at `index` succeeded (or was restored); `view` is what it saw, if known."""
        if outcome.writes:
            try:
                for key, data in outcome.writes.items():
                    if data is None:
                        self.persistence.delete_object_state(key)
                    else:
                        self.persistence.save_object_state(key, data)
            except Exception as exc:
                task = display_name(self.plan.tasks[index])
                why = f"its state could not be saved: {describe_exception(exc)}"
                self._finish(index, _FAILED, why)
                self._skip_dependents(index)
                self._persistence_failed("a task's state", f"save the state {task!r} wrote", exc)
                return
        if view is None:
            view = self._view(index)
        if outcome.published:
            entries = dict(view.entries)
            for key, value in outcome.published.items():
                entries[key] = (index, value)
            self.published[index] = outcome.published
            view = View(entries)
        self.exported[index] = view
        self._finish(index, _RESTORED if restored else _SUCCEEDED, None)
        offsets = self._dependents_at
        first, end = offsets[index], offsets[index + 1]
        if first != end:
            waiting, status, ready = self.waiting, self.status, self.ready
            for dependent in self._dependents[first:end]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0 and not status[dependent]:
                    ready.append(dependent)
                    self.ready_at[dependent] = time.time()

    def _failed_attempt(self, index: int, exc: BaseException) -> None:
        if self.pool is not None:
            self.pool.release(index)
        error = describe_exception(exc)
        task = self.plan.tasks[index]
        trace: str | None = None
        if isinstance(exc, TaskTimeoutError):
            status = _TIMED_OUT  # opus ended it: its frames would be opus's own
        elif isinstance(exc, TaskCancelledError):
            status = _CANCELLED
        else:
            status = _FAILED
            if not isinstance(exc, TaskFailedError):  # which says all there is to say
                trace = format_traceback(exc)
            if self.attempts[index] <= task.meta.retries and not self.halted:
                delay = task.meta.retry_sleep_time
                self._attempt_ended(index, _FAILED, error, final=False)
                self.hooks.task_retrying(task, self.attempts[index], error, delay, trace)
                heapq.heappush(self.retries, (time.monotonic() + delay, index))
                return
        self._finish(index, status, error, trace)
        self._skip_dependents(index)
        if self.fail_fast and status is not _CANCELLED and not self.halted:
            self.halted = "fail_fast"
            for i in range(self.size):
                if not self.status[i] and i not in self.running:
                    self._finish(
                        i,
                        _SKIPPED,
                        f"not started: fail_fast after {display_name(task)!r} {status}",
                    )
            self.ready.clear()

    def _skip_dependents(self, index: int) -> None:
        failed = display_name(self.plan.tasks[index])
        offsets, dependents = self._dependents_at, self._dependents
        pending = list(dependents[offsets[index] : offsets[index + 1]])
        while pending:
            i = pending.pop()
            if not self.status[i]:
                self._finish(i, _SKIPPED, f"dependency {failed!r} did not succeed")
                pending.extend(dependents[offsets[i] : offsets[i + 1]])

    def _finish(
        self, index: int, status: TaskStatus, error: str | None, trace: str | None = None
    ) -> None:
        if self.pool is not None:
            self.pool.release(index)
        task = self.plan.tasks[index]
        attempts = self.attempts[index]
        start = self.first_start[index]
        duration = time.monotonic() - start if start else 0.0
        result = TaskResult(task.task_id, task.kind, status, attempts, duration, error, trace)
        try:  # a Ctrl-C landing in here still tells the plugins how the task ended
            self.status[index] = STATUS_CODE[status]
            self.finished += 1
            if status is _FAILED or status is _TIMED_OUT:
                self.failed += 1
            self.durations[index] = duration
            if error is not None:
                self.errors[index] = error
            if trace is not None:
                self.tracebacks[index] = trace
            if attempts:
                self._attempt_ended(index, status, error)
                if self.records is not None and task.meta.name:
                    self._record(index, task, result)
        finally:
            if self.status[index]:  # else it is not finished: `_halt` finishes it
                self.hooks.task_finished(task, result)

    def _attempt_ended(
        self, index: int, status: TaskStatus, error: str | None, final: bool = True
    ) -> None:
        """Close the task's last attempt, if it is still open.

        The one attempt of a task that was not retried is its start and end times
        and the task's outcome (see `attempt_log`); a task whose attempt failed and
        is tried again gets a log of its own, one entry per attempt.
        """
        kept = self.outputs.ended(index)
        log = self.retried.get(index)
        if log is None:
            if final:
                if kept:
                    self.kept[index] = kept
                if not self.ended_at[index]:
                    self.ended_at[index] = time.time()
                return
            log = self.retried[index] = [open_attempt(1, self.started_at[index])]
        entry = log[-1]
        if entry["ended_at"] is None:
            now = time.time()
            entry["ended_at"] = now
            entry["status"] = status.value
            entry["error"] = error
            if kept:
                entry["output"] = kept
            self.ended_at[index] = now

    def attempt_logs(self) -> AttemptLogs:
        """The attempts of every task, in plan order, each list made as it is read: when
        the scheduler saw each start and end, how it ended (see `opus_core.history`);
        empty for a task never attempted."""
        logs = self.attempts, self.status, self.started_at, self.ended_at, self.errors
        return AttemptLogs(*logs, self.retried, self.kept)

    def _record(self, index: int, task: Task, result: TaskResult) -> None:
        """Save the task's record now, so a crash after this point does not lose it."""
        if result.status is _CANCELLED:
            return
        assert self.records is not None
        try:
            self.records.save(task, result, self.published.get(index), index)
        except Exception as exc:  # a third-party persistence raises what it likes
            what = f"save the record of task {display_name(task)!r}"
            self._persistence_failed("a task record", what, exc)

    def _report(self, duration: float) -> RunReport:
        return RunReport(
            self.plan.command,
            self.plan.context,
            results=self.results,
            duration=duration,
            interrupted=self.interrupted,
            run_id=self.run_id,
        )

    def final_values(self) -> dict[str, Any]:
        """Everything published in the run, applied in plan order over the starting values."""
        values = dict(self.start_view.plain)
        for index in sorted(self.published):
            values.update(self.published[index])
        return values
