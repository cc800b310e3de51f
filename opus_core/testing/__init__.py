"""The plugin author's pytest fixtures: `opus_project`, an opus project in a temporary folder.

opus-core registers this module with pytest (the `pytest11` entry point), so any
test of a project that has opus-core installed can ask for the fixture::

    # tests/test_hello.py
    import opus_plugin_hello

    from opus_core.testing import OpusProject

    TASKS = '''
        [[tasks]]
        kind = "HelloHello"
        version = "v1"
        metadata = { name = "greet" }
        spec = { name = "opus" }
    '''


    def test_the_processor_greets(opus_project: OpusProject) -> None:
        opus_project.register(opus_plugin_hello)   # or by name: "opus_plugin_hello"
        opus_project.write_config(TASKS)
        tasks = opus_project.tasks()               # Tasks.from_config, in this process
        assert tasks.process_context().ok
        assert tasks.key_value_store.store["greeting"] == "Hello, opus!"


    def test_opus_run_greets(opus_project: OpusProject) -> None:
        opus_project.register(opus_plugin_hello)
        opus_project.write_config(TASKS)
        result = opus_project.run("run")           # `opus run`, in this process
        result.assert_outcomes(succeeded=1)        # read from the run's own summary
        result.stderr.fnmatch_lines(["*Hello, opus!*"])
        assert result.ret == 0                     # also .returncode, as CompletedProcess

Registered plugins are loaded in-process (`Tasks.from_config(..., plugins=[...])`)
and by the `opus` command (their module names in `$OPUS_PLUGINS`, their folders
on `PYTHONPATH`), whether or not the plugin is also installed. Both run in the
project folder: the fixture makes it the test's working directory, as `opus`
makes the folder of `opus.toml` the working directory of the tasks it runs, so
a relative path means the same file to `tasks()` and to `run()`. Neither reads
nor writes the user's files: `XDG_CONFIG_HOME` and `XDG_STATE_HOME` point into
the test's temporary folder and every `OPUS_*` variable is removed, in the test
process (for the test's duration) and in the `opus` it runs.

`run` runs `opus_core.cli.main` in the test's process, as a new `opus` process
would see it (`opus_core.testing.cli.run_opus`: its own environment, working
directory, `sys.path` and fds 1 and 2, what opus keeps per process forgotten),
without the start of a new Python each time. `run(..., process=True)` runs the
real `opus` script in a process of its own, for what only a process shows:
signals, an exit that does not return (`os._exit`, which a run in the test's
process refuses with `opus_core.testing.cli.ExitedInProcess`), start-up.

`run` returns an `OpusResult`: a `subprocess.CompletedProcess` (`returncode`,
`stdout`, `stderr`, `args`) whose `stdout` and `stderr` are strings with
pytest's line matching (`fnmatch_lines`, `re_match_lines`, `no_fnmatch_line`),
with `ret` for the exit status and, after `opus run`, `outcomes` and
`assert_outcomes(succeeded=..., failed=..., ...)`, as pytest's `pytester` offers.

Nothing of opus is imported until a fixture is used, since pytest imports this
module in every session of every project that has opus-core installed.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opus_core.engine import Tasks
    from opus_core.testing.caches import reset_caches
    from opus_core.testing.persistence import PersistenceContract
    from opus_core.testing.runner import RunnerContract

# The conformance classes' asserts show the values that differ, as a test's own do (pytest
# rewrites only test modules and the plugins it loads unless told).
pytest.register_assert_rewrite("opus_core.testing.persistence", "opus_core.testing.runner")

__all__ = [
    "OpusProject",
    "OpusResult",
    "Output",
    "PersistenceContract",
    "RunnerContract",
    "opus_project",
    "reset_caches",
]

_LAZY = {
    "PersistenceContract": "opus_core.testing.persistence",
    "RunnerContract": "opus_core.testing.runner",
    "reset_caches": "opus_core.testing.caches",
}


def __getattr__(name: str) -> Any:
    """The conformance classes and `reset_caches`, imported when first asked for (pytest
    loads this module as a plugin in every session: it stays light)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'opus_core.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def import_root(module: ModuleType) -> Path | None:
    """The folder `module` is imported from: the one to put on `sys.path` to import it.

    `pkg/__init__.py` gives the parent of `pkg`, `a/b/c.py` (module `a.b.c`) the
    parent of `a`; None for a module that is not a file.
    """
    file = getattr(module, "__file__", None)
    if not file:
        return None
    levels = module.__name__.count(".")
    if Path(file).stem == "__init__":
        levels += 1
    return Path(file).resolve().parents[levels]


STATUSES = ("succeeded", "failed", "skipped", "timed_out", "restored", "cancelled")
"""How a task of a run can end: the keywords of `OpusResult.assert_outcomes`."""

