"""`opus plugins new NAME`: a complete plugin distribution that installs and passes its test."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
from cli_helpers import one_line_error, opus

from opus_core import Task
from opus_core.cli import CommandContext
from opus_core.cli.scaffold import new
from opus_core.errors import ConfigError

OPUS = Path(sys.executable).parent / "opus"


KINDS = ["processor", "runner", "persistence", "loader", "command"]

OWN_TESTS = {"processor": 2, "runner": 2, "persistence": 2, "loader": 3, "command": 2}
"""How many tests each kind's template writes beside those of a conformance class."""


def scaffold(
    directory: Path, name: str = "hello", force: bool = False, kind: str = "processor"
) -> int:
    args = argparse.Namespace(name=name, directory=str(directory), force=force, kind=kind)
    return new(CommandContext(args))


def builds_wheels_by_itself() -> bool:
    """Whether this environment's setuptools can build a wheel without build isolation.

    From setuptools 70.1 on it can; before, it needs the `wheel` package. Where it
    cannot, pip builds in an isolated environment of its own (fetching setuptools
    from the configured index); either way this environment is left alone.
    """
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1)


@dataclass
class Installed:
    """The scaffolded `hello` plugin, installed (not editable) into a folder of its own."""

    distribution: Path
    target: Path
    env: dict[str, str]

    def run(self, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=300
        )


