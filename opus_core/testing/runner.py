"""`RunnerContract`: the promises every runner keeps, as tests a runner's own suite inherits.

Subclass it in your plugin's tests, name the runner, and pytest collects every
promise as a test of yours::

    from opus_core.testing import RunnerContract
    from opus_plugin_mine import MyRunner

    class TestMyRunner(RunnerContract):
        runner_class = MyRunner
        runner_options = {"max_workers": 2}     # passed to MyRunner(...)

Class attributes say what the runner claims:

* `halts_work` (default True): `halt()` really stops the work (kills its process,
  cancels it on the cluster). False for a runner that cannot (threads): the tests
  then check that the run ends as promised, not that the work is gone.
* `max_workers_option` (default `"max_workers"`): the option that caps how many
  tasks run at once; None if the runner has none.

Every built-in runner passes these tests in opus's own suite. The work the tests
submit is defined in this module, so it is importable wherever opus is installed
(a fresh interpreter, a cluster's workers).
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from opus_core.errors import TaskTimeoutError
from opus_core.manifest import Task
from opus_core.persistence import StatePersistence
from opus_core.processor import TaskProcessor
from opus_core.results import TaskStatus, format_traceback
from opus_core.runners.base import BaseTaskRun, Runner, Work, wait_for_halts
from opus_core.store import KeyValueStore

PATIENCE = 60.0
"""Seconds a test waits for something that should happen at once before it fails."""


# -- work the tests submit (importable, so it runs in any process) ----------------------------


def add(a: int, b: int) -> int:
    """`a + b`."""
    return a + b


def fail_deep(message: str) -> None:
    """Raise `ValueError(message)` two frames down."""

    def inner() -> None:
        raise ValueError(message)

    inner()


def _write(path: Path, text: str) -> None:
    """Write `text` to `path` whole: whoever sees the file sees all of it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def wait_for_file(started: str, release: str) -> int:
    """Write this process's id to `started`, then wait until `release` exists (at most
    `PATIENCE` seconds); the process id."""
    _write(Path(started), str(os.getpid()))
    deadline = time.monotonic() + PATIENCE
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def count_running(folder: str, name: str, cap: int, total: int) -> int:
    """Mark `name` as running in `folder`, wait until `cap` tasks run at once (or this is the
    last of `total`), and return how many ran at once at most meanwhile."""
    running, finished = Path(folder, "running"), Path(folder, "finished")
    running.mkdir(exist_ok=True)
    finished.mkdir(exist_ok=True)
    mark = running / name
    _write(mark, str(os.getpid()))
    most = 0
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        now = sum(1 for path in running.iterdir() if not path.name.startswith("."))
        most = max(most, now)
        if now >= cap or now + len(list(finished.iterdir())) >= total:
            break
        time.sleep(0.01)
    (finished / name).touch()
    mark.unlink()
    return most


