"""The `loader` kind: a task loader for `.jsonl` manifests."""

from __future__ import annotations

from opus_core.cli.plugin_templates.common import API, TESTS_README

PACKAGE = (
    '''\
"""The opus plugin `$name`: a task loader for `.jsonl` manifests, to edit into your own.

`[opus] manifests` in opus.toml lists manifest files; opus asks each plugin's
`opus_load_tasks` for their tasks, and the first that answers wins. This one
reads `.jsonl` files — one task per line, as a JSON object with `kind`,
`version`, `metadata` and `spec` — and leaves every other file to others.
"""

from __future__ import annotations

import json
from pathlib import Path

from opus_core import Task
from opus_core.errors import ManifestError
from opus_core.plugin import hookimpl

'''
    + API
    + '''
SUFFIX = ".jsonl"
"""The files this plugin reads."""


@hookimpl
def opus_load_tasks(path: Path) -> list[Task] | None:
    """The tasks of `path` if it is a `.jsonl` file, else None (another plugin's file)."""
    if path.suffix != SUFFIX:
        return None
    tasks = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            tasks.append(
                Task(
                    entry["kind"],
                    entry.get("version", "v1"),
                    spec=entry.get("spec"),
                    metadata=entry.get("metadata"),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{path}:{number}: not a task ({exc!r})") from None
    return tasks
'''
)

TESTS = '''\
"""The `$name` loader reads `.jsonl` manifests, and leaves other files alone."""

from __future__ import annotations

import json
from pathlib import Path

from opus_core.testing import OpusProject

import $module

PROCESSOR = """
    from opus_core import TaskProcessor
    from opus_core.plugin import hookimpl


    class Greet(TaskProcessor):
        kind = "Greet"

        def process_task(self, task, command, context="default", key_value_store=None,
                         state_persistence=None):
            return {"greeting": "Hello, " + task.spec["name"] + "!"}


    @hookimpl
    def opus_register_processors():
        return [Greet]
"""

MANIFEST = "\\n".join(
    json.dumps(task)
    for task in [
        {"kind": "Greet", "version": "v1", "metadata": {"name": "one"}, "spec": {"name": "a"}},
        {
            "kind": "Greet",
            "metadata": {"name": "two", "dependencies": ["one"]},
            "spec": {"name": "b"},
        },
    ]
)


def test_it_reads_a_task_per_line(tmp_path: Path) -> None:
    (tmp_path / "deploy.jsonl").write_text(MANIFEST + "\\n\\n")
    tasks = $module.opus_load_tasks(tmp_path / "deploy.jsonl")
    assert [task.task_id for task in tasks] == ["one", "two"]
    assert tasks[1].spec == {"name": "b"}


def test_it_leaves_other_files_to_other_plugins(tmp_path: Path) -> None:
    assert $module.opus_load_tasks(tmp_path / "deploy.yaml") is None


def test_opus_runs_the_tasks_of_the_manifests_opus_toml_lists(opus_project: OpusProject) -> None:
    opus_project.write("greet.py", PROCESSOR)
    opus_project.register("greet")
    opus_project.register($module, name="$name")
    opus_project.write("deploy/tasks.jsonl", MANIFEST)
    opus_project.write_config('[opus]\\nmanifests = ["deploy/*.jsonl"]\\n')
    result = opus_project.run("run")
    result.assert_outcomes(succeeded=2)
'''

README = """\
# $distribution

An opus (`opus-core`) plugin, `$name`: a task loader
for `.jsonl` manifests — one task per line, as a JSON object with `kind`,
`version`, `metadata` and `spec`.

```sh
pip install -e .
opus plugins list        # lists `$name`, with the hook opus_load_tasks
```

```toml
[opus]
manifests = ["deploy/*.jsonl"]
```
""" + TESTS_README.replace("$contract", "")

# -- command --------------------------------------------------------------------------------
