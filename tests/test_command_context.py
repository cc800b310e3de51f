"""Commands get a `CommandContext`, and every command that reads the project configures its
plugins, once, the same way: what `opus run` writes, `opus state`, `opus runs` and
`opus report` read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from opus_core.testing import OpusProject, OpusResult

JSON_STATE = """
    import json
    import sys
    from dataclasses import dataclass
    from pathlib import Path

    from opus_core import StatePersistence, TaskProcessor
    from opus_core.plugin import hookimpl


    @dataclass
    class Options:
        file: str = "unconfigured.json"


    settings = Options()


    class JsonState(StatePersistence):
        \"\"\"Every state in one JSON file: `path`, else the file [plugins.jsonstate] names.\"\"\"

        name = "jsonstate"

        def __init__(self, path: Path | None = None, logger=None):
            super().__init__(logger)
            self.path = Path(path if path is not None else settings.file)
            self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

        def retrieve_all_state_from_persistence(self):
            return {key: dict(value) for key, value in self.data.items()}

        def get_object_state(self, object_identifier):
            return dict(self.data.get(object_identifier, {}))

        def save_object_state(self, object_identifier, data):
            self.data[object_identifier] = data
            self.persist_all_state()

        def delete_object_state(self, object_identifier):
            found = self.data.pop(object_identifier, None) is not None
            self.persist_all_state()
            return found

        def persist_all_state(self):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data))


    class Note(TaskProcessor):
        kind = "Note"

        def process_task(self, task, command, context="default", key_value_store=None,
                         state_persistence=None):
            return {"note": task.spec["text"]}


    @hookimpl
    def opus_register_persistence():
        return [JsonState]


    @hookimpl
    def opus_register_processors():
        return [Note]


    @hookimpl
    def opus_plugin_options():
        return Options


    @hookimpl
    def opus_configure(options):
        global settings
        settings = options
        print(f"jsonstate configured: {options.file}", file=sys.stderr)
"""

TASKS = """
    [[tasks]]
    kind = "Note"
    version = "v1"
    metadata = { name = "note" }
    spec = { text = "hi" }
