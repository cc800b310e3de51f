"""Hostile runs: numbers that break clocks, stops that are ignored, exceptions that crash the run.

Each test here is the regression test of one item of issue 14; every fault ends
in one clear error, or fails only its task, and a run always ends with its summary.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import one_line_error, opus
from harness import Harness

from opus_core import LoggerWrapper, StatePersistence, Task, TaskProcessor, Tasks, task
from opus_core.errors import ManifestError, OpusError, PluginError, TaskTimeoutError
from opus_core.runners import BaseTaskRun, Runner, SequentialRunner
from opus_core.timeouts import DeadlineWatcher, call_with_alarm

NOOP = (
    "from opus_core import TaskProcessor\nclass Noop(TaskProcessor):\n    kind = 'Noop'\n"
    "    def process_task(self, task, command, context, key_value_store, state_persistence):\n"
    "        pass\n"
)


def project(tmp_path: Path, toml: str, **modules: str) -> Path:
    for name, source in {"noop": NOOP, **modules}.items():
        (tmp_path / f"{name}.py").write_text(source)
    (tmp_path / "opus.toml").write_text(toml)
    return tmp_path


def noop_task(metadata: str) -> str:
    return f'[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = {{ name = "a", {metadata} }}\n'


# -- item 6 and 7: timeout, retries and retry_sleep_time are checked once, the same everywhere ----

BAD_NUMBERS: list[tuple[str, Any, str]] = [
    ("timeout", math.inf, "timeout must be a finite number"),
    ("timeout", -math.inf, "timeout must be greater than 0"),
    ("timeout", math.nan, "timeout must be a number of seconds"),
    ("timeout", 1e308, "timeout must be at most"),
    ("timeout", 10**400, "timeout must be at most"),
    ("timeout", True, "timeout must be a number of seconds"),
    ("timeout", -1, "timeout must be greater than 0"),
    ("retry_sleep_time", math.inf, "retry_sleep_time must be a finite number"),
    ("retry_sleep_time", math.nan, "retry_sleep_time must be a number of seconds"),
    ("retry_sleep_time", 1e308, "retry_sleep_time must be at most"),
    ("retry_sleep_time", False, "retry_sleep_time must be a number of seconds"),
    ("retry_sleep_time", -0.5, "retry_sleep_time must be at least 0"),
    ("retries", math.inf, "retries must be a whole number of at least 0"),
    ("retries", math.nan, "retries must be a whole number of at least 0"),
    ("retries", True, "retries must be a whole number of at least 0"),
    ("retries", -1, "retries must be a whole number of at least 0"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_NUMBERS)
def test_bad_numbers_in_a_manifest_are_one_error_naming_the_task_and_key(
    key: str, value: Any, expected: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        Task("K", "v1", metadata={"name": "t", key: value})
    assert f"task 't': metadata.{expected}" in str(caught.value)


@pytest.mark.parametrize(("key", "value", "expected"), BAD_NUMBERS)
def test_bad_numbers_in_task_decorator_are_the_same_error(
    key: str, value: Any, expected: str
) -> None:
    with pytest.raises(ValueError) as caught:
        task(**{key: value})(print)
    assert f"@task {expected}" in str(caught.value) and "'print'" in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("timeout = inf", "metadata.timeout must be a finite number"),
        ("timeout = nan", "metadata.timeout must be a number of seconds"),
        ("timeout = 1e308", "metadata.timeout must be at most"),
        ("retry_sleep_time = inf", "metadata.retry_sleep_time must be a finite number"),
        ("retry_sleep_time = 1e308", "metadata.retry_sleep_time must be at most"),
        ("retries = inf", "metadata.retries must be a whole number"),
    ],
)
def test_bad_numbers_in_opus_toml_are_one_line(tmp_path: Path, toml: str, expected: str) -> None:
    project(tmp_path, '[opus]\nprocessors = ["noop:Noop"]\n' + noop_task(toml))
    message = one_line_error(opus("run", cwd=tmp_path))
    assert "opus.toml: tasks[0]: task 'a': " + expected in message


def test_one_bad_deadline_never_kills_the_deadline_watcher() -> None:
    watcher = DeadlineWatcher()
    hopeless = [BaseTaskRun(f"bad-{i}") for i in range(4)]
    for run, timeout in zip(hopeless, [math.inf, 1e308, math.nan, 10**400], strict=True):
        watcher.watch(run, timeout)  # type: ignore[arg-type]
    later = BaseTaskRun("later")
    watcher.watch(later, 0.05)
    assert later.wait(3), "the watcher died: no timeout fires any more"
    assert later.status == "timed_out"
    assert not any(run.done() for run in hopeless)


def test_the_alarm_in_the_caller_ignores_a_timeout_no_clock_can_hold() -> None:
    assert call_with_alarm(lambda: 42, math.inf, "forever") == 42
    assert call_with_alarm(lambda: 43, 1e308, "forever") == 43


def _wait_for(flag: list[object]) -> str:
    deadline = time.monotonic() + 60  # only a hang reaches it
    while not flag and time.monotonic() < deadline:
        time.sleep(0.005)
    return "done"


def test_an_alarm_the_caller_set_still_comes_when_a_task_with_a_timeout_runs() -> None:
    """pytest-timeout, or a program of its own, sets SIGALRM: opus's timeout keeps it."""
    heard: list[object] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: heard.append("caller"))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # due while the task runs
        assert call_with_alarm(lambda: _wait_for(heard), 120, "waits") == "done"
        assert heard == ["caller"]
        signal.setitimer(signal.ITIMER_REAL, 0.2)  # due after the task
        assert call_with_alarm(lambda: 42, 120, "quick") == 42
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < left <= 0.2, "the caller's alarm was cancelled"
        deadline = time.monotonic() + 60
        while len(heard) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert heard == ["caller", "caller"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_task_still_times_out_when_the_caller_has_an_alarm_set_for_later() -> None:
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 300)
        with pytest.raises(TaskTimeoutError, match="task 'slow' timed out after 0.05s"):
            call_with_alarm(lambda: _wait_for([]), 0.05, "slow")
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 200 < left <= 300, "the caller's alarm was not put back"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- item 8: Tasks.stop() under the sequential runner --------------------------------------------


