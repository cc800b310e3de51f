"""Hostile input: bad configuration, bad manifests, hostile names, misbehaving processors.

Every fault ends in a clear `OpusError` or exit status 2 with one line naming
it — never a traceback, never a partial write.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import tomli_w
from cli_helpers import one_line_error, opus, runs_at_once
from harness import Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opus_plugin_file_persistence import FilePersistence

from opus_core import LoggerWrapper, StatePersistence, Task, TaskProcessor, Tasks
from opus_core.cli import main
from opus_core.records import record_id

# -- any bytes, any TOML ------------------------------------------------------------------------


def run_cli_in_process(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--dry-run", "--config", str(config)])
    captured = capsys.readouterr()
    assert status in (0, 2, 5), (status, captured.err)  # 5: a valid file with no task
    assert "Traceback" not in captured.err
    if status == 2:
        lines = [
            line for line in captured.err.splitlines() if not line.startswith("opus: warning:")
        ]
        assert len(lines) == 1 and lines[0].startswith("opus: error: "), captured.err


@pytest.mark.slow  # seeded fuzzing, many examples
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=300))
def test_any_bytes_as_opus_toml_never_give_a_traceback(
    tmp_path: Path, capsys, content: bytes
) -> None:
    config = tmp_path / "opus.toml"
    config.write_bytes(content)
    run_cli_in_process(config, capsys)


scalars = st.one_of(
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, width=16),
    st.text(max_size=8),
    st.sampled_from(["process", "threadpool", "file", "DEBUG", "v1"]),
)
keys = st.sampled_from(
    [
        "opus",
        "runner",
        "persistence",
        "logger",
        "log_level",
        "processors",
        "fail_fast",
        "disable_plugins",
        "runners",
        "threadpool",
        "max_workers",
        "tasks",
        "kind",
        "version",
        "metadata",
        "spec",
        "name",
        "dependencies",
        "labels",
        "retries",
        "timeout",
        "x",
    ]
)
documents = st.dictionaries(
    keys,
    st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=4,
)


@pytest.mark.slow  # seeded fuzzing, many examples
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=documents)
def test_any_toml_document_is_accepted_or_refused_in_one_line(
    tmp_path: Path, capsys, document: dict
) -> None:
    config = tmp_path / "opus.toml"
    config.write_text(tomli_w.dumps(document))
    run_cli_in_process(config, capsys)


# -- any graph ------------------------------------------------------------------------------------


class Recorder(TaskProcessor):
    kind = "Recorder"

    def __init__(self) -> None:
        super().__init__(logger=LoggerWrapper("CRITICAL"))
        self.order: list[str] = []
        self.seen: dict[str, dict] = {}
        self.lock = threading.Lock()

    def process_task(self, task, command, context, key_value_store, state_persistence):
        with self.lock:
            self.order.append(task.task_id)
            self.seen[task.task_id] = dict(key_value_store.store)
        return {task.task_id: len(self.order)}


@st.composite
def dags(draw: st.DrawFn) -> list[list[int]]:
    n = draw(st.integers(1, 14))
    return [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]


@pytest.mark.slow  # seeded fuzzing, many examples
@settings(max_examples=60, deadline=None)
@given(graph=dags(), runner=st.sampled_from(["sequential", "threadpool"]), order=st.randoms())
def test_any_dag_runs_each_task_after_its_dependencies_and_shows_it_only_its_ancestors(
    graph: list[list[int]], runner: str, order
) -> None:
    processor = Recorder()
    tasks = Tasks(runner=runner, logger=LoggerWrapper("CRITICAL"))
    tasks.register_task_processor(processor)
    positions = list(range(len(graph)))
    order.shuffle(positions)  # the order tasks are added in does not matter
    for i in positions:
        tasks.add_task(
            Task(
                "Recorder",
                "v1",
                metadata={"name": f"t{i}", "dependencies": [f"t{d}" for d in graph[i]]},
            )
        )
    report = tasks.process_context()
    assert report.ok and len(report) == len(graph)
    ran = {name: at for at, name in enumerate(processor.order)}
    ancestors: dict[int, set[int]] = {}
    for i, deps in enumerate(graph):
        ancestors[i] = set(deps).union(*(ancestors[d] for d in deps)) if deps else set()
        for d in deps:
            assert ran[f"t{d}"] < ran[f"t{i}"]
        assert set(processor.seen[f"t{i}"]) == {f"t{a}" for a in ancestors[i]}


# -- manifests through the command line ---------------------------------------------------------

NOOP = (
    "from opus_core import TaskProcessor\nclass Noop(TaskProcessor):\n    kind = 'Noop'\n"
    "    def process_task(self, task, command, context, key_value_store, state_persistence):\n        pass\n"
)


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        (
            '{ name = "a", dependencies = ["ghost"] }',
            "task 'a' depends on 'ghost', but no task is named 'ghost'",
        ),
        ('{ name = "a", dependencies = ["a"] }', "dependency cycle: a -> a"),
        (
            '{ name = "a", dependencies = [{ labels = "web" }] }',
            "task 'a': a label dependency's labels must be a table",
        ),
        (
            '{ name = "a", dependencies = [{ tier = "web" }] }',
            "each dependency must be a task name or",
        ),
        (
            '{ name = "a", retries = -1 }',
            "metadata.retries must be a whole number of at least 0, got -1",
        ),
        ('{ name = "a", retries = "twice" }', "metadata.retries must be a whole number"),
        ('{ name = "a", timeout = -3 }', "metadata.timeout must be greater than 0"),
        ('{ name = "a", retry_sleep_time = "soon" }', "metadata.retry_sleep_time must be a number"),
        ("{ name = 42 }", "metadata.name must be a non-empty string, got 42"),
        ('{ name = "a", contexts = "dev" }', "metadata.contexts must be a list of strings"),
    ],
)
def test_bad_manifests_in_opus_toml(tmp_path: Path, tasks: str, expected: str) -> None:
    (tmp_path / "noop.py").write_text(NOOP)
    (tmp_path / "opus.toml").write_text(
        f'[opus]\nprocessors = ["noop:Noop"]\n[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = {tasks}\n'
    )
    assert expected in one_line_error(opus("run", cwd=tmp_path))


def test_duplicate_names_and_cycles_in_opus_toml(tmp_path: Path) -> None:
    (tmp_path / "noop.py").write_text(NOOP)
    base = '[opus]\nprocessors = ["noop:Noop"]\n'
    entry = '[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = {{ name = "{}", dependencies = [{}] }}\n'
    (tmp_path / "opus.toml").write_text(base + entry.format("a", "") + entry.format("a", ""))
    assert "tasks[1]: task 'a': another task has the same name" in one_line_error(
        opus("run", cwd=tmp_path)
    )
    (tmp_path / "opus.toml").write_text(base + entry.format("a", '"b"') + entry.format("b", '"a"'))
    message = one_line_error(opus("run", cwd=tmp_path))
    assert "dependency cycle" in message and "a" in message and "b" in message


def test_a_placeholder_nobody_publishes(tmp_path: Path) -> None:
    (tmp_path / "noop.py").write_text(NOOP)
    (tmp_path / "opus.toml").write_text(
        '[opus]\nprocessors = ["noop:Noop"]\n[[tasks]]\nkind = "Noop"\nversion = "v1"\n'
        'metadata = { name = "a" }\nspec = { url = "${nowhere}" }\n'
    )
    result = opus("run", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "task 'a' uses ${nowhere} but no task it depends on published 'nowhere'" in result.stdout


# -- hostile task names ---------------------------------------------------------------------------

HOSTILE = [
    "../../etc/passwd",
    "/etc/shadow",
    "a/b",
    "..",
    ".",
    "nul\x00byte",
    "x" * 2000,
    "задача ✓",
    "🚀",
    "C:\\windows",
    "t-plain",
]


def test_hostile_task_names_stay_inside_the_state_directory_and_round_trip(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    for round_ in ("first", "second"):
        h = Harness(tmp_path / round_, state_persistence=FilePersistence(directory))
        for name in HOSTILE:
            h.add(name, spec={"publish": {"by": name}, "save_state": {"saved": name}})
        report = h.tasks.process_context(resume=True)
        assert report.ok
    assert h.started() == []  # the second round resumed every one of them
    assert all(report[name].resumed for name in HOSTILE)
    assert {p.parent for p in directory.rglob("*")} == {directory}
    assert not (tmp_path / "etc").exists()
    state = FilePersistence(directory).retrieve_all_state_from_persistence()
    for name in HOSTILE:
        assert state[name] == {"saved": name}
        assert state[record_id("apply", "default", name)]["published"] == {"by": name}


# -- misbehaving processors ---------------------------------------------------------------------


class Misbehaving(TaskProcessor):
    kind = "Misbehaving"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        how = task.spec["how"]
        if how == "unpicklable":
            return {"lock": threading.Lock()}
        if how == "not-a-dict":
            return ["not", "a", "dict"]
        if how == "keyboard-interrupt":
            raise KeyboardInterrupt
        if how == "base-exception":
            raise GeneratorExit("odd")
        if how == "exit":
            os._exit(7)
        return None


@pytest.mark.parametrize(
    ("how", "runner", "expected"),
    [
        ("unpicklable", "process", "could not be sent back from its process"),
        (
            "not-a-dict",
            "sequential",
            "process_task must return a dict, a KeyValueStore or None, got list",
        ),
        ("not-a-dict", "process", "process_task must return a dict"),
        ("keyboard-interrupt", "process", "KeyboardInterrupt"),
        ("base-exception", "process", "GeneratorExit: odd"),
        ("exit", "process", "exited with code 7 without sending back a result"),
    ],
)
def test_misbehaving_processors_fail_only_their_task(
    tmp_path: Path, how: str, runner: str, expected: str
) -> None:
    h = Harness(tmp_path, runner)
    h.tasks.register_task_processor(Misbehaving())
    h.tasks.add_task(Task("Misbehaving", "v1", spec={"how": how}, metadata={"name": "bad"}))
    h.add("after", dependencies=["bad"])
    h.add("other")
    report = h.run()
    assert report["bad"].status == "failed" and expected in report["bad"].error
    assert report["after"].status == "skipped" and report["other"].status == "succeeded"


def test_unpicklable_values_in_the_caller_still_run_and_are_not_recorded(tmp_path: Path) -> None:
    persistence = FilePersistence(tmp_path / "state")
    h = Harness(tmp_path, state_persistence=persistence)
    h.tasks.register_task_processor(Misbehaving())
    h.tasks.add_task(
        Task("Misbehaving", "v1", spec={"how": "unpicklable"}, metadata={"name": "bad"})
    )
    assert h.run().ok
    assert persistence.get_object_state(record_id("apply", "default", "bad"))["published"] is None


def test_keyboard_interrupt_from_a_processor_in_the_caller_stops_the_run_cleanly(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.tasks.register_task_processor(Misbehaving())
    h.add("first")
    h.tasks.add_task(
        Task("Misbehaving", "v1", spec={"how": "keyboard-interrupt"}, metadata={"name": "bad"})
    )
    h.add("never", dependencies=["bad"])
    report = h.run()
    assert report.interrupted
    assert report["first"].status == "succeeded"
    assert report["bad"].status == report["never"].status == "cancelled"


# -- concurrency ------------------------------------------------------------------------------------


def test_two_opus_runs_on_one_state_directory(tmp_path: Path) -> None:
    (tmp_path / "noop.py").write_text(NOOP)
    head = (
        '[opus]\npersistence = "file"\nrunner = "threadpool"\nprocessors = ["noop:Noop"]\n'
        '[persistence.file]\ndirectory = "state"\n'
    )
    for status, out, err in runs_at_once(tmp_path, head, 60, ("one", "two")):
        assert status == 0, out + err
    stored = [json.loads(p.read_text()) for p in (tmp_path / "state").glob("*.json")]
    records = [entry["state"] for entry in stored if entry["id"].startswith("opus-run:")]
    assert len(records) == 120
    runs = [entry["state"] for entry in stored if entry["id"].startswith("opus-history:")]
    assert sorted((run["context"], run["status"]) for run in runs) == [
        ("one", "succeeded"),
        ("two", "succeeded"),
    ]
    assert len(stored) == 122
    assert {(r["context"], r["status"]) for r in records} == {
        ("one", "succeeded"),
        ("two", "succeeded"),
    }


def test_200_tasks_on_16_threads_lose_no_record(tmp_path: Path) -> None:
    from opus_plugin_threadpool import ThreadPoolRunner

    for persistence in (StatePersistence(), FilePersistence(tmp_path / "state")):
        h = Harness(
            tmp_path / type(persistence).__name__,
            ThreadPoolRunner(max_workers=16),  # type: ignore[arg-type]
            state_persistence=persistence,
        )
        for i in range(200):
            h.add(f"t{i}", spec={"publish": {f"v{i}": i}, "save_state": {"i": i}})
        h.add("sink", dependencies=[f"t{i}" for i in range(200)])
        assert h.run().ok
        state = persistence.retrieve_all_state_from_persistence()
        assert all(state[f"t{i}"] == {"i": i} for i in range(200))
        assert all(
            state[record_id("apply", "default", f"t{i}")]["published"] == {f"v{i}": i}
            for i in range(200)
        )
        assert len(h.seen("sink")) == 200
