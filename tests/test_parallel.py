"""The engine on runners: parallelism, child-process state, stop and Ctrl-C, notifications."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import interruptible
from harness import Harness

from opus_core import StatePersistence, Task, TaskProcessor, hookimpl


def test_independent_tasks_run_at_the_same_time(make_harness) -> None:
    h: Harness = make_harness("process")
    for name in "abcd":
        h.add(name, spec={"await_start": list("abcd")})  # none ends before all four started
    assert h.run().ok
    events = h.processor.events()
    starts = [e["t"] for e in events if e["event"] == "start"]
    ends = [e["t"] for e in events if e["event"] == "end"]
    assert max(starts) < min(ends)  # all four were running at once


def test_a_task_starts_as_soon_as_its_own_dependencies_succeed(make_harness) -> None:
    h: Harness = make_harness("process")
    h.add("quick")
    h.add("slow", spec={"await_start": ["after-quick"]})
    h.add("after-quick", dependencies=["quick"])
    assert h.run().ok
    assert h.event("after-quick", "start")["t"] < h.event("slow", "end")["t"]


def test_max_workers_caps_a_graph_on_the_process_runner(tmp_path: Path) -> None:
    from opus_core.runners import ProcessRunner

    h = Harness(tmp_path, ProcessRunner(max_workers=2))  # type: ignore[arg-type]
    for name in "abcd":
        h.add(name, spec={"sleep": 0.3})
    assert h.run().ok
    events = h.processor.events()
    starts = sorted(e["t"] for e in events if e["event"] == "start")
    ends = sorted(e["t"] for e in events if e["event"] == "end")
    assert starts[2] >= ends[0]  # the third waited for a slot


def test_state_saved_in_a_child_process_reaches_the_parent(make_harness) -> None:
    persistence = StatePersistence()
    persistence.save_object_state("existing", {"kept": True})
    h: Harness = make_harness("process", state_persistence=persistence)
    h.add("a", spec={"save_state": {"deployed": "v2", "replicas": 3}})
    h.add("b", spec={"save_state": {"ok": True}}, dependencies=["a"])
    assert h.run().ok
    assert persistence.get_object_state("a") == {"deployed": "v2", "replicas": 3}
    assert persistence.get_object_state("b") == {"ok": True}
    assert persistence.get_object_state("existing") == {"kept": True}


def test_a_child_reads_state_saved_before_the_run(make_harness) -> None:
    class Reader(TaskProcessor):
        kind = "Reader"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            return {"read": state_persistence.get_object_state("config")}

    persistence = StatePersistence()
    persistence.save_object_state("config", {"size": 3})
    h: Harness = make_harness("process", state_persistence=persistence)
    h.tasks.register_task_processor(Reader())
    h.tasks.add_task(Task("Reader", "v1", metadata={"name": "r"}))
    h.run()
    assert h.tasks.key_value_store.store["read"] == {"size": 3}


def test_stop_cancels_what_runs_and_what_has_not_started(make_harness) -> None:
    h: Harness = make_harness("process")
    h.add("long-1", spec={"sleep": 30})
    h.add("long-2", spec={"sleep": 30})
    h.add("after", dependencies=["long-1"])
    report = h.run_and_stop(running=2)
    assert report.interrupted and not report.ok
    assert {r.status for r in report} == {"cancelled"}


def test_systemexit_in_a_processor_fails_only_that_task(make_harness) -> None:
    class Exiter(TaskProcessor):
        kind = "Exiter"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            sys.exit(3)

    for runner in ("sequential", "process"):
        h: Harness = make_harness(runner)
        h.tasks.register_task_processor(Exiter())
        h.tasks.add_task(Task("Exiter", "v1", metadata={"name": "quitter"}))
        h.add("other")
        report = h.run()
        assert report["quitter"].status == "failed"
        assert "raised SystemExit(3)" in report["quitter"].error
        assert report["other"].status == "succeeded"


def test_a_killed_task_process_fails_that_task(make_harness) -> None:
    class Killer(TaskProcessor):
        kind = "Killer"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            os.kill(os.getpid(), signal.SIGKILL)

    h: Harness = make_harness("process")
    h.tasks.register_task_processor(Killer())
    h.tasks.add_task(Task("Killer", "v1", metadata={"name": "victim"}))
    h.add("after", dependencies=["victim"])
    report = h.run()
    assert report["victim"].status == "failed" and "killed by SIGKILL" in report["victim"].error
    assert report["after"].status == "skipped"


class Recorder:
    """A plugin object recording the lifecycle hooks."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    @hookimpl
    def opus_run_started(self, plan):
        self.events.append(("run_started", len(plan.tasks)))

    @hookimpl
    def opus_task_started(self, task, attempt):
        self.events.append(("task_started", task.task_id, attempt))

    @hookimpl
    def opus_task_retrying(self, task, attempt, error, delay):
        self.events.append(("task_retrying", task.task_id, attempt, delay))

    @hookimpl
    def opus_task_finished(self, task, result):
        self.events.append(("task_finished", task.task_id, str(result.status)))

    @hookimpl
    def opus_run_finished(self, report):
        self.events.append(("run_finished", report.ok))