"""


def jsonstate(opus_project: OpusProject, config: str) -> None:
    opus_project.write("kit_jsonstate.py", JSON_STATE)
    opus_project.register("kit_jsonstate", name="jsonstate")
    opus_project.write_config('[opus]\npersistence = "jsonstate"\n' + config + TASKS)


def configured_times(result: OpusResult) -> int:
    return len(re.findall(r"^jsonstate configured: ", result.stderr, re.M))


def seen_by_every_command(opus_project: OpusProject) -> dict[str, object]:
    """What `opus run`, `opus state list`, `opus runs list` and `opus report` see."""
    ran = opus_project.run("run")
    ran.assert_outcomes(succeeded=1)
    state = opus_project.run("state", "list", "--json")
    runs = opus_project.run("runs", "list", "--json")
    report = opus_project.run("report", "-o", "report.html")
    for result in (ran, state, runs, report):
        assert result.returncode == 0, result.stderr
    return {
        "state": [entry["id"] for entry in json.loads(state.stdout)],
        "runs": [(run["status"], run["counts"]["succeeded"]) for run in json.loads(runs.stdout)],
        "report": (opus_project.path / "report.html").is_file(),
        "where": state.stderr.splitlines()[-1],
    }


def test_a_persistence_configured_in_its_section_is_the_one_every_command_reads(
    opus_project: OpusProject,
) -> None:
    jsonstate(opus_project, '[persistence.jsonstate]\npath = "state/opus.json"\n')
    seen = seen_by_every_command(opus_project)
    assert seen["state"] == ["opus-run:apply:default:note"]
    assert seen["runs"] == [("succeeded", 1)]
    assert seen["report"] is True
    stored = json.loads((opus_project.path / "state" / "opus.json").read_text())
    assert "opus-run:apply:default:note" in stored
    assert not (opus_project.path / "unconfigured.json").exists()


def test_a_persistence_configured_through_its_plugins_options_is_the_one_every_command_reads(
    opus_project: OpusProject,
) -> None:
    jsonstate(opus_project, '[plugins.jsonstate]\nfile = "kept.json"\n')
    seen = seen_by_every_command(opus_project)
    assert seen["state"] == ["opus-run:apply:default:note"]
    assert seen["runs"] == [("succeeded", 1)]
    assert seen["report"] is True
    assert (opus_project.path / "kept.json").is_file()
    assert not (opus_project.path / "unconfigured.json").exists()


@pytest.mark.parametrize(
    "command",
    [
        ("run",),
        ("run", "--dry-run"),
        ("tasks",),
        ("graph",),
        ("state", "list"),
        ("state",),
        ("runs", "list"),
        ("runs",),
        ("config", "show"),
    ],
    ids=" ".join,
)
def test_every_command_that_reads_the_project_configures_each_plugin_once(
    opus_project: OpusProject, command: tuple[str, ...]
) -> None:
    jsonstate(opus_project, '[plugins.jsonstate]\nfile = "kept.json"\n')
    result = opus_project.run(*command)
    assert result.returncode in (0, 5), result.stderr
    assert configured_times(result) == 1, result.stderr
    result.stderr.fnmatch_lines(["jsonstate configured: kept.json"])


def test_a_command_that_must_work_whatever_the_configuration_holds_configures_nothing(
    opus_project: OpusProject,
) -> None:
    jsonstate(opus_project, "[plugins.jsonstate]\nfile = 3\n")
    listed = opus_project.run("plugins", "list")
    assert listed.returncode == 0, listed.stderr
    assert configured_times(listed) == 0
    where = opus_project.run("config", "path")
    assert where.returncode == 0, where.stderr
    where.stdout.fnmatch_lines(["state:*the persistence is unusable*plugins.jsonstate.file*"])
    refused = opus_project.run("state", "list")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    refused.stderr.fnmatch_lines(
        ["opus: error: *opus.toml: plugins.jsonstate.file must be a string, got 3"]
    )


def test_commands_that_read_state_never_load_the_tasks(opus_project: OpusProject) -> None:
    jsonstate(opus_project, "")
    assert opus_project.run("run").returncode == 0
    opus_project.write_config(
        '[opus]\npersistence = "jsonstate"\n[[tasks]]\nkind = "Missing"\nversion = "v1"\n'
    )
    assert opus_project.run("tasks").returncode == 2
    runs = opus_project.run("runs", "list")
    assert runs.returncode == 0, runs.stderr
    runs.stdout.fnmatch_lines(["*succeeded*apply/default*1 succeeded*"])


MAYBE = """
    from opus_core import TaskProcessor
    from opus_core.plugin import hookimpl


    class Maybe(TaskProcessor):
        kind = "Maybe"

        def process_task(self, task, command, context="default", key_value_store=None,
                         state_persistence=None):
            if task.spec.get("fail"):
                raise RuntimeError(task.spec["fail"])
            return {}


    @hookimpl
    def opus_register_processors():
        return [Maybe]
"""

CONTEXT_COMMAND = """
    from opus_core.cli import CommandContext
    from opus_core.plugin import hookimpl


    @hookimpl
    def opus_register_commands(commands):
        parser = commands.add("inspect", inspect_project, help="what the context offers")
        parser.add_argument("--what", default="everything")
        commands.add("legacy", legacy, help="a handler of the parsed arguments")


    def inspect_project(context: CommandContext) -> int:
        print("what:", context.args.what)
        print("project:", context.config.project.name)
        print("persistence:", type(context.persistence).name)
        print("same persistence:", context.tasks().state_persistence is context.persistence)
        print("same engine:", context.tasks() is context.tasks())
        print("tasks:", ", ".join(t.task_id for t in context.tasks().tasks))
        print("runners:", ", ".join(sorted(context.plugins.registry("runners"))))
        return 3


    def legacy(args):
        print("config:", args.config)
        print("manager:", type(args.plugin_manager).__name__)
        return 0