def test_stop_under_the_sequential_runner_starts_nothing_more(tmp_path: Path) -> None:
    h = Harness(tmp_path, "sequential")
    for i in range(6):
        spec = {"release": str(tmp_path / "stopped")} if i else {}
        h.add(f"t{i}", spec=spec, dependencies=[f"t{i - 1}"] if i else [])
    report = h.run_and_stop(running=2, release=tmp_path / "stopped")
    assert h.started() == ["t0", "t1"]
    assert report.interrupted
    assert report["t0"].status == "succeeded"
    assert report["t1"].status == "succeeded"  # the running one ends as it really ended
    assert [report[f"t{i}"].status for i in range(2, 6)] == ["cancelled"] * 4


# -- item 11: BaseExceptions that are not Exceptions, under sequential ------------------------------


class Raising(TaskProcessor):
    kind = "Raising"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        raise {
            "cancelled": asyncio.CancelledError("cancelled in the task"),
            "generator-exit": GeneratorExit("odd"),
            "exit": SystemExit(3),
            "interrupt": KeyboardInterrupt(),
            "bad-str": BadStr(),
        }[task.spec["how"]]


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words for it")

    def __repr__(self) -> str:
        raise RuntimeError("no words for it either")


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("cancelled", "CancelledError: cancelled in the task"),
        ("generator-exit", "GeneratorExit: odd"),
        ("exit", "raised SystemExit(3)"),
        ("bad-str", "BadStr (its message could not be shown: RuntimeError)"),
    ],
)
@pytest.mark.parametrize("runner", ["sequential", "threadpool", "process"])
def test_odd_exceptions_fail_only_their_task(
    tmp_path: Path, runner: str, how: str, expected: str
) -> None:
    h = Harness(tmp_path, runner)
    h.tasks.register_task_processor(Raising())
    h.tasks.add_task(Task("Raising", "v1", spec={"how": how}, metadata={"name": "bad"}))
    h.add("after", dependencies=["bad"])
    h.add("other")
    report = h.run()
    assert report["bad"].status == "failed"
    assert expected in report["bad"].error
    assert report["after"].status == "skipped" and report["other"].status == "succeeded"
    assert not report.interrupted


RAISING_MODULE = """
import asyncio
from opus_core import TaskProcessor

class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no words for it")

class Raising(TaskProcessor):
    kind = "Raising"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        how = task.spec["how"]
        if how == "cancelled":
            raise asyncio.CancelledError()
        if how == "bad-str":
            raise BadStr()
        if how == "interrupt":
            raise KeyboardInterrupt
"""