def test_plugins_see_the_lifecycle_in_order(make_harness) -> None:
    recorder = Recorder()
    h: Harness = make_harness("process", plugins=[recorder])
    h.add("flaky", spec={"fail_attempts": 1}, retries=1, retry_sleep_time=0.01)
    h.add("next", dependencies=["flaky"])
    h.run()
    assert recorder.events == [
        ("run_started", 2),
        ("task_started", "flaky", 1),
        ("task_retrying", "flaky", 1, 0.01),
        ("task_started", "flaky", 2),
        ("task_finished", "flaky", "succeeded"),
        ("task_started", "next", 1),
        ("task_finished", "next", "succeeded"),
        ("run_finished", True),
    ]


def test_a_lifecycle_hook_that_raises_does_not_break_the_run(make_harness, capsys) -> None:
    class Broken:
        @hookimpl
        def opus_task_finished(self, task, result):
            raise RuntimeError("plugin bug")

    h: Harness = make_harness(plugins=[Broken()])
    h.tasks.logger.level = 0
    h.add("a")
    h.add("b")
    assert h.run().ok
    out = capsys.readouterr().out
    assert out.count("plugin 'Broken' failed in opus_task_finished: RuntimeError: plugin bug") == 1
    assert "task 'a' succeeded" in out and "task 'b' succeeded" in out


INTERRUPTIBLE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks

    class Sleep(TaskProcessor):
        kind = "Sleep"
        def process_task(self, task, command, context, key_value_store, state_persistence):
            Path(sys.argv[2], task.task_id).write_text("started")
            time.sleep(30)

    tasks = Tasks(runner=sys.argv[1], logger=LoggerWrapper("CRITICAL"))
    tasks.register_task_processor(Sleep())
    tasks.add_task(Task("Sleep", "v1", metadata={"name": "one"}))
    tasks.add_task(Task("Sleep", "v1", metadata={"name": "two", "dependencies": ["one"]}))
    report = tasks.process_context()
    print("interrupted" if report.interrupted else "finished", report.summary())
    """
)


def test_ctrl_c_stops_the_run_with_a_report(tmp_path: Path) -> None:
    script = tmp_path / "interruptible.py"
    script.write_text(INTERRUPTIBLE)
    for runner in ("sequential", "process"):
        marks = tmp_path / runner
        marks.mkdir()
        proc = interruptible([sys.executable, str(script), runner, str(marks)])
        deadline = time.monotonic() + 10
        while not (marks / "one").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out.startswith("interrupted 2 cancelled"), (runner, out, err)
        assert not (marks / "two").exists()


INTERRUPTED_AT_EACH_INSTANT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks
    from opus_core.runners.fork import descendants

    runner, marks = sys.argv[1], Path(sys.argv[2])
    ME = os.getpid()

    class Sleep(TaskProcessor):
        kind = "Sleep"
        def process_task(self, task, command, context, key_value_store, state_persistence):
            if task.spec["sleep"]:
                Path(marks, task.task_id).write_text("started")
                time.sleep(60)

    class InterruptAt:
        # Counts the instants at which Python acts on a signal (a function starts, a built-in
        # call returns) while the scheduler starts the first task, and sends this process
        # SIGINT at the `at`-th; with None, once that task is started.
        def __init__(self, at):
            self.at, self.count, self.frame = at, 0, None
        def __call__(self, frame, event, arg):
            if os.getpid() != ME:  # in a child just forked: not for it
                sys.setprofile(None)
                return
            if self.frame is None:
                code = frame.f_code
                if event == "call" and code.co_name == "_start" and "scheduler" in code.co_filename:
                    self.frame = frame
                else:
                    return
            if event in ("call", "c_return"):
                self.count += 1
                if self.count == self.at:
                    sys.setprofile(None)
                    os.kill(ME, signal.SIGINT)
            elif event == "return" and frame is self.frame and self.at is None:
                sys.setprofile(None)
                os.kill(ME, signal.SIGINT)

    def again(frame, event, arg):
        if event in ("call", "c_return"):
            sys.setprofile(None)
            os.kill(ME, signal.SIGINT)

    def dropped(info):
        # Python drops a KeyboardInterrupt raised in a __del__ or a weakref callback (it prints
        # it and goes on), as it would a real Ctrl-C there: interrupt again at the next instant.
        if issubclass(info.exc_type, KeyboardInterrupt):
            sys.setprofile(again)
        else:
            sys.__unraisablehook__(info)

    sys.unraisablehook = dropped

    def run(at, sleep=True):
        tasks = Tasks(runner=runner, logger=LoggerWrapper("CRITICAL"))
        tasks.register_task_processor(Sleep())
        tasks.add_task(Task("Sleep", "v1", metadata={"name": "one"}, spec={"sleep": sleep}))
        two = {"name": "two", "dependencies": ["one"]}
        tasks.add_task(Task("Sleep", "v1", metadata=two, spec={"sleep": sleep}))
        interrupt = InterruptAt(at)
        sys.setprofile(interrupt if sleep else None)
        try:
            return interrupt, tasks.process_context()
        finally:
            sys.setprofile(None)

    def running_below():
        alive = []
        for pid in descendants(ME):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        return alive

    assert run(None, sleep=False)[1].ok  # every module the start imports, imported
    instants = run(None)[0].count
    print("instants", instants, flush=True)
    for at in range(1, instants + 1):
        for mark in marks.iterdir():
            mark.unlink()
        interrupt, report = run(at)
        guard = time.monotonic() + 10  # a failure guard: the processes are killed, not waited for
        while (left := running_below()) and time.monotonic() < guard:
            time.sleep(0.01)
        if left or not report.interrupted or (marks / "two").exists():
            print("at", at, report.summary(), "left running:", left, flush=True)
    print("done", flush=True)
    """
)


