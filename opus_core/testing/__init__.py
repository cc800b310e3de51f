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
        result = opus_project.run("run")           # the real `opus` command
        assert result.returncode == 0, result.stderr
        assert "Hello, opus!" in result.stdout + result.stderr

Registered plugins are loaded in-process (`Tasks.from_config(..., plugins=[...])`)
and by the `opus` command (their module names in `$OPUS_PLUGINS`, their folders
on `PYTHONPATH`), whether or not the plugin is also installed. Neither reads nor
writes the user's files: `XDG_CONFIG_HOME` and `XDG_STATE_HOME` point into the
test's temporary folder and every `OPUS_*` variable is removed, in the test
process (for the test's duration) and in the `opus` it runs.

Nothing of opus is imported until a fixture is used, since pytest imports this
module in every session of every project that has opus-core installed.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opus_core.engine import Tasks
    from opus_core.testing.persistence import PersistenceContract
    from opus_core.testing.runner import RunnerContract

__all__ = ["OpusProject", "PersistenceContract", "RunnerContract", "opus_project"]

_CONTRACTS = {
    "PersistenceContract": "opus_core.testing.persistence",
    "RunnerContract": "opus_core.testing.runner",
}


def __getattr__(name: str) -> Any:
    """The conformance classes, imported when first asked for."""
    module = _CONTRACTS.get(name)
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
        """`Tasks.from_config` on the project's `opus.toml`, with the registered plugins."""
        from opus_core.engine import Tasks

        return Tasks.from_config(self.path / "opus.toml", plugins=list(self.plugins), **kwargs)

    def command(self) -> list[str]:
        """How `run` starts opus: the `opus` script beside this Python, else `-m opus_core.cli`."""
        script = Path(sys.executable).parent / "opus"
        return [str(script)] if script.exists() else [sys.executable, "-m", "opus_core.cli"]

    def run(
        self, *args: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `opus ARGS` in the project folder with the registered plugins; what it did.

        `env` adds or overrides environment variables, after everything else.
        """
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
        return subprocess.run(
            [*self.command(), *args],
            cwd=self.path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def close(self) -> None:
        """Forget the modules imported from the project folder, for the next test's own."""
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
