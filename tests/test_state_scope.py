"""What a resumed run restores is what was published, and each project keeps its own state.

Issue 14, items 9 and 10: `--resume` used to bring published values back
through plain JSON (a tuple came back a list, `{1: ...}` came back `{"1": ...}`),
and the default state directory was one for every project of the user.
"""

from __future__ import annotations

import collections
import enum
import math
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import opus
from opus_plugin_file_persistence import FilePersistence

from opus_core import LoggerWrapper, StatePersistence, Task, TaskProcessor, Tasks
from opus_core.persistence.sqlite import SqlitePersistence
from opus_core.records import record_id, storable

# -- item 9: restored values are the published values ------------------------------------


class Colour(enum.IntEnum):
    RED = 1


Point = collections.namedtuple("Point", "x y")


class Unequal:
    """A value whose `==` raises (as a numpy array's truth value does)."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("== is not defined for this value")

    __hash__ = object.__hash__


def faithful_values() -> dict[str, Any]:
    return {
        "pair": (1, (2, "x")),
        "by_id": {1: "one", (2, 3): "pair", None: "none", 1.5: "float", False: "no"},
        "tags": {"a"},
        "frozen": frozenset({3}),
        "raw": b"\x00\xff",
        "buffer": bytearray(b"ab"),
        "nan": math.nan,
        "inf": math.inf,
        "minus_inf": -math.inf,
        "looks_tagged": {"$opus": "tuple", "items": []},
        "plain": {"list": [1, 2.5, "s", None, True], "nested": {"k": [[]]}},
    }


def typed(value: Any) -> Any:
    """`value` with every type spelled out (so a list is never equal to a tuple, nor 1 to "1")."""
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    if isinstance(value, dict):
        return (type(value).__name__, [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted((typed(v) for v in value), key=repr))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    return (type(value).__name__, value)


class Publish(TaskProcessor):
    """`producer` publishes the values of `VALUES[spec["values"]]`; `consumer` notes what it sees."""

    kind = "Publish"
    ran: list[str] = []
    seen: list[Any] = []
    values: dict[str, Any] = {}

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        type(self).ran.append(task.task_id)
        if task.task_id == "producer":
            return dict(type(self).values)
        type(self).seen.append(typed({k: key_value_store.store[k] for k in type(self).values}))
        return {}


def engine(persistence: StatePersistence, round_: int) -> Tasks:
    tasks = Tasks(logger=LoggerWrapper("CRITICAL"), state_persistence=persistence)
    tasks.register_task_processor(Publish())
    tasks.add_task(Task("Publish", "v1", metadata={"name": "producer"}))
    # a changed spec: the consumer runs again on resume, the producer is restored
    tasks.add_task(
        Task(
            "Publish",
            "v1",
            spec={"round": round_},
            metadata={"name": "consumer", "dependencies": ["producer"]},
        )
    )
    return tasks


@pytest.fixture
def publish() -> type[Publish]:
    Publish.ran, Publish.seen, Publish.values = [], [], {}
    return Publish


def _persistence(kind: str, tmp_path: Path) -> StatePersistence:
    if kind == "file":
        return FilePersistence(tmp_path / "state")
    if kind == "sqlite":
        return SqlitePersistence(tmp_path / "state.db")
    return StatePersistence()


@pytest.mark.parametrize("kind", ["memory", "file", "sqlite"])
def test_resume_restores_tuples_non_str_keys_sets_bytes_and_non_finite_floats(
    tmp_path: Path, kind: str, publish: type[Publish]
) -> None:
    persistence = _persistence(kind, tmp_path)
    publish.values = faithful_values()
    assert engine(persistence, 1).process_context().ok
    if kind != "memory":  # a new process would read these files
        persistence = _persistence(kind, tmp_path)
    report = engine(persistence, 2).process_context(resume=True)
    assert report.ok
    assert report["producer"].status == "restored"
    assert publish.ran == ["producer", "consumer", "consumer"]
    first, resumed = publish.seen
    assert resumed == first  # the dependent sees exactly what it saw in the first run


@pytest.mark.parametrize(
    "value",
    [
        Colour.RED,  # an IntEnum used to come back a plain int
        Point(1, 2),  # a namedtuple used to come back a list
        collections.OrderedDict(a=1),
        Unequal(),
        [Unequal()],
        {Unequal()},
        object(),
        10**5000,  # too many digits to write as JSON
    ],
    ids=[
        "intenum",
        "namedtuple",
        "ordereddict",
        "eq-raises",
        "in-list",
        "in-set",
        "object",
        "bigint",
    ],
)
def test_a_value_that_cannot_be_stored_faithfully_makes_its_task_run_again(
    value: Any, publish: type[Publish]
) -> None:
    persistence = StatePersistence()
    publish.values = {"value": value}
    assert engine(persistence, 1).process_context().ok
    record = persistence.get_object_state(record_id("apply", "default", "producer"))
    assert record["status"] == "succeeded" and record["published"] is None
    report = engine(persistence, 2).process_context(resume=True)
    assert report.ok and report["producer"].status == "succeeded"
    assert publish.ran == ["producer", "consumer", "producer", "consumer"]


def test_values_that_contain_themselves_or_nest_too_deep_are_not_restorable() -> None:
    from opus_core.records import decode

    looped: list[Any] = []
    looped.append(looped)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert storable({"looped": looped}) is None
    assert storable({"deep": deep}) is None
    shared = [1]
    assert decode(storable({"a": shared, "b": shared})) == {"a": [1], "b": [1]}


def test_json_values_are_stored_as_plain_json() -> None:
    values = {"a": [1, 2.5, "x", None, True], "b": {"c": {}}}
    assert storable(values) == values


def test_a_damaged_tagged_record_is_no_record(publish: type[Publish]) -> None:
    persistence = StatePersistence()
    publish.values = {"pair": (1, 2)}
    assert engine(persistence, 1).process_context().ok
    identifier = record_id("apply", "default", "producer")
    record = persistence.get_object_state(identifier)
    record["published"] = {"pair": {"$opus": "no-such-tag", "items": []}}
    persistence.save_object_state(identifier, record)
    report = engine(persistence, 2).process_context(resume=True)
    assert report.ok and report["producer"].status == "succeeded"


# -- item 10: state is per project ------------------------------------------------------

PROCESSORS = """
from pathlib import Path
from opus_core import TaskProcessor