class ContractProcessor(TaskProcessor):
    """A processor for the contract's engine tests: `spec.add` publishes the sum of the
    values it names; `spec.wait` waits for a file as `wait_for_file` does."""

    kind = "RunnerContract"

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> dict[str, Any]:
        """Add, or wait, as the spec says; publish the outcome under the task's name."""
        assert key_value_store is not None
        spec = task.spec
        name = task.task_id
        if "wait" in spec:
            return {name: wait_for_file(spec["wait"], spec["release"])}
        if "count" in spec:
            return {name: count_running(spec["count"], name, spec["cap"], spec["total"])}
        total = spec.get("start", 0) + sum(key_value_store.store[k] for k in spec.get("add", []))
        return {name: total}


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + PATIENCE
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {PATIENCE:g}s")
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended; only its parent has not collected it yet
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _gone(pid: int) -> bool:
    """Wait (up to `PATIENCE`) for process `pid` to end; True if it did."""
    deadline = time.monotonic() + PATIENCE
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class RunnerContract:
    """The runner contract's tests, for a runner's own suite to inherit.

    Set `runner_class` (and `runner_options`, the keyword arguments it is made with), or
    override `make_runner`. `halts_work = False` for a runner whose `halt()` cannot stop
    running work (threads): the stop and timeout tests then check only that the run
    ends as promised. `max_workers_option`: the option that caps how many tasks run at
    once (default `"max_workers"`), or None if the runner has none.
    """

    runner_class: ClassVar[type[Runner]]
    """The runner under test."""
    runner_options: ClassVar[dict[str, Any]] = {}
    """Keyword arguments for `runner_class`, as `[runners.NAME]` would give them."""
    halts_work: ClassVar[bool] = True
    """Whether `halt()` stops the work itself (False: the work may run on, unobserved)."""
    max_workers_option: ClassVar[str | None] = "max_workers"
    """The option capping how many tasks run at once, or None."""

    def make_runner(self, **options: Any) -> Runner:
        """A new runner under test, with `runner_options` updated by `options`."""
        return self.runner_class(**{**self.runner_options, **options})

    @pytest.fixture
    def runner(self) -> Iterator[Runner]:
        """A started runner, shut down (without waiting) after the test."""
        runner = self.make_runner()
        runner.start()
        yield runner
        runner.shutdown(wait=False)

    def out_of_process(self, pid: int) -> bool:
        """Whether work that reported `pid` ran in a process other than the test's."""
        return pid != os.getpid()

    # -- results ------------------------------------------------------------------------------

    def test_submit_returns_a_run_whose_result_is_the_value(self, runner: Runner) -> None:
        run = runner.submit(Work(add, (2, 3), {}, "add"))
        assert isinstance(run, BaseTaskRun)
        assert run.get_result(timeout=PATIENCE) == 5
        assert run.done() and not run.is_running() and run.status is TaskStatus.SUCCEEDED

    def test_the_run_is_named_after_the_work(self, runner: Runner) -> None:
        run = runner.submit(Work(add, (1, 1), {}, "named-task", kind="Kind"))
        assert run.name == "named-task"
        assert run.instance_name.startswith("named-task-")
        assert run.wait(PATIENCE)  # waiting for a run is enough for it to run

    def test_a_plain_function_with_arguments_runs_too(self, runner: Runner) -> None:
        run = runner.submit(add, 40, b=2)
        assert run.get_result(timeout=PATIENCE) == 42

    def test_work_of_a_closure_runs(self, runner: Runner) -> None:
        offset = 7

        def shifted(value: int) -> int:
            return value + offset

        run = runner.submit(Work(shifted, (1,), {}, "shifted"))
        assert run.get_result(timeout=PATIENCE) == 8

    def test_the_work_pickles(self) -> None:
        work = Work(add, (1, 2), {}, "add", "Kind", {"tier": "web"}, {"o": 1}, {"db": 1}, 2, 3.0)
        again = pickle.loads(pickle.dumps(work))
        assert again() == 3
        assert (again.name, again.kind, dict(again.labels), again.attempt) == (
            "add",
            "Kind",
            {"tier": "web"},
            2,
        )

    # -- failures -----------------------------------------------------------------------------

    def test_an_exception_comes_back_with_its_traceback(self, runner: Runner) -> None:
        run = runner.submit(Work(fail_deep, ("boom",), {}, "fails"))
        with pytest.raises(ValueError, match="boom"):
            run.get_result(timeout=PATIENCE)
        error = run.exception()
        assert error is not None and run.status is TaskStatus.FAILED
        text = format_traceback(error)
        assert "in inner" in text and "in fail_deep" in text, text

    def test_get_result_with_a_timeout_raises_timeouterror_while_the_work_runs(
        self, runner: Runner, tmp_path: Path
    ) -> None:
        started, release = tmp_path / "started", tmp_path / "release"
        if runner.blocking:  # submit returns when the work is done: nothing is left to wait
            release.touch()
        run = runner.submit(Work(wait_for_file, (str(started), str(release)), {}, "waits"))
        if not runner.blocking:
            with pytest.raises(TimeoutError):
                run.get_result(timeout=0.05)
            release.touch()
        assert isinstance(run.get_result(timeout=PATIENCE), int)

    # -- stopping -----------------------------------------------------------------------------

    def test_stop_ends_the_run_as_cancelled_and_halts_the_work(
        self, runner: Runner, tmp_path: Path
    ) -> None:
        started, release = tmp_path / "started", tmp_path / "release"
        if runner.blocking:  # the work runs in the caller: stop() comes after it ended
            release.touch()
            run = runner.submit(Work(wait_for_file, (str(started), str(release)), {}, "w"))
            run.stop()
            assert run.status is TaskStatus.SUCCEEDED
            return
        run = runner.submit(Work(wait_for_file, (str(started), str(release)), {}, "stopped"))
        try:
            _wait_for(started)
            run.stop()
            assert run.status is TaskStatus.CANCELLED
            assert run.done() and isinstance(run.exception(), Exception)
            pid = int(started.read_text())
            if self.halts_work and self.out_of_process(pid):
                assert _gone(pid), f"the stopped work's process {pid} is still running"
        finally:
            release.touch()  # work that cannot be halted ends now

    def test_a_timeout_ends_the_run_as_timed_out_and_halts_the_work(
        self, runner: Runner, tmp_path: Path
    ) -> None:
        started, release = tmp_path / "started", tmp_path / "release"
        if runner.blocking:
            return self._blocking_timeout(runner, tmp_path)
        run = runner.submit(Work(wait_for_file, (str(started), str(release)), {}, "slow"))
        try:
            _wait_for(started)
            run.time_out(0.5)
            assert run.status is TaskStatus.TIMED_OUT
            with pytest.raises(TaskTimeoutError):
                run.get_result(0)
            pid = int(started.read_text())
            if self.halts_work and self.out_of_process(pid):
                assert _gone(pid), f"the timed-out work's process {pid} is still running"
        finally:
            release.touch()
        return None

    def _blocking_timeout(self, runner: Runner, tmp_path: Path) -> None:
        """A blocking runner's timeouts are the engine's alarm, inside the call."""
        from opus_core.engine import Tasks

        tasks = Tasks(runner=runner)
        tasks.register_task_processor(ContractProcessor())
        started, release = tmp_path / "started", tmp_path / "release"
        spec = {"wait": str(started), "release": str(release)}
        tasks.add_task(Task("RunnerContract", "v1", spec, {"name": "slow", "timeout": 0.5}))
        report = tasks.process_context()
        assert report.results["slow"].status is TaskStatus.TIMED_OUT

    def test_halt_has_returned_before_shutdown_returns(self) -> None:
        runner = self.make_runner()
        runner.start()
        entered, release = threading.Event(), threading.Event()
        order: list[str] = []

        class SlowHalt(BaseTaskRun):
            def halt(self) -> None:
                entered.set()
                release.wait(PATIENCE)
                order.append("halt returned")

        run = SlowHalt("slow-halt")
        stopper = threading.Thread(target=run.stop)
        stopper.start()
        assert entered.wait(PATIENCE)

        def shut() -> None:
            runner.shutdown(wait=True)
            order.append("shutdown returned")

        shutting = threading.Thread(target=shut)
        shutting.start()
        shutting.join(0.5)  # a shutdown that does not wait for the halt has returned by now
        release.set()
        shutting.join(PATIENCE)
        stopper.join(PATIENCE)
        assert order == ["halt returned", "shutdown returned"], (
            f"{type(runner).__name__}.shutdown() returned before a halt under way had; "
            "call super().shutdown(wait) in it"
        )
        assert wait_for_halts(0) == []

    def test_done_callbacks_are_called_once_with_the_run(self, runner: Runner) -> None:
        seen: list[BaseTaskRun] = []
        ended = threading.Event()

        def callback(done: BaseTaskRun) -> None:
            seen.append(done)
            ended.set()

        run = runner.submit(Work(add, (1, 2), {}, "called-back"))
        run.add_done_callback(callback)
        assert ended.wait(PATIENCE)
        run.stop()  # after the end: changes nothing
        assert seen == [run] and run.get_result(0) == 3

    # -- under the engine ---------------------------------------------------------------------

    def test_the_engine_runs_a_graph_and_passes_values_along(self) -> None:
        from opus_core.engine import Tasks

        tasks = Tasks(runner=self.make_runner())
        tasks.register_task_processor(ContractProcessor())
        tasks.add_task(Task("RunnerContract", "v1", {"start": 1}, {"name": "one"}))
        spec = {"add": ["one"], "start": 1}
        tasks.add_task(Task("RunnerContract", "v1", spec, {"name": "two", "dependencies": ["one"]}))
        spec = {"add": ["one", "two"]}
        tasks.add_task(
            Task("RunnerContract", "v1", spec, {"name": "three", "dependencies": ["two"]})
        )
        report = tasks.process_context()
        assert report.ok, report.summary()
        assert tasks.key_value_store.store["three"] == 3

    def test_a_timeout_under_the_engine_times_the_task_out(self, tmp_path: Path) -> None:
        from opus_core.engine import Tasks

        tasks = Tasks(runner=self.make_runner())
        tasks.register_task_processor(ContractProcessor())
        started, release = tmp_path / "started", tmp_path / "release"
        spec = {"wait": str(started), "release": str(release)}
        tasks.add_task(Task("RunnerContract", "v1", spec, {"name": "slow", "timeout": 0.5}))
        try:
            report = tasks.process_context()
        finally:
            release.touch()
        result = report.results["slow"]
        assert result.status is TaskStatus.TIMED_OUT, report.summary()
        if not started.exists():
            return  # timed out before the work began (a slow start): it never will now
        pid = int(started.read_text())
        if self.halts_work and self.out_of_process(pid):
            assert _gone(pid), f"the timed-out task's process {pid} is still running"

    def test_max_workers_caps_how_many_tasks_run_at_once(self, tmp_path: Path) -> None:
        from opus_core.engine import Tasks

        option = self.max_workers_option
        if option is None:  # the runner claims no cap: one at a time is then not promised
            return
        runner = self.make_runner(**{option: 2})
        if runner.blocking:
            return  # one task at a time whatever the option
        tasks = Tasks(runner=runner)
        tasks.register_task_processor(ContractProcessor())
        for number in range(5):
            spec = {"count": str(tmp_path), "cap": 2, "total": 5}
            tasks.add_task(Task("RunnerContract", "v1", spec, {"name": f"t{number}"}))
        report = tasks.process_context()
        assert report.ok, report.summary()
        most = max(tasks.key_value_store.store[f"t{n}"] for n in range(5))
        assert 1 <= most <= 2, f"{most} tasks ran at once with {option}=2"

    def test_no_work_is_left_running_after_shutdown(self, tmp_path: Path) -> None:
        runner = self.make_runner()
        runner.start()
        started, release = tmp_path / "started", tmp_path / "release"
        release.touch()
        run = runner.submit(Work(wait_for_file, (str(started), str(release)), {}, "quick"))
        pid = run.get_result(timeout=PATIENCE)
        runner.shutdown(wait=True)
        if self.out_of_process(pid):
            assert _gone(pid), f"process {pid} of the runner's work outlived shutdown()"