SUMMARY = re.compile(
    r"(?P<counts>\d+ [a-z_]+(?:, \d+ [a-z_]+)*|no tasks) in \d+(?:\.\d+)?s(?: \(interrupted\))?"
)
"""The last line `opus run` prints: `2 succeeded, 1 failed in 0.41s`."""

NOTHING_IN_SCOPE = 5
"""The exit status of `opus run` with no task in scope: a run of no tasks."""


class Output(str):
    """What `opus` wrote to stdout or stderr: a `str`, with pytest's line matching.

    The matchers are those of `pytest.LineMatcher` (what `pytester` results offer):
    each raises a failure that shows every line and where the match stopped.
    """

    __slots__ = ()

    @property
    def lines(self) -> list[str]:
        """The text, one item per line, without line ends."""
        return self.splitlines()

    def fnmatch_lines(self, lines: Sequence[str], *, consecutive: bool = False) -> None:
        """Fail unless the text has lines matching the glob patterns `lines`, in order
        (`*` any text, `?` one character; with `consecutive`, one after the other)."""
        pytest.LineMatcher(self.lines).fnmatch_lines(list(lines), consecutive=consecutive)

    def re_match_lines(self, lines: Sequence[str], *, consecutive: bool = False) -> None:
        """Fail unless the text has lines that the regular expressions `lines` match
        (`re.match`: from the start of the line), in order."""
        pytest.LineMatcher(self.lines).re_match_lines(list(lines), consecutive=consecutive)

    def no_fnmatch_line(self, pattern: str) -> None:
        """Fail if any line matches the glob `pattern`."""
        pytest.LineMatcher(self.lines).no_fnmatch_line(pattern)

    def no_re_match_line(self, pattern: str) -> None:
        """Fail if the regular expression `pattern` matches the start of any line."""
        pytest.LineMatcher(self.lines).no_re_match_line(pattern)


