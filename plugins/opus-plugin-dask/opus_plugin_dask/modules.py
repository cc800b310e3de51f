"""Shipping the user's own modules to the workers.

Work travels to the workers with pickle, which names a function or a class by
its module: a worker must be able to import that module. Installed
distributions (opus-core, the opus plugins, the libraries a project uses) have
to be installed on the workers too; the user's own modules — imported from the
project folder (`[opus] processors`), from a script's folder, from
`$PYTHONPATH` — are shipped by the runner, as `ProjectModules`, a Dask worker
plugin:

* `user_modules()` (on the driver) finds them: every module in `sys.modules`
  loaded from a `.py` file that no installed distribution provides and that is
  not in the standard library or a `site-packages` folder. A package goes whole
  (every `.py` file under it), so submodules imported later are found too.
* `ProjectModules.setup` (on each worker, also on workers that join later)
  and `SchedulerModules.start` (on the scheduler, which unpickles the
  arguments of tasks) leave alone a module the worker imports from the very file the driver did
  (a `LocalCluster`, a worker sharing the project's folder and `sys.path`), and
  write the others into a folder of the local directory put first on
  `sys.path`. A module the worker had imported with other contents (an
  earlier run's) is forgotten, so the next task imports the new one.

Only source travels: data files beside a module, compiled extensions and
modules imported for the first time after the run started (by `import` inside
a task) stay behind.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from opus_core.runners.user_modules import is_library_file, source_file, user_top_levels
from opus_plugin_dask.process import PROCESS_TOKEN

SKIPPED_DIRS = frozenset({"__pycache__", "site-packages", "node_modules"})


@dataclass(frozen=True, slots=True)
class ModuleSource:
    """One top-level module or package of the user's, as the driver has it."""

    name: str
    """The top-level import name."""
    origin: str
    """The file the driver imported it from (a package: its `__init__.py`; a namespace: "")."""
    files: dict[str, bytes] = field(repr=False)
    """Source files by path relative to the folder the module is imported from
    (`name.py`, or `name/__init__.py`, `name/sub.py`, ...)."""

    @property
    def digest(self) -> str:
        """A hash of the files: what tells one version of the module from another."""
        h = hashlib.sha256(self.name.encode())
        for relative in sorted(self.files):
            h.update(b"\0" + relative.encode() + b"\0" + self.files[relative])
        return h.hexdigest()[:16]


# -- on the driver ------------------------------------------------------------------


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _package_files(name: str, folder: Path) -> dict[str, bytes]:
    """Every `.py` file under a package's folder, by path relative to its parent."""
    files: dict[str, bytes] = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for file_name in names:
            if file_name.endswith(".py"):
                path = Path(root, file_name)
                data = _read(path)
                if data is not None:
                    relative = path.relative_to(folder).as_posix()
                    files[f"{name}/{relative}"] = data
    return files


def _namespace_files(name: str, package: ModuleType) -> dict[str, bytes]:
    """The imported submodules of a namespace package (no `__init__.py`; it has no one folder)."""
    portions = [Path(p) for p in getattr(package, "__path__", ())]
    files: dict[str, bytes] = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith(name + ".") or module is None:
            continue
        source = source_file(module)
        if source is None or is_library_file(source):
            continue
        expected = module_name.split(".")[1:]
        for portion in portions:
            try:
                parts = Path(source).relative_to(portion).with_suffix("").parts
            except ValueError:
                continue
            if list(parts) == expected or list(parts) == [*expected, "__init__"]:
                data = _read(Path(source))
                if data is not None:
                    files[f"{name}/{Path(source).relative_to(portion).as_posix()}"] = data
                break
    return files


def _top_level_source(name: str, module: ModuleType) -> ModuleSource | None:
    """The user's module or package `name`, or None if it is not one a worker could import."""
    source = source_file(module)
    if source is not None:
        if is_library_file(source):
            return None
        path = Path(source)
        if hasattr(module, "__path__"):  # a regular package: its __init__.py names its folder
            if path.name != "__init__.py" or path.parent.name != name:
                return None
            files = _package_files(name, path.parent)
        else:
            if path.stem != name:  # imported under a name its file does not give it
                return None
            data = _read(path)
            if data is None:
                return None
            files = {f"{name}.py": data}
        return ModuleSource(name, source, files)
    if getattr(module, "__file__", None) is None and hasattr(module, "__path__"):
        files = _namespace_files(name, module)
        return ModuleSource(name, "", files) if files else None
    return None


