"""The scheduler on its own: `opus_core.scheduler.Scheduler` running a plan.

A real plan (`build_plan`), real processors, the `sequential` runner, the in-memory
persistence and a plugin manager with one plugin listening to the lifecycle hooks:
the order tasks run in, the values each sees, failures that skip their dependents,
retries and their attempt logs, timeouts, fail_fast, stop, restored tasks, state
writes and the records saved as tasks finish.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from opus_core import RunReport, StatePersistence, Task, TaskProcessor, TaskResult, hookimpl
from opus_core.graph import Plan, build_plan
from opus_core.plugin.manager import PluginManager
from opus_core.records import RunRecords
from opus_core.runners import SequentialRunner
from opus_core.scheduler import Scheduler


class Step(TaskProcessor):
    """Does what each task's spec says and remembers every attempt.

    spec keys: `publish` (values to return), `fail` (message to raise), `fail_attempts`
    (fail the first N attempts), `save_state` (saved under the task's id), `hang`
    (wait, up to a minute, for an event that never comes), `stop` (stop the run from
    inside the task).
    """

    kind = "Step"

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[tuple[str, dict[str, Any]]] = []  # (task id, values it saw)
        self.scheduler: Scheduler | None = None

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        spec = task.spec
        self.attempts.append((task.task_id, dict(key_value_store.store)))
        attempt = sum(1 for name, _ in self.attempts if name == task.task_id)
        if spec.get("stop"):
            assert self.scheduler is not None
            self.scheduler.stop()
        if spec.get("hang"):
            threading.Event().wait(60)
            raise AssertionError("the timeout never came")
        if attempt <= spec.get("fail_attempts", 0):
            raise ConnectionError(f"attempt {attempt} of {task.task_id} failed")
        if "fail" in spec:
            raise RuntimeError(spec["fail"])
        if "save_state" in spec:
            state_persistence.save_object_state(task.task_id, spec["save_state"])
        return dict(spec.get("publish", {}))

    def ran(self) -> list[str]:
        return [name for name, _ in self.attempts]

    def seen(self, name: str) -> dict[str, Any]:
        return [values for task, values in self.attempts if task == name][-1]


class Listener:
    """A plugin that writes down the lifecycle hooks as the scheduler calls them."""

    def __init__(self) -> None:
        self.heard: list[tuple[Any, ...]] = []

    @hookimpl
    def opus_run_started(self, plan: Plan) -> None:
        self.heard.append(("run_started", len(plan.tasks)))

    @hookimpl
    def opus_task_started(self, task: Task, attempt: int) -> None:
        self.heard.append(("started", task.task_id, attempt))

    @hookimpl
    def opus_task_retrying(
        self, task: Task, attempt: int, error: str, delay: float, traceback: str | None
    ) -> None:
        self.heard.append(("retrying", task.task_id, attempt, error, delay))

    @hookimpl
    def opus_task_finished(self, task: Task, result: TaskResult) -> None:
        self.heard.append(("finished", task.task_id, result.status.value))

    @hookimpl
    def opus_run_finished(self, report: RunReport) -> None:
        self.heard.append(("run_finished", report.summary()))


def step(name: str, spec: dict[str, Any] | None = None, **metadata: Any) -> Task:
    return Task(kind="Step", version="v1", spec=spec or {}, metadata={"name": name, **metadata})


class Run:
    """One scheduler over `tasks`, with its processor, listener and persistence at hand."""

    def __init__(
        self,
        *tasks: Task,
        values: dict[str, Any] | None = None,
        persistence: StatePersistence | None = None,
        **options: Any,
    ):
        self.processor = Step()
        self.listener = Listener()
        self.persistence = persistence or StatePersistence()
        hooks = PluginManager(autoload=False)
        hooks.register(self.listener, name="listener")
        processors = {("Step", "v1"): self.processor}
        self.plan = build_plan(list(tasks), processors, "apply", "default")
        self.scheduler = Scheduler(
            self.plan,
            processors,
            SequentialRunner(),
            values or {},
            self.persistence,
            hooks,
            **options,
        )
        self.processor.scheduler = self.scheduler

    def __call__(self) -> RunReport:
        return self.scheduler.run()


def statuses(report: RunReport) -> dict[str, str]:
    return {result.task_id: result.status.value for result in report}


# -- order and values -----------------------------------------------------------------------------


def test_tasks_run_once_each_in_plan_order_and_the_hooks_say_so() -> None:
    run = Run(step("c", dependencies=["b"]), step("b", dependencies=["a"]), step("a"))
    report = run()
    assert report.ok and not report.interrupted
    assert run.processor.ran() == ["a", "b", "c"]
    assert statuses(report) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    assert run.listener.heard == [
        ("run_started", 3),
        ("started", "a", 1),
        ("finished", "a", "succeeded"),
        ("started", "b", 1),
        ("finished", "b", "succeeded"),
        ("started", "c", 1),
        ("finished", "c", "succeeded"),
        ("run_finished", report.summary()),
    ]
    assert [(r.task_id, r.attempts) for r in report] == [("a", 1), ("b", 1), ("c", 1)]


def test_a_task_sees_the_starting_values_and_what_its_dependencies_published_only() -> None:
    run = Run(
        step("base", {"publish": {"region": "eu", "shared": "base"}}),
        step("mid", {"publish": {"shared": "mid"}}, dependencies=["base"]),
        step("aside", {"publish": {"aside": True}}),
        step("top", dependencies=["mid"]),
        values={"given": 1},
    )
    assert run().ok
    assert run.processor.seen("base") == {"given": 1}
    # Published by its dependency and by its dependency's dependency; not by "aside".
    assert run.processor.seen("top") == {"given": 1, "region": "eu", "shared": "mid"}
    assert run.scheduler.final_values() == {
        "given": 1,
        "region": "eu",
        "shared": "mid",
        "aside": True,
    }


def test_when_two_inputs_publish_one_key_the_later_in_plan_order_wins() -> None:
    run = Run(
        step("first", {"publish": {"key": "first"}}),
        step("second", {"publish": {"key": "second"}}),
        step("join", dependencies=["second", "first"]),
    )
    assert run().ok
    assert run.processor.seen("join") == {"key": "second"}


def test_placeholders_in_a_spec_take_the_values_the_task_sees() -> None:
    run = Run(
        step("make", {"publish": {"image": "web:2"}}),
        step("deploy", {"publish": {"deployed": "${image}"}}, dependencies=["make"]),
    )
    assert run().ok
    assert run.scheduler.final_values()["deployed"] == "web:2"


def test_a_placeholder_no_dependency_published_fails_the_task_and_skips_what_needs_it() -> None:
    run = Run(
        step("deploy", {"publish": {"deployed": "${image}"}}),
        step("check", dependencies=["deploy"]),
    )
    report = run()
    assert statuses(report) == {"deploy": "failed", "check": "skipped"}
    assert "image" in (report["deploy"].error or "")
    assert run.processor.ran() == []  # the processor was never called


# -- failures, retries, timeouts -------------------------------------------------------------------


def test_a_failure_skips_its_dependents_at_every_depth_and_nothing_else() -> None:
    run = Run(
        step("broken", {"fail": "disk full"}),
        step("child", dependencies=["broken"]),
        step("grandchild", dependencies=["child"]),
        step("independent"),
    )
    report = run()
    assert not report.ok
    assert statuses(report) == {
        "broken": "failed",
        "child": "skipped",
        "grandchild": "skipped",
        "independent": "succeeded",
    }
    assert report["broken"].error == "RuntimeError: disk full"
    assert "RuntimeError: disk full" in (report["broken"].traceback or "")
    assert report["child"].error == "dependency 'broken' did not succeed"
    assert report["grandchild"].error == "dependency 'broken' did not succeed"  # the cause
    assert run.processor.ran() == ["broken", "independent"]
    attempts = {r.task_id: r.attempts for r in report}
    assert attempts == {"broken": 1, "child": 0, "grandchild": 0, "independent": 1}


def test_a_task_is_retried_until_it_succeeds_and_each_attempt_is_logged() -> None:
    run = Run(
        step("flaky", {"fail_attempts": 2, "publish": {"ok": True}}, retries=3),
        step("after", dependencies=["flaky"]),
    )
    report = run()
    assert report.ok
    assert report["flaky"].attempts == 3
    assert run.processor.ran() == ["flaky", "flaky", "flaky", "after"]
    assert run.processor.seen("after") == {"ok": True}
    retrying = [event for event in run.listener.heard if event[0] == "retrying"]
    assert retrying == [
        ("retrying", "flaky", 1, "ConnectionError: attempt 1 of flaky failed", 0.0),
        ("retrying", "flaky", 2, "ConnectionError: attempt 2 of flaky failed", 0.0),
    ]
    logs = run.scheduler.attempt_logs()
    assert [(entry["attempt"], entry["status"]) for entry in logs[0]] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert [(entry["attempt"], entry["status"]) for entry in logs[1]] == [(1, "succeeded")]


def test_retries_run_out_and_the_last_error_is_the_task_s() -> None:
    run = Run(step("flaky", {"fail_attempts": 5}, retries=1), step("after", dependencies=["flaky"]))
    report = run()
    assert statuses(report) == {"flaky": "failed", "after": "skipped"}
    assert report["flaky"].attempts == 2
    assert report["flaky"].error == "ConnectionError: attempt 2 of flaky failed"


def test_a_timed_out_task_is_not_retried_and_its_dependents_are_skipped() -> None:
    run = Run(
        step("stuck", {"hang": True}, timeout=0.2, retries=2),
        step("after", dependencies=["stuck"]),
        step("fine"),
    )
    report = run()
    assert statuses(report) == {"stuck": "timed_out", "after": "skipped", "fine": "succeeded"}
    assert report["stuck"].attempts == 1
    assert "timed out after 0.2s" in (report["stuck"].error or "")


def test_fail_fast_skips_every_task_not_yet_started() -> None:
    run = Run(
        step("first"),
        step("broken", {"fail": "no"}),
        step("later"),
        step("last"),
        fail_fast=True,
    )
    report = run()
    assert statuses(report) == {
        "first": "succeeded",
        "broken": "failed",
        "later": "skipped",
        "last": "skipped",
    }
    assert report["later"].error == "not started: fail_fast after 'broken' failed"
    assert run.processor.ran() == ["first", "broken"]


# -- stopping -----------------------------------------------------------------------------------------


def test_stop_before_the_run_cancels_every_task_and_runs_none() -> None:
    run = Run(step("a"), step("b", dependencies=["a"]))
    run.scheduler.stop()
    report = run()
    assert report.interrupted
    assert statuses(report) == {"a": "cancelled", "b": "cancelled"}
    assert report["a"].error == "run stopped before it started"
    assert run.processor.ran() == []


def test_stop_during_a_sequential_task_lets_it_end_and_starts_nothing_more() -> None:
    run = Run(
        step("a"),
        step("stopper", {"stop": True}, dependencies=["a"]),
        step("c", dependencies=["stopper"]),
    )
    report = run()
    assert report.interrupted
    assert run.processor.ran() == ["a", "stopper"]
    assert statuses(report) == {"a": "succeeded", "stopper": "succeeded", "c": "cancelled"}


# -- what it keeps ------------------------------------------------------------------------------------


class Restorer:
    """Restores `built`, and notes what each task was asked with."""

    def __init__(self) -> None:
        self.asked: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}

    @hookimpl
    def opus_task_restore(
        self, task: Task, values: dict[str, Any], upstream: dict[str, str]
    ) -> dict[str, Any] | None:
        self.asked[task.task_id] = (dict(values), dict(upstream))
        return {"image": "from-before"} if task.task_id == "built" else None


def test_restored_tasks_are_not_run_and_their_values_reach_their_dependents() -> None:
    tasks = (step("built", {"publish": {"image": "new"}}), step("use", dependencies=["built"]))
    run = Run(*tasks, values={"region": "eu"}, restoring=True)
    restorer = Restorer()
    run.scheduler.hooks.register(restorer, name="restorer")
    report = run()
    assert statuses(report) == {"built": "restored", "use": "succeeded"}
    assert run.processor.ran() == ["use"]
    assert run.processor.seen("use") == {"region": "eu", "image": "from-before"}
    assert report["built"].attempts == 0
    # Each is asked when it is ready, with what it would see and how its upstream ended.
    assert restorer.asked == {
        "built": ({"region": "eu"}, {}),
        "use": ({"region": "eu", "image": "from-before"}, {"built": "restored"}),
    }


def test_state_a_task_saves_is_in_the_persistence_after_the_run() -> None:
    run = Run(step("deploy", {"save_state": {"replicas": 3}}))
    assert run().ok
    assert run.persistence.get_object_state("deploy") == {"replicas": 3}


def test_each_attempted_task_s_record_is_saved_with_its_outcome() -> None:
    tasks = [
        step("ok", {"publish": {"v": 1}}),
        step("bad", {"fail": "x"}),
        step("after", dependencies=["bad"]),
    ]
    persistence = StatePersistence()
    records = RunRecords(persistence, "apply", "default")
    Run(*tasks, persistence=persistence, records=records)()
    records.close()
    reader = RunRecords(persistence, "apply", "default")
    saved = {task.task_id: reader.load(task) for task in tasks}
    assert {name: (r.status, r.attempts) for name, r in saved.items() if r} == {
        "ok": ("succeeded", 1),
        "bad": ("failed", 1),
    }  # a task never attempted leaves the record it had
    assert saved["ok"] is not None and saved["ok"].published == {"v": 1}
    assert saved["bad"] is not None and saved["bad"].error == "RuntimeError: x"


def test_a_plan_with_no_dependencies_runs_every_task_in_the_order_added() -> None:
    names = [f"t{i}" for i in range(20)]
    run = Run(*(step(name, {"publish": {name: i}}) for i, name in enumerate(names)))
    report = run()
    assert report.ok and run.processor.ran() == names
    assert run.scheduler.final_values() == {name: i for i, name in enumerate(names)}


@pytest.mark.parametrize("fail_fast", [False, True])
def test_every_task_ends_with_exactly_one_finished_hook(fail_fast: bool) -> None:
    run = Run(
        step("a"),
        step("b", {"fail": "x"}),
        step("c", dependencies=["b"]),
        step("d", dependencies=["a"]),
        fail_fast=fail_fast,
    )
    report = run()
    finished = [event[1] for event in run.listener.heard if event[0] == "finished"]
    assert sorted(finished) == ["a", "b", "c", "d"]
    assert len(list(report)) == 4