class OpusResult(subprocess.CompletedProcess[str]):
    """What `OpusProject.run` returns: how `opus` exited and what it wrote.

    A `subprocess.CompletedProcess` (`args`, `returncode`, `stdout`, `stderr`)
    whose `stdout` and `stderr` are `Output`s: strings with `fnmatch_lines`
    and the other matchers of `pytest.LineMatcher`.
    """

    stdout: Output
    stderr: Output

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(list(args), returncode, Output(stdout), Output(stderr))

    @property
    def ret(self) -> int:
        """The exit status (`returncode`), as pytest's `RunResult.ret`."""
        return self.returncode

    @property
    def outcomes(self) -> dict[str, int]:
        """How many tasks of `opus run` ended in each status (every status, zeros included).

        Read from what the run printed: its JSON report with `--json`, else its
        summary line; a run with nothing in scope (exit status 5) ran no task.
        Fails the test when the output holds no run (another command, `--dry-run`).
        """
        counts = dict.fromkeys(STATUSES, 0)
        found = self._json_counts()
        if found is None:
            found = self._summary_counts()
        if found is None:
            if self.returncode == NOTHING_IN_SCOPE:
                return counts
            raise AssertionError(
                f"no run outcome in the output of {' '.join(self.args)} (exit status "
                f"{self.returncode}): it prints no summary line and no JSON report\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            )
        counts.update(found)
        return counts

    def _json_counts(self) -> dict[str, int] | None:
        try:
            data = json.loads(self.stdout)
        except ValueError:
            return None
        counts = data.get("counts") if isinstance(data, dict) else None
        if not isinstance(counts, dict):
            return None
        return {str(status): int(n) for status, n in counts.items()}

    def _summary_counts(self) -> dict[str, int] | None:
        for line in reversed(self.stdout.lines):
            matched = SUMMARY.fullmatch(line.strip())
            if matched is None:
                continue
            if matched["counts"] == "no tasks":
                return {}
            pairs = (part.split(" ", 1) for part in matched["counts"].split(", "))
            return {status: int(n) for n, status in pairs}
        return None

    def assert_outcomes(
        self,
        succeeded: int = 0,
        failed: int = 0,
        skipped: int = 0,
        timed_out: int = 0,
        restored: int = 0,
        cancelled: int = 0,
    ) -> None:
        """Fail unless `opus run` ended exactly so many tasks in each status (those not
        given: none), showing what differs, the exit status and the output."""
        expected = {
            "succeeded": succeeded,
            "failed": failed,
            "skipped": skipped,
            "timed_out": timed_out,
            "restored": restored,
            "cancelled": cancelled,
        }
        actual = self.outcomes
        seen = {status: actual.get(status, 0) for status in expected}
        if seen != expected:
            differs = ", ".join(
                f"{status}: expected {expected[status]}, got {seen[status]}"
                for status in expected
                if seen[status] != expected[status]
            )
            raise AssertionError(
                f"outcomes differ ({differs}); exit status {self.returncode}\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            )


class OpusProject:
    """An opus project in a temporary folder: its files, its plugins, an engine and `opus`.

    Made by the `opus_project` fixture; `path` is the project folder (where
    `opus.toml` goes and where `run` runs `opus`).
    """

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = root / "project"
        """The project folder: `write` writes into it, `run` runs `opus` in it."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.plugins: list[ModuleType] = []
        """The registered plugin modules, in the order they were registered."""
        self._monkeypatch = monkeypatch
        # The test runs in the project folder, as `run()` and every task do: a relative
        # path in the test, in `tasks()` and in `opus` names the same file.
        monkeypatch.chdir(self.path)
        self._on_sys_path = False
        self._names: list[str] = []
        self.environment: dict[str, str] = {
            "XDG_CONFIG_HOME": str(root / "xdg" / "config"),
            "XDG_STATE_HOME": str(root / "xdg" / "state"),
        }
        """The variables set for the test and for `opus`: the user's folders, redirected."""
        for key in [key for key in os.environ if key.startswith("OPUS_")]:
            monkeypatch.delenv(key)
        for key, value in self.environment.items():
            Path(value).mkdir(parents=True, exist_ok=True)
            monkeypatch.setenv(key, value)

    def register(self, plugin: ModuleType | str, name: str | None = None) -> None:
        """Load `plugin` — a module, or the name of one — in `tasks()` and in `run()`.

        A name is imported with the project folder first on `sys.path`, so a
        module written with `write` can be registered by name. `name` is the
        plugin's name (its entry-point name once installed: what `[plugins.NAME]`
        and `disable_plugins` use); by default the module's name.
        """
        if isinstance(plugin, str):
            if not self._on_sys_path:
                self._monkeypatch.syspath_prepend(str(self.path))
                self._on_sys_path = True
            plugin = importlib.import_module(plugin)
        if plugin not in self.plugins:
            self.plugins.append(plugin)
            self._names.append(f"{name}={plugin.__name__}" if name else plugin.__name__)
        # Every plugin manager of the test (in-process and in `run`) loads them by name.
        self._monkeypatch.setenv("OPUS_PLUGINS", ",".join(self._names))

    def write(self, relative: str, text: str) -> Path:
        """Write `text`, dedented, to `relative` (inside the project folder); its path."""
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return target

    def write_config(self, text: str = "") -> Path:
        """Write the project's `opus.toml` (dedented); its path."""
        return self.write("opus.toml", text)

    def tasks(self, **kwargs: Any) -> Tasks:
        """`Tasks.from_config` on the project's `opus.toml`, with the registered plugins
        (in the project folder, the test's working directory, as `run()`)."""
        from opus_core.engine import Tasks

        return Tasks.from_config(self.path / "opus.toml", plugins=list(self.plugins), **kwargs)

    def command(self) -> list[str]:
        """How `run(..., process=True)` starts opus: the `opus` script beside this Python,
        else `-m opus_core.cli` (`opus_core.testing.cli.opus_command`)."""
        from opus_core.testing.cli import opus_command

        return opus_command()

    def run(
        self,
        *args: str,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        process: bool = False,
    ) -> OpusResult:
        """Run `opus ARGS` in the project folder with the registered plugins; what it did
        (`OpusResult`: `returncode`, `stdout`, `stderr`, `assert_outcomes`, line matching).

        `env` adds or overrides environment variables, after everything else. It runs
        in the test's process, as a new `opus` process would see it
        (`opus_core.testing.cli.run_opus`); with `process`, it is the real `opus`
        command in a process of its own, stopped after `timeout` seconds — for what
        only a process shows: signals, an exit that does not return (`os._exit`),
        start-up.
        """
        from opus_core.testing.cli import run_opus

        environment = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
        environment.update(self.environment)
        if self.plugins:
            environment["OPUS_PLUGINS"] = ",".join(self._names)
        folders: list[str] = []
        for plugin in self.plugins:
            root = import_root(plugin)
            if root is not None and str(root) not in folders:
                folders.append(str(root))
        if environment.get("PYTHONPATH"):
            folders.append(environment["PYTHONPATH"])
        if folders:
            environment["PYTHONPATH"] = os.pathsep.join(folders)
        environment.update(env or {})
        command = self.command() if process else ["opus"]
        done = run_opus(
            args,
            cwd=self.path,
            env=environment,
            process=process,
            timeout=timeout,
            command=command,
        )
        return OpusResult([*command, *args], done.returncode, done.stdout, done.stderr)

    def close(self) -> None:
        """Forget the modules imported from the project folder, for the next test's own, and
        what opus keeps per process (`reset_caches`)."""
        from opus_core.testing.caches import reset_caches

        reset_caches()
        prefixes = tuple({str(self.path) + os.sep, os.path.realpath(self.path) + os.sep})
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if isinstance(file, str) and file.startswith(prefixes):
                del sys.modules[name]


@pytest.fixture
def opus_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpusProject]:
    """An opus project in `tmp_path`: write its files, register plugins, run it (`OpusProject`)."""
    project = OpusProject(tmp_path, monkeypatch)
    yield project
    project.close()