"""


def test_a_plugin_command_gets_the_context_it_asks_for(opus_project: OpusProject) -> None:
    opus_project.write("kit_inspect.py", CONTEXT_COMMAND)
    opus_project.write("kit_maybe.py", MAYBE)
    opus_project.register("kit_inspect")
    opus_project.register("kit_maybe")
    opus_project.write_config(
        '[opus]\npersistence = "memory"\n[[tasks]]\nkind = "Maybe"\nversion = "v1"\n'
        'metadata = { name = "echo" }\n'
    )
    result = opus_project.run("inspect", "--what", "all")
    assert result.returncode == 3, result.stderr
    result.stdout.fnmatch_lines(
        [
            "what: all",
            "project: opus.toml",
            "persistence: memory",
            "same persistence: True",
            "same engine: True",
            "tasks: echo",
            "runners: *process*sequential*",
        ]
    )


def test_a_handler_of_the_parsed_arguments_still_gets_them(opus_project: OpusProject) -> None:
    opus_project.write("kit_inspect.py", CONTEXT_COMMAND)
    opus_project.register("kit_inspect")
    opus_project.write_config()
    result = opus_project.run("legacy", "--config", "opus.toml")
    assert result.returncode == 0, result.stderr
    result.stdout.fnmatch_lines(["config: opus.toml", "manager: PluginManager"])


def test_the_worked_example_of_the_commands_page_runs(opus_project: OpusProject) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "commands.md").read_text()
    module = next(
        block
        for block in re.findall(r"```python\n(.*?)```", page, re.S)
        if "todo" in block and "def todo" in block
    )
    (table,) = re.findall(r"```toml\n(.*?)```", page, re.S)
    opus_project.write("opus_plugin_todo.py", module)
    opus_project.write("kit_maybe.py", MAYBE)
    opus_project.register("opus_plugin_todo", name="todo")
    opus_project.register("kit_maybe")
    opus_project.write_config(
        table
        + """
        [[tasks]]
        kind = "Maybe"
        version = "v1"
        metadata = { name = "build" }

        [[tasks]]
        kind = "Maybe"
        version = "v1"
        metadata = { name = "deploy", dependencies = ["build"] }
        spec = { fail = "the cluster is down" }

        [[tasks]]
        kind = "Maybe"
        version = "v1"
        metadata = { name = "report", dependencies = ["deploy"] }
        """.replace("\n        ", "\n")
    )
    before = opus_project.run("todo")
    assert before.returncode == 1, before.stderr
    before.stdout.fnmatch_lines(["build: never run", "*", "*", "3 of 3 task(s) to do"])
    opus_project.run("run").assert_outcomes(succeeded=1, failed=1, skipped=1)
    after = opus_project.run("todo")
    assert after.returncode == 1, after.stderr
    assert after.stdout.splitlines() == [
        "deploy: failed",
        "report: skipped",
        "2 of 3 task(s) to do",
    ]


PERSISTENCE_ONLY = """
    from opus_core.persistence import MemoryPersistence
    from opus_core.plugin import hookimpl


    class Kept(MemoryPersistence):
        name = "kept"

        def __init__(self, where: str = "here"):
            super().__init__()
            self.where = where


    @hookimpl
    def opus_register_persistence():
        return [Kept]
"""


def test_options_under_plugins_for_a_persistence_point_to_its_own_section(
    opus_project: OpusProject,
) -> None:
    opus_project.write("kept_plugin.py", PERSISTENCE_ONLY)
    opus_project.register("kept_plugin", name="kept")
    opus_project.write_config(
        """
        [opus]
        persistence = "kept"

        [plugins.kept]
        where = "there"
        """
    )
    result = opus_project.run("state", "list")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "takes no options; its [persistence.kept] options go there"
    ), result.stderr


def test_an_unknown_persistence_says_how_to_load_a_plugin(opus_project: OpusProject) -> None:
    opus_project.write_config('[opus]\npersistence = "nowhere"\n')
    result = opus_project.run("state", "list")
    assert result.returncode == 2
    assert "no persistence named 'nowhere'" in result.stderr
    assert "`opus -p MODULE` or $OPUS_PLUGINS" in result.stderr


LIMITED_RUNNER = """
    from opus_core.plugin import hookimpl
    from opus_core.runners import SequentialRunner


    class Limited(SequentialRunner):
        name = "limited"

        def __init__(self, per_label: dict[str, int] | None = None):
            self.per_label = per_label or {}


    @hookimpl
    def opus_register_runners():
        return [Limited]
"""


def test_config_show_prints_toml_that_reads_back_whatever_the_keys(
    opus_project: OpusProject,
) -> None:
    import tomllib

    opus_project.write("limited_runner.py", LIMITED_RUNNER)
    opus_project.register("limited_runner", name="limited")
    opus_project.write_config(
        """
        [opus]
        runner = "limited"

        [runners.limited]
        per_label = { "tier=db" = 1, "plain" = 2 }
        """
    )
    shown = opus_project.run("config", "show")
    assert shown.returncode == 0, shown.stderr
    lines = [line.split("  # ")[0] for line in shown.stdout.splitlines() if " = " in line]
    data = tomllib.loads("\n".join(lines))
    assert data["runners"]["limited"]["per_label"] == {"tier=db": 1, "plain": 2}
