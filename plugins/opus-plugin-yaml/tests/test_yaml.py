"""opus-plugin-yaml: YAML manifests from real files, alone and through `opus run`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cli_helpers
import pytest
from opus_plugin_yaml import opus_load_tasks

from opus_core import ManifestError, Tasks

# In file order web comes first: the run order must come from the dependencies.
DEPLOY = """\
# web needs every task labelled tier=data
kind: Echo
version: v1
metadata:
  name: web
  dependencies:
    - labels: {tier: data}
spec:
  say: web using ${db}
  released: 2024-05-01
  publish: {url: "http://web.internal"}
---
kind: Echo
version: v1
metadata:
  name: database
  labels: {tier: data}
  dependencies: [network]
spec:
  say: database on ${network_id}
  publish: {db: db.internal}
---
---
kind: Echo
version: v1
metadata: {name: network}
spec:
  say: network up
  publish: {network_id: net-42}
"""

PROCESSORS = """\
from opus_core import TaskProcessor


class Echo(TaskProcessor):
    kind = "Echo"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        self.logger.info(f"echo {task.name}: {task.spec['say']}")
        return dict(task.spec["publish"])
"""

CONFIG = """\
[opus]
manifests = ["tasks/*.yaml"]
processors = ["yaml_test_procs:Echo"]
"""


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# -- the hook alone --------------------------------------------------------------------------


def test_one_task_per_document(tmp_path: Path) -> None:
    web, database, network = opus_load_tasks(write(tmp_path / "deploy.yaml", DEPLOY))
    assert [t.task_id for t in (web, database, network)] == ["web", "database", "network"]
    assert {(t.kind, t.version) for t in (web, database, network)} == {("Echo", "v1")}
    assert database.meta.labels == {"tier": "data"}
    assert database.meta.dependency_names == ("network",)
    assert [s.labels for s in web.meta.dependency_selectors] == [(("tier", "data"),)]
    assert web.spec == {
        "say": "web using ${db}",
        "released": "2024-05-01",  # a date stays the text written
        "publish": {"url": "http://web.internal"},
    }


def test_annotations_are_free_form(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.yml",
        "kind: Echo\nversion: v1\nmetadata:\n  name: a\n"
        "  annotations: {owner: ops, ticket: 42, links: [x, y]}\n",
    )
    [task] = opus_load_tasks(path)
    assert task.metadata["annotations"] == {"owner": "ops", "ticket": 42, "links": ["x", "y"]}


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    tasks = opus_load_tasks(write(tmp_path / "pipeline.yaml", example))
    assert [t.task_id for t in tasks] == ["network", "database", "web"]
    assert tasks[1].metadata["annotations"]["owner"] == "dba-team"
    assert tasks[2].spec["released"] == "2024-05-01"


def test_aliases_and_merge_keys_are_copies(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.yaml",
        "kind: Echo\nversion: v1\nspec:\n"
        "  base: &base {region: eu, size: 1}\n"
        "  big: {<<: *base, size: 3}\n"
        "  again: *base\n",
    )
    [task] = opus_load_tasks(path)
    assert task.spec["big"] == {"region": "eu", "size": 3}
    assert task.spec["again"] == task.spec["base"] and task.spec["again"] is not task.spec["base"]


def test_other_files_are_not_ours(tmp_path: Path) -> None:
    assert opus_load_tasks(write(tmp_path / "deploy.txt", DEPLOY)) is None
    assert opus_load_tasks(write(tmp_path / "empty.yaml", "# nothing yet\n")) == []


def test_importing_the_plugin_does_not_import_yaml() -> None:
    code = "import sys, opus_plugin_yaml; print('yaml' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


ONE = "kind: Echo\nversion: v1\n"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (ONE + "spec: {a: [1, 2}\n", 3, "invalid YAML: expected ',' or ']'"),
        (ONE + "---\n" + ONE + "specs: {}\n", 6, "unknown key 'specs'"),
        (ONE + "---\n" + ONE + "metadata: {retries: -1}\n", 4, "metadata.retries"),
        (ONE + "---\n- kind: Echo\n", 4, "must be a mapping of kind, version, metadata, spec"),
        ("kind: Echo\n", 1, "the manifest has no 'version'"),
        (ONE + "spec:\n  on: push\n", 4, "keys must be strings, and 'on' is read as bool"),
        (ONE + "spec: {[a]: 1}\n", 3, "keys must be strings, not a sequence"),
        (ONE + "spec:\n  a: 1\n  a: 2\n", 5, "duplicate key 'a'"),
        (ONE + "spec: {tags: !!set {a, b}}\n", 3, "!!set is not supported"),
        (ONE + "spec: {blob: !!binary aGk=}\n", 3, "!!binary is not supported"),
        (ONE + "spec: !!python/object/apply:os.system [echo hi]\n", 3, "invalid YAML"),
        (ONE + "spec: &a {again: *a}\n", 3, "recursive alias"),
        (ONE + 'spec: {a: "\x00"}\n', 3, "character #x0000 is not allowed"),
        ("[" * 5000 + "]" * 5000, 1, "nested too deeply"),
        ((ONE + "spec: {a: \xff}\n").encode("latin-1"), 3, "not UTF-8"),
    ],
)
def test_errors_name_the_file_and_line(
    tmp_path: Path, text: str | bytes, line: int, message: str
) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ManifestError) as error:
        opus_load_tasks(path)
    assert str(error.value).startswith(f"{path}:{line}: "), str(error.value)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path / "a-directory.yaml"):
        if path.stem == "a-directory":
            path.mkdir()
        with pytest.raises(ManifestError, match=rf"^{re.escape(str(path))}: cannot read: "):
            opus_load_tasks(path)


def lol(levels: int) -> str:
    """A manifest whose aliases expand to 9**levels strings: the "billion laughs"."""
    rows = ['  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefghi", "bcdefghi"[: levels - 1], strict=False):
        rows.append(f"  {name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return ONE + "spec:\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [(lol(9), 1), (lol(5) + "---\n" + lol(5), 10)],  # 9**9 in one document, 2 * 9**5 in two
)
def test_an_alias_bomb_is_refused_in_little_memory(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path / "lol.yaml", text)
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError, match=rf"^{re.escape(str(path))}:{line}: aliases expand"):
            opus_load_tasks(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # the aliases were never expanded (9**9 lists would not fit)


# -- through the engine and the command line (needs the core's `[opus] manifests`) -----------


def project(tmp_path: Path, manifests: str = DEPLOY) -> Path:
    write(tmp_path / "project" / "yaml_test_procs.py", PROCESSORS)
    write(tmp_path / "project" / "tasks" / "deploy.yaml", manifests)
    return write(tmp_path / "project" / "opus.toml", CONFIG)


def opus(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`opus ARGS` run from another directory, with configuration and state kept in tmp_path."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    return cli_helpers.opus(
        *args,
        cwd=cwd,
        env={
            "XDG_CONFIG_HOME": str(tmp_path / "config-home"),
            "XDG_STATE_HOME": str(tmp_path / "state-home"),
        },
    )


def test_opus_run_runs_yaml_tasks_in_dependency_order(tmp_path: Path) -> None:
    result = opus(tmp_path, "run", "--config", str(project(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    echoed = [line.split("echo ", 1)[1] for line in output.splitlines() if "echo " in line]
    assert echoed == [
        "network: network up",
        "database: database on net-42",
        "web: web using db.internal",
    ]


def test_a_bad_yaml_file_is_one_line_on_stderr(tmp_path: Path) -> None:
    config = project(tmp_path, DEPLOY.replace("say: network up", "say: network: up"))
    result = opus(tmp_path, "run", "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if not line.startswith("opus: warning:")]
    assert "deploy.yaml:28: invalid YAML: mapping values are not allowed here" in error


def test_from_config_holds_the_yaml_tasks(tmp_path: Path, monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("OPUS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    tasks = Tasks.from_config(project(tmp_path))
    assert sorted(t.task_id for t in tasks.tasks) == ["database", "network", "web"]
    assert tasks.process_context().ok
    assert tasks.key_value_store.store["url"] == "http://web.internal"