def user_modules() -> list[ModuleSource]:
    """The user's own top-level modules and packages imported in this process
    (`opus_core.runners.user_modules` says which modules are the user's)."""
    found = [_top_level_source(name, module) for name, module in user_top_levels()]
    return sorted((shipped for shipped in found if shipped is not None), key=lambda m: m.name)


# -- on the workers -----------------------------------------------------------------

_versions: dict[str, str] = {}
"""The digest each shipped module had when this worker process last set it up."""
_folder_users: dict[str, int] = {}
"""How many `ProjectModules` plugins use each folder this process put on `sys.path`."""


def _forget(name: str) -> None:
    """Drop a top-level module and its submodules, so the next import reads them again."""
    for module_name in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module_name]


def _imports_the_same_file(shipped: ModuleSource) -> bool:
    """Whether this process imports `shipped.name` from the file the driver imported it from."""
    if not shipped.origin:
        return False
    try:
        spec = importlib.util.find_spec(shipped.name)
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None)
    return isinstance(origin, str) and os.path.realpath(origin) == os.path.realpath(shipped.origin)


def install(modules: list[ModuleSource], local_directory: str, digest: str) -> str | None:
    """Make `modules` importable in this process, as the driver has them.

    Forgets stale versions, writes what this process cannot import from the
    driver's own files into `local_directory/opus-modules/digest/` and puts
    that folder first on `sys.path`. Returns the folder, or None if nothing
    had to be written.
    """
    folder = Path(local_directory, "opus-modules", digest)
    written = False
    for shipped in modules:
        version = shipped.digest
        if _versions.get(shipped.name, version) != version:
            _forget(shipped.name)  # an earlier run's version
        _versions[shipped.name] = version
        if _imports_the_same_file(shipped):
            continue
        module = sys.modules.get(shipped.name)
        if module is not None and not str(getattr(module, "__file__", "")).startswith(str(folder)):
            _forget(shipped.name)  # another module of that name: ours comes first now
        for relative, data in shipped.files.items():
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        written = True
    if not written:
        return None
    users = _folder_users.get(str(folder), 0)
    _folder_users[str(folder)] = users + 1
    if users == 0:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return str(folder)


def release(folder: str) -> None:
    """Take `folder` off `sys.path` once nothing installed uses it (its modules stay imported)."""
    users = _folder_users.get(folder, 1) - 1
    if users > 0:
        _folder_users[folder] = users
        return
    _folder_users.pop(folder, None)
    if folder in sys.path:
        sys.path.remove(folder)


def _digest(modules: list[ModuleSource]) -> str:
    h = hashlib.sha256()
    for shipped in modules:
        h.update(shipped.digest.encode())
    return h.hexdigest()[:16]


class ProjectModules(WorkerPlugin):
    """A worker plugin that makes the driver's own modules importable on the workers."""

    def __init__(self, modules: list[ModuleSource]) -> None:
        self.modules = modules
        self.digest = _digest(modules)
        self.driver = PROCESS_TOKEN
        self.folder: str | None = None

    def setup(self, worker: Any) -> None:
        """Install the modules (not in the driver's own process: it has them)."""
        if self.driver != PROCESS_TOKEN:
            self.folder = install(self.modules, worker.local_directory, self.digest)

    def teardown(self, worker: Any) -> None:
        """Release the folder the modules were written to."""
        if self.folder is not None:
            release(self.folder)
            self.folder = None


class SchedulerModules(SchedulerPlugin):
    """The same for the scheduler, which unpickles the task graph (arguments included).

    Dask does not tell a scheduler plugin it is removed: the folder stays on the
    scheduler's `sys.path` until it exits, behind the newer versions. Registered
    by a name made of its contents, it is installed once however many runs send it.
    """

    idempotent = True

    def __init__(self, modules: list[ModuleSource]) -> None:
        self.modules = modules
        self.digest = _digest(modules)
        self.driver = PROCESS_TOKEN

    async def start(self, scheduler: Any) -> None:
        """Install the modules (not in the driver's own process, a `LocalCluster`'s)."""
        if self.driver != PROCESS_TOKEN:
            install(self.modules, scheduler.local_directory, self.digest)