@pytest.mark.parametrize(
    ("how", "status", "expected"),
    [("cancelled", 1, "CancelledError"), ("bad-str", 1, "BadStr"), ("interrupt", 130, "")],
)
def test_opus_run_under_sequential_prints_its_summary_whatever_a_processor_raises(
    tmp_path: Path, how: str, status: int, expected: str
) -> None:
    bad = '[[tasks]]\nkind = "Raising"\nversion = "v1"\nmetadata = { name = "bad" }\n'
    bad += f'spec = {{ how = "{how}" }}\n'
    other = '[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = { name = "other" }\n'
    toml = '[opus]\nprocessors = ["noop:Noop", "raising:Raising"]\npersistence = "memory"\n'
    toml += bad + other
    project(tmp_path, toml, raising=RAISING_MODULE)
    result = opus("run", cwd=tmp_path)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if status == 1:
        assert "1 succeeded, 1 failed" in result.stdout
        assert expected in result.stdout
    else:
        assert "(interrupted)" in result.stdout


# -- item 13: a processors module that calls sys.exit at import --------------------------------


@pytest.mark.parametrize("code", ["0", "3", "'usage: script.py [-h]'"])
def test_a_processors_module_calling_sys_exit_is_a_config_error(tmp_path: Path, code: str) -> None:
    module = f"import sys\nsys.exit({code})\n"
    project(tmp_path, '[opus]\nprocessors = ["script:Thing"]\n', script=module)
    message = one_line_error(opus("run", cwd=tmp_path))
    assert "opus.processors" in message and "'script'" in message and "SystemExit" in message


# -- item 14: broken runners and persistence are named -------------------------------------------

PLUGINS = """
from opus_core import StatePersistence, hookimpl
from opus_core.runners import Runner, SequentialRunner


class Exploding(Runner):
    name = "exploding"

    def __init__(self):
        raise RuntimeError("no cluster today")


class Liar(SequentialRunner):
    name = "liar"

    def submit(self, fn, /, *args, **kwargs):
        super().submit(fn, *args, **kwargs)
        return None


class Leaky(StatePersistence):
    name = "leaky"

    def __init__(self):
        self.saved = {}

    def get_object_state(self, object_identifier):
        return dict(self.saved.get(object_identifier, {}))

    def save_object_state(self, object_identifier, data):
        if object_identifier.startswith("opus-run:") and data["task"] == "b":
            raise RuntimeError("disk on fire")
        self.saved[object_identifier] = data

    def delete_object_state(self, object_identifier):
        return self.saved.pop(object_identifier, None) is not None

    def retrieve_all_state_from_persistence(self):
        return dict(self.saved)


@hookimpl
def opus_register_runners():
    return [Exploding, Liar]


@hookimpl
def opus_register_persistence():
    return [Leaky]
"""


def plugin_project(tmp_path: Path, opus_table: str) -> Path:
    tasks = "".join(
        f'[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = {{ name = "{n}" }}\n' for n in "abc"
    )
    return project(
        tmp_path,
        f'[opus]\nprocessors = ["noop:Noop"]\n{opus_table}\n{tasks}',
        breaker=PLUGINS,
    )