@pytest.mark.slow  # dozens of opus processes, each interrupted
@pytest.mark.parametrize("runner", ["process", "processpool"])
def test_ctrl_c_at_each_instant_of_a_task_start_stops_everything(
    tmp_path: Path, runner: str
) -> None:
    """Ctrl-C lands, in turn, at every instant at which Python can act on it while the
    scheduler starts a task (the fork, the watcher taking the process, the run's
    bookkeeping): each time, the run ends interrupted with nothing left running — no
    process for the exit to wait for — and the next task never starts."""
    script = tmp_path / "each_instant.py"
    script.write_text(INTERRUPTED_AT_EACH_INSTANT)
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = interruptible([sys.executable, str(script), runner, str(marks)])
    out, err = proc.communicate(timeout=600)  # a failure guard only
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("instants "), out
    assert int(lines[0].split()[1]) > 50, out  # the whole start was swept, fork included
    assert lines[1:] == ["done"], out


FINISHED_AT_EACH_INSTANT = textwrap.dedent(
    """
import os, signal, sys
from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks, hookimpl

ME = os.getpid()


class Quick(TaskProcessor):
    kind = "Quick"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        return {}


class Heard:
    def __init__(self):
        self.finished = {}

    @hookimpl
    def opus_task_finished(self, task, result):
        self.finished.setdefault(task.task_id, []).append(result.status.value)


class InterruptAt:
    # SIGINT at the `at`-th instant Python can act on it inside the scheduler's first `_finish`.
    def __init__(self, at):
        self.at, self.count, self.frame, self.fired = at, 0, None, False

    def __call__(self, frame, event, arg):
        if self.frame is None:
            code = frame.f_code
            if event == "call" and code.co_name == "_finish" and code.co_filename.endswith("scheduler.py"):
                self.frame = frame
            else:
                return
        if not frame.f_code.co_filename.endswith("scheduler.py"):
            return
        if event in ("call", "c_return"):
            self.count += 1
            if self.count == self.at:
                sys.setprofile(None)
                self.fired = True
                os.kill(ME, signal.SIGINT)
        elif event == "return" and frame is self.frame:
            sys.setprofile(None)


def run(at):
    heard = Heard()
    tasks = Tasks(plugins=[heard], logger=LoggerWrapper("CRITICAL"))
    tasks.register_task_processor(Quick())
    for name in ("one", "two", "three"):
        tasks.add_task(Task("Quick", "v1", metadata={"name": name}))
    probe = InterruptAt(at)
    sys.setprofile(probe)
    try:
        report = tasks.process_context()
    finally:
        sys.setprofile(None)
    return report, heard, probe


at, problems = 1, []
while True:
    report, heard, probe = run(at)
    if not probe.fired:
        break
    for result in report.results.values():
        said = heard.finished.get(result.task_id)
        if said != [result.status.value]:
            problems.append((at, result.task_id, result.status.value, said))
    at += 1
print("instants", at - 1)
print(problems or "done")
    """
)


def test_ctrl_c_at_each_instant_of_a_tasks_end_still_tells_plugins_how_it_ended(
    tmp_path: Path,
) -> None:
    """Ctrl-C lands, in turn, at every instant at which Python can act on it while the
    scheduler records that a task ended: each task's `opus_task_finished` is heard once,
    with the status the report gives it (a stop between the two once lost the hook)."""
    script = tmp_path / "finished_at_each_instant.py"
    script.write_text(FINISHED_AT_EACH_INSTANT)
    proc = interruptible([sys.executable, str(script)])
    out, err = proc.communicate(timeout=120)  # a failure guard only
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("instants ") and int(lines[0].split()[1]) >= 5, out
    assert lines[1:] == ["done"], out
