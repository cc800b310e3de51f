"""The built-in runners keep the runner contract (`opus_core.testing.RunnerContract`)."""

from __future__ import annotations

import threading

import pytest

from opus_core import Task, TaskProcessor, Tasks, task
from opus_core.runners import (
    BaseTaskRun,
    ProcessPoolRunner,
    ProcessRunner,
    Runner,
    SequentialRunner,
    Work,
    wait_for_halts,
)
from opus_core.testing import RunnerContract


class TestSequentialRunner(RunnerContract):
    runner_class = SequentialRunner
    max_workers_option = None  # one task at a time, always


class TestProcessRunner(RunnerContract):
    runner_class = ProcessRunner


class TestProcessPoolRunner(RunnerContract):
    runner_class = ProcessPoolRunner
    runner_options = {"max_workers": 2}


class Recording(SequentialRunner):
    """Keeps every `Work` it is handed."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[Work] = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.seen.append(Work.of(fn, *args, **kwargs))
        return super().submit(fn, *args, **kwargs)


class Flaky(TaskProcessor):
    kind = "Flaky"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        if key_value_store.store.get("tries", 0) < 1 and task.spec.get("fail_once"):
            state_persistence.save_object_state("flaky", {"failed": True})
            if not state_persistence.get_object_state("flaky-done"):
                state_persistence.save_object_state("flaky-done", {"yes": True})
                raise RuntimeError("first attempt fails")
        return {"ok": True}


def test_submit_sees_the_tasks_name_kind_labels_annotations_attempt_and_timeout() -> None:
    runner = Recording()
    tasks = Tasks(runner=runner)
    tasks.register_task_processor(Flaky())
    metadata = {
        "name": "labelled",
        "labels": {"tier": "db"},
        "annotations": {"owner": "ops"},
        "retries": 1,
        "timeout": 30,
    }
    tasks.add_task(Task("Flaky", "v1", {"fail_once": True}, metadata))
    assert tasks.process_context().ok
    first, second = runner.seen
    assert (first.name, first.kind, dict(first.labels), dict(first.annotations)) == (
        "labelled",
        "Flaky",
        {"tier": "db"},
        {"owner": "ops"},
    )
    assert (first.attempt, second.attempt, first.timeout) == (1, 2, 30)


def test_a_function_task_hands_submit_a_work_named_after_the_task() -> None:
    runner = Recording()

    @task(name="doubled", runner=runner, timeout=5)
    def double(value: int) -> int:
        return 2 * value

    assert double(21).get_result() == 42
    (work,) = runner.seen
    assert (work.name, work.kind, work.timeout) == ("doubled", "function", 5)
    assert SequentialRunner().submit(work).get_result() == 42  # the work again, anywhere


class HangingHalt(BaseTaskRun):
    """A run whose halt() blocks until `released` is set."""

    def __init__(self, name: str, entered: threading.Event, released: threading.Event) -> None:
        super().__init__(name)
        self.entered, self.released = entered, released

    def halt(self) -> None:
        self.entered.set()
        self.released.wait(60)


def test_wait_for_halts_names_the_runs_still_halting_and_returns_when_they_are_done() -> None:
    entered, released = threading.Event(), threading.Event()
    run = HangingHalt("hanging", entered, released)
    stopper = threading.Thread(target=run.stop)
    stopper.start()
    assert entered.wait(60)
    assert run.done() and wait_for_halts(0.05) == [run]  # ended, but its work not yet halted
    released.set()
    assert wait_for_halts(60) == []
    stopper.join(60)


class HangingRunner(Runner):
    """Every run it starts ends only when stopped, and its halt hangs until released."""

    name = "hanging"

    def __init__(self, entered: threading.Event, released: threading.Event) -> None:
        self.entered, self.released = entered, released

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        return HangingHalt(Work.of(fn, *args, **kwargs).name, self.entered, self.released)


def test_a_run_whose_halt_hangs_past_the_grace_ends_saying_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import opus_core.engine

    monkeypatch.setattr(opus_core.engine, "HALT_GRACE", 0.1)
    entered, released = threading.Event(), threading.Event()
    tasks = Tasks(runner=HangingRunner(entered, released))
    tasks.register_task_processor(Flaky())
    tasks.add_task(Task("Flaky", "v1", {}, {"name": "stuck", "timeout": 0.2}))
    try:
        report = tasks.process_context()
    finally:
        released.set()
    assert report.results["stuck"].status.value == "timed_out"
    assert entered.is_set()
    assert "runner 'hanging' is still halting stuck after 0.1s" in capsys.readouterr().out
    assert wait_for_halts(60) == []