def test_a_runner_whose_init_raises_is_named_with_its_plugin(tmp_path: Path) -> None:
    plugin_project(tmp_path, 'runner = "exploding"')
    message = one_line_error(
        opus("-p", "breaker", "run", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    )
    assert "internal error" not in message
    assert "runner 'exploding'" in message and "plugin 'breaker'" in message
    assert "RuntimeError: no cluster today" in message


def test_a_runner_whose_submit_returns_garbage_is_named_with_its_plugin(tmp_path: Path) -> None:
    plugin_project(tmp_path, 'runner = "liar"')
    message = one_line_error(
        opus("-p", "breaker", "run", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    )
    assert "internal error" not in message
    assert "runner 'liar'" in message and "plugin 'breaker'" in message
    assert "returned None" in message


def test_a_persistence_failing_to_save_a_record_ends_the_run_with_its_summary(
    tmp_path: Path,
) -> None:
    plugin_project(tmp_path, 'persistence = "leaky"')
    message = one_line_error(
        opus("-p", "breaker", "run", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    )
    assert "internal error" not in message
    assert "persistence 'leaky'" in message and "plugin 'breaker'" in message
    assert "RuntimeError: disk on fire" in message
    assert "2 succeeded" in message and "1 cancelled" in message  # the summary


class FailingPersistence(StatePersistence):
    name = "failing"

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        return {}

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        raise OSError(28, "No space left on device")

    def delete_object_state(self, object_identifier: str) -> bool:
        return False

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        return {}


def test_a_persistence_raising_a_non_opus_error_through_the_api(tmp_path: Path) -> None:
    h = Harness(tmp_path, state_persistence=FailingPersistence())
    h.add("a")
    h.add("b", dependencies=["a"])
    with pytest.raises(OpusError, match=r"persistence 'failing'.*No space left on device"):
        h.run()
    assert h.started() == []  # the run's history is saved before its first task starts


def test_a_runner_instance_returning_a_non_run_is_a_plugin_error(tmp_path: Path) -> None:
    class Liar(SequentialRunner):
        name = "liar"

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> BaseTaskRun:
            return "not a run"  # type: ignore[return-value]

    h = Harness(tmp_path, Liar())  # type: ignore[arg-type]
    h.add("a")
    with pytest.raises(PluginError, match="runner 'liar'.*returned 'not a run'"):
        h.run()


def test_a_runner_class_whose_init_raises_through_the_api(tmp_path: Path) -> None:
    class Exploding(Runner):
        name = "exploding"

        def __init__(self) -> None:
            raise KeyError("no cluster")

    tasks = Tasks(logger=LoggerWrapper("CRITICAL"), runner=Exploding)
    with pytest.raises(PluginError, match="runner 'exploding'.*KeyError"):
        tasks.process_context()


# -- item 16: hostile TOML and processors ------------------------------------------------------


def test_deeply_nested_toml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    message = one_line_error(opus("run", cwd=tmp_path))
    assert "opus.toml" in message and "nested more than 64 levels deep" in message
    (tmp_path / "opus.toml").write_text("[opus]\nx = " + "{ a = " * 2000 + "1" + " }" * 2000)
    message = one_line_error(opus("run", cwd=tmp_path))
    assert "opus.toml" in message and "nested more than 64 levels deep" in message
    # deep enough to break what reads a spec later, not tomllib itself
    spec = "[" * 400 + "]" * 400
    toml = '[opus]\nprocessors = ["noop:Noop"]\n[[tasks]]\nkind = "Noop"\nversion = "v1"\n'
    project(tmp_path, toml + f"spec = {{ x = {spec} }}\n")
    message = one_line_error(opus("run", cwd=tmp_path))
    assert "opus.toml" in message and "nested more than 64 levels deep" in message


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"versions": 5}, "Odd.versions must be a list of version strings, got 5"),
        ({"versions": "v1"}, "Odd.versions must be a list of version strings, got 'v1'"),
        ({"versions": ()}, "Odd.versions must be a list of version strings, got ()"),
        ({"versions": ("v1", "")}, "Odd.versions must be a list of version strings"),
        ({"commands": "apply"}, "Odd.commands must be a list of command names, got 'apply'"),
        ({"commands": [1]}, "Odd.commands must be a list of command names"),
    ],
)
def test_processor_versions_and_commands_must_be_lists_of_strings(
    attributes: dict[str, Any], expected: str
) -> None:
    odd = type("Odd", (TaskProcessor,), {"kind": "Odd", **attributes})
    with pytest.raises(OpusError) as caught:
        odd()
    assert expected in str(caught.value)
    with pytest.raises(OpusError) as caught:
        Tasks().register_task_processor(odd)
    assert expected in str(caught.value)


def test_the_seed_constructor_refuses_a_string_of_versions() -> None:
    with pytest.raises(OpusError, match="TaskProcessor.versions must be a list"):
        TaskProcessor(kind="K", kind_versions="v1")


def test_register_task_processor_checks_an_instance_changed_after_init() -> None:
    class Later(TaskProcessor):
        kind = "Later"

    processor = Later()
    processor.versions = "v2"  # type: ignore[misc]
    with pytest.raises(OpusError, match="Later.versions must be a list"):
        Tasks().register_task_processor(processor)


def test_a_processor_with_versions_as_a_string_in_opus_toml(tmp_path: Path) -> None:
    module = "from opus_core import TaskProcessor\nclass P(TaskProcessor):\n"
    module += "    kind = 'P'\n    versions = 'v1'\n"
    project(tmp_path, '[opus]\nprocessors = ["odd:P"]\n', odd=module)
    message = one_line_error(opus("run", cwd=tmp_path))
    assert "P.versions must be a list of version strings, got 'v1'" in message


def test_an_exception_that_cannot_be_pickled_comes_back_from_a_process(tmp_path: Path) -> None:
    import threading

    class Unpicklable(Exception):
        def __init__(self) -> None:
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    class Raiser(TaskProcessor):
        kind = "Raiser"

        def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
            raise Unpicklable()

    h = Harness(tmp_path, "process")
    h.tasks.register_task_processor(Raiser())
    h.tasks.add_task(Task("Raiser", "v1", metadata={"name": "bad"}))
    h.add("other")
    report = h.run()
    assert report["bad"].status == "failed"
    assert "Unpicklable: holds a lock" in report["bad"].error
    assert "exited with code" not in report["bad"].error
    assert report["other"].status == "succeeded"
