"""Which of the driver's modules the workers need sent: the user's own.

Work travels to the workers with pickle, which names a function or a class by its
module: a worker must be able to import that module. Installed distributions
(opus-core, the opus plugins, the libraries a project uses) have to be installed on
the workers; the user's own modules — imported from the project folder (`[opus]
processors`), a script's folder, `$PYTHONPATH` — are sent by the runner through the
job's `runtime_env` `py_modules`, which Ray uploads to the cluster and puts on the
workers' `sys.path`.

`user_modules()` finds them: every top-level module in `sys.modules` loaded from a `.py`
file that no installed distribution provides and that is not in the standard library or
a `site-packages` folder. A single-file module goes as its file, a package as its whole
folder (so its submodules and the data files in it go too). Namespace packages (no
`__init__.py`) are not sent.
"""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
from pathlib import Path


@functools.cache
def _installed_top_levels() -> frozenset[str]:
    """Top-level names that installed distributions provide (editable installs too)."""
    from importlib.metadata import packages_distributions

    return frozenset(packages_distributions())


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    """Folders whose modules are the interpreter's or installed: never sent."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d)


def _module_path(name: str) -> str | None:
    """The file (a module) or folder (a package) to send for top-level module `name`."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py") or not os.path.isfile(path):
        return None  # built in, an extension, zipped, frozen, or a namespace package
    if os.path.realpath(path).startswith(_library_dirs()):
        return None
    source = Path(path)
    if hasattr(module, "__path__"):  # a regular package: its __init__.py names its folder
        if source.name != "__init__.py" or source.parent.name != name:
            return None
        return str(source.parent)
    if source.stem != name:  # imported under a name its file does not give it
        return None
    return str(source)


def user_modules() -> list[str]:
    """The paths of the user's own top-level modules and packages imported here, sorted.

    Left out: `__main__` (its functions travel by value), the standard library,
    anything an installed distribution provides (opus-core and the plugins included,
    even installed in editable mode) and anything under a `site-packages` folder.
    """
    installed = _installed_top_levels()
    found: set[str] = set()
    for top in {name.partition(".")[0] for name in list(sys.modules)}:
        if (
            top in ("__main__", "__mp_main__")
            or top in sys.stdlib_module_names
            or top in sys.builtin_module_names
            or top in installed
            or not top.isidentifier()
        ):
            continue
        path = _module_path(top)
        if path is not None:
            found.add(path)
    return sorted(found)