def install(root: Path, name: str = "hello", kind: str = "processor") -> Installed:
    """Scaffold the plugin `name` of `kind` in `root` and install it into `root/installed`."""
    assert scaffold(root, name, kind=kind) == 0
    distribution = root / f"opus-plugin-{name}"
    target = root / "installed"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    if builds_wheels_by_itself():
        pip.append("--no-build-isolation")
    result = subprocess.run([*pip, str(distribution)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["PYTHONPATH"] = str(target)
    env["XDG_CONFIG_HOME"] = str(root / "xdg" / "config")
    env["XDG_STATE_HOME"] = str(root / "xdg" / "state")
    return Installed(distribution, target, env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install(tmp_path_factory.mktemp("scaffold"))


def test_writes_a_complete_distribution(tmp_path: Path, capsys) -> None:
    assert scaffold(tmp_path) == 0
    folder = tmp_path / "opus-plugin-hello"
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert written == [
        ".gitignore",
        "README.md",
        "opus_plugin_hello/__init__.py",
        "pyproject.toml",
        "tests/test_hello.py",
    ]
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["name"] == "opus-plugin-hello"
    assert project["project"]["version"] == "0.1.0"
    assert project["project"]["dependencies"] == ["opus-core"]
    assert project["project"]["entry-points"]["opus"] == {"hello": "opus_plugin_hello"}
    assert project["project"]["optional-dependencies"] == {"test": ["pytest"]}
    readme = (folder / "README.md").read_text()
    assert "pip install -e ." in readme
    assert '[plugins.hello]\ngreeting = "Hi"' in readme
    assert "pytest" in readme
    out = capsys.readouterr().out
    assert "tests/test_hello.py" in out
    assert f"cd {folder}" in out
    assert "pip install -e '.[test]'" in out
    assert "opus plugins list" in out
    assert out.rstrip().endswith("pytest")


def test_a_dashed_name_gives_an_importable_module(tmp_path: Path) -> None:
    scaffold(tmp_path, "slack-notify")
    folder = tmp_path / "opus-plugin-slack-notify"
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["opus"] == {
        "slack-notify": "opus_plugin_slack_notify"
    }
    package = (folder / "opus_plugin_slack_notify" / "__init__.py").read_text()
    assert 'kind = "SlackNotifyHello"' in package
    for source in folder.rglob("*.py"):
        compile(source.read_text(), str(source), "exec")
    assert (folder / "tests" / "test_slack_notify.py").is_file()


def test_the_example_processor_greets_with_its_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scaffold(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "opus-plugin-hello"))
    monkeypatch.delitem(sys.modules, "opus_plugin_hello", raising=False)
    try:
        import opus_plugin_hello as plugin

        (processor,) = plugin.opus_register_processors()
        task = Task(kind="HelloHello", version="v1", spec={"name": "opus"})
        assert processor().process_task(task, "apply") == {"greeting": "Hello, opus!"}
        options = plugin.opus_plugin_options()(greeting="Hi")
        plugin.opus_configure(options)
        assert processor().process_task(task, "apply") == {"greeting": "Hi, opus!"}
    finally:
        sys.modules.pop("opus_plugin_hello", None)


@pytest.mark.parametrize("name", ["Hello", "1st", "my plugin", "hello.py", "", "_x", "-x", "héllo"])
def test_a_bad_name_is_refused_saying_what_is_allowed(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        scaffold(tmp_path, name)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(name) in message
    assert "lowercase letters, digits, '-' and '_', starting with a letter" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("builtin", "'builtin' is the name of opus's own plugin; choose another"),
        ("opus-plugin-foo", "give the plugin's own name: 'foo'"),
    ],
)
def test_a_reserved_or_doubled_name_is_refused(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        scaffold(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_distribution_is_overwritten_only_with_force(tmp_path: Path) -> None:
    scaffold(tmp_path)
    readme = tmp_path / "opus-plugin-hello" / "README.md"
    readme.write_text("mine")
    with pytest.raises(ConfigError, match="already exists; pass --force") as caught:
        scaffold(tmp_path)
    assert str(tmp_path / "opus-plugin-hello") in str(caught.value)
    assert readme.read_text() == "mine"
    assert scaffold(tmp_path, force=True) == 0
    assert readme.read_text().startswith("# opus-plugin-hello")


@pytest.mark.slow
def test_installing_leaves_the_project_environment_alone(installed: Installed) -> None:
    entry_points = next(installed.target.glob("opus_plugin_hello-0.1.0.dist-info/entry_points.txt"))
    assert "[opus]\nhello = opus_plugin_hello" in entry_points.read_text()
    assert (installed.target / "opus_plugin_hello" / "__init__.py").is_file()
    assert not (Path(sysconfig.get_paths()["purelib"]) / "opus_plugin_hello").exists()


@pytest.mark.slow
def test_the_installed_plugin_is_listed_enabled_with_its_processor(installed: Installed) -> None:
    result = installed.run(str(OPUS), "plugins", "list", "--json", cwd=installed.target.parent)
    assert result.returncode == 0, result.stderr
    (hello,) = [plugin for plugin in json.loads(result.stdout) if plugin["name"] == "hello"]
    assert hello["status"] == "enabled", hello
    assert (hello["distribution"], hello["version"]) == ("opus-plugin-hello", "0.1.0")
    assert hello["provides"]["processors"] == ["HelloHello"]


@pytest.mark.slow
def test_the_generated_tests_pass_against_the_installed_plugin(installed: Installed) -> None:
    tests = installed.distribution / "tests" / "test_hello.py"
    result = installed.run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests),
        cwd=installed.target.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_opus_plugins_new_on_the_command_line(tmp_path: Path) -> None:
    result = opus("plugins", "new", "hello", "--directory", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "opus-plugin-hello" / "pyproject.toml").is_file()
    again = opus("plugins", "new", "hello", "--directory", str(tmp_path), cwd=tmp_path)
    assert str(tmp_path / "opus-plugin-hello") in one_line_error(again)
    assert "not a valid plugin name" in one_line_error(opus("plugins", "new", "Bad", cwd=tmp_path))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_a_plugin_declaring_the_api_it_was_written_for(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert scaffold(tmp_path, "my-plugin", kind=kind) == 0
    folder = tmp_path / "opus-plugin-my-plugin"
    package = (folder / "opus_plugin_my_plugin" / "__init__.py").read_text()
    assert 'OPUS_PLUGIN_API_REQUIRES = ">=1.0,<2"' in package
    for source in folder.rglob("*.py"):
        compile(source.read_text(), str(source), "exec")
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["opus"] == {"my-plugin": "opus_plugin_my_plugin"}
    assert f"wrote the {kind} plugin 'my-plugin'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kind", "written"),
    [
        ("runner", "class TestMyPluginRunner(RunnerContract):\n"),
        ("persistence", "class TestMyPluginPersistence(PersistenceContract):\n"),
        ("loader", "def test_opus_runs_the_tasks_of_the_manifests_opus_toml_lists("),
        ("command", "def my_plugin(context: CommandContext) -> int:"),
    ],
)
def test_each_kind_writes_what_it_is_about(tmp_path: Path, kind: str, written: str) -> None:
    scaffold(tmp_path, "my-plugin", kind=kind)
    folder = tmp_path / "opus-plugin-my-plugin"
    sources = "".join(path.read_text() for path in sorted(folder.rglob("*.py")))
    assert written in sources


def test_an_unknown_kind_is_a_usage_error(tmp_path: Path) -> None:
    result = opus("plugins", "new", "x", "--kind", "widget", cwd=tmp_path)
    assert "invalid choice: 'widget'" in one_line_error(result)
    assert list(tmp_path.glob("opus-plugin-*")) == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS[1:])
def test_every_kind_installs_and_passes_its_own_tests(
    tmp_path_factory: pytest.TempPathFactory, kind: str
) -> None:
    plugin = install(tmp_path_factory.mktemp(kind), f"my-{kind}", kind)
    tests = plugin.distribution / "tests"
    result = plugin.run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests),
        cwd=plugin.target.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None and int(passed[1]) >= OWN_TESTS[kind], result.stdout
    assert "failed" not in result.stdout and "error" not in result.stdout