class Build(TaskProcessor):
    kind = "Build"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        Path(task.spec["artifact"]).write_text(task.task_id)
        return {task.task_id: task.spec["artifact"]}
"""

CONFIG = """
[opus]
persistence = "file"
processors = ["build:Build"]

[[tasks]]
kind = "Build"
version = "v1"
metadata = { name = "compile" }
spec = { artifact = "compiled.txt" }

[[tasks]]
kind = "Build"
version = "v1"
metadata = { name = "package", dependencies = ["compile"] }
spec = { artifact = "package.txt" }
"""


def checkout(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "opus.toml").write_text(textwrap.dedent(CONFIG))
    (root / "build.py").write_text(textwrap.dedent(PROCESSORS))
    return root


@pytest.fixture
def two_checkouts(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg-state")}
    return checkout(tmp_path / "one" / "project"), checkout(tmp_path / "two" / "project"), env


def test_resume_in_a_second_checkout_runs_everything(
    two_checkouts: tuple[Path, Path, dict[str, str]],
) -> None:
    one, two, env = two_checkouts
    first = opus("run", cwd=one, env=env)
    assert first.returncode == 0, first.stderr
    second = opus("run", "--resume", cwd=two, env=env)
    assert second.returncode == 0, second.stderr
    assert "restored" not in second.stdout
    assert (two / "compiled.txt").read_text() == "compile"  # its artifact is built
    assert (two / "package.txt").read_text() == "package"
    again = opus("run", "--resume", cwd=one, env=env)  # each checkout still resumes its own
    assert again.returncode == 0 and "2 restored" in again.stdout, again.stdout


def test_state_clear_in_one_checkout_leaves_the_others_records(
    two_checkouts: tuple[Path, Path, dict[str, str]],
) -> None:
    one, two, env = two_checkouts
    for root in (one, two):
        assert opus("run", cwd=root, env=env).returncode == 0
    cleared = opus("state", "clear", "--yes", cwd=one, env=env)
    if cleared.returncode == 2 and "--yes" in cleared.stderr:  # a CLI without --yes
        cleared = opus("state", "clear", cwd=one, env=env)
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared 2 record(s)" in cleared.stdout
    listed = opus("state", "list", cwd=two, env=env)
    assert "opus-run:apply:default:compile" in listed.stdout
    assert "opus-run:apply:default:package" in listed.stdout
    resumed = opus("run", "--resume", cwd=two, env=env)
    assert "2 restored" in resumed.stdout, resumed.stdout
    assert "no state" in opus("state", "list", cwd=one, env=env).stdout


def test_config_path_and_state_list_name_the_projects_state_folder(
    two_checkouts: tuple[Path, Path, dict[str, str]],
) -> None:
    one, two, env = two_checkouts
    state_home = Path(env["XDG_STATE_HOME"]) / "opus"
    folders = []
    for root in (one, two):
        shown = opus("config", "path", cwd=root, env=env)
        assert shown.returncode == 0, shown.stderr
        match = re.search(r"^state:\s+(\S+) \(persistence 'file'\)$", shown.stdout, re.M)
        assert match, shown.stdout
        folder = Path(match.group(1))
        assert folder.parent == state_home
        assert re.fullmatch(r"project-[0-9a-f]{12}", folder.name)
        assert opus("run", cwd=root, env=env).returncode == 0
        # This project's two records and its run's history entry, in its folder.
        assert len(list(folder.glob("*.json"))) == 3
        listed = opus("state", "list", cwd=root, env=env)
        assert listed.stderr.splitlines()[0] == f"state: {folder} (persistence 'file')"
        assert listed.stdout.startswith("ID")  # stdout is the table alone
        folders.append(folder)
    assert folders[0] != folders[1]


def test_config_path_names_the_folder_under_the_memory_persistence(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg-state")}
    (tmp_path / "opus.toml").write_text('[opus]\npersistence = "memory"\n')
    shown = opus("config", "path", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("state:"))
    assert "persistence 'memory'" in line
    assert f"this project's folder: {tmp_path / 'xdg-state' / 'opus' / tmp_path.name}-" in line


def test_the_project_folder_is_named_from_the_resolved_opus_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opus_core.config import project_state_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    one = checkout(tmp_path / "one" / "My Project!")
    two = checkout(tmp_path / "two" / "My Project!")
    folder = project_state_dir(one / "opus.toml")
    assert folder.parent == tmp_path / "xdg" / "opus"
    assert re.fullmatch(r"My_Project-[0-9a-f]{12}", folder.name), folder.name
    assert project_state_dir(two / "opus.toml") != folder
    os.symlink(one, tmp_path / "link")  # one checkout, reached another way: one folder
    assert project_state_dir(tmp_path / "link" / "opus.toml") == folder
    # two checkouts whose opus.toml links to one shared file are still two projects
    shared = tmp_path / "shared.toml"
    shared.write_text(CONFIG)
    for root in (one, two):
        (root / "opus.toml").unlink()
        (root / "opus.toml").symlink_to(shared)
    assert project_state_dir(one / "opus.toml") != project_state_dir(two / "opus.toml")
    # no opus.toml: the current directory is the project
    monkeypatch.chdir(tmp_path)
    assert project_state_dir(None).name.startswith(f"{tmp_path.name}-")


def test_from_config_uses_the_folder_of_the_configuration_it_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opus_core.config import project_state_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("OPUS_CONFIG", raising=False)
    one = checkout(tmp_path / "one" / "project")
    two = checkout(tmp_path / "two" / "project")
    monkeypatch.chdir(two)  # --config names another project than the one around us
    monkeypatch.syspath_prepend(str(one))
    tasks = Tasks.from_config(one / "opus.toml")
    persistence = tasks.state_persistence
    assert isinstance(persistence, FilePersistence)
    assert persistence.directory == project_state_dir(one / "opus.toml")
    assert FilePersistence().directory == project_state_dir(one / "opus.toml")  # loaded last
