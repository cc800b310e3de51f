"""Which of this process's modules are the user's own: what a runner whose work runs on
other machines must send there.

Work travels to another process with pickle, which names a function or a class by its
module: the process must be able to import that module. Installed distributions
(opus-core, the opus plugins, the libraries a project uses) have to be installed where
the work runs; the user's own modules — imported from the project folder (`[opus]
processors`), a script's folder, `$PYTHONPATH` — are the runner's to send. The `dask`
and `ray` plugins do, each in its cluster's way.

`user_top_levels()` gives the candidates: every top-level module in `sys.modules` that
is not `__main__` (its functions travel by value), in the standard library, or provided
by an installed distribution (editable installs included). `source_file(module)` and
`is_library_file(path)` tell which of them were loaded from a `.py` file outside the
interpreter's and `site-packages` folders, the ones worth sending.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from types import ModuleType


@functools.cache
def installed_top_levels() -> frozenset[str]:
    """Top-level names that installed distributions provide (editable installs too)."""
    from importlib.metadata import packages_distributions

    return frozenset(packages_distributions())


@functools.cache
def library_dirs() -> tuple[str, ...]:
    """Folders whose modules are the interpreter's or installed ones: never sent."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d)


def is_library_file(path: str) -> bool:
    """Whether `path` is in one of the `library_dirs()`."""
    return os.path.realpath(path).startswith(library_dirs())


def source_file(module: ModuleType) -> str | None:
    """The `.py` file `module` was loaded from, or None (built in, an extension, zipped,
    frozen, or a namespace package)."""
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py") or not os.path.isfile(path):
        return None
    return path


def user_top_levels() -> Iterator[tuple[str, ModuleType]]:
    """`(name, module)` for each top-level module imported in this process that may be the
    user's own: not `__main__`, the standard library, or an installed distribution's."""
    installed = installed_top_levels()
    seen: set[str] = set()
    for module_name in list(sys.modules):
        top = module_name.partition(".")[0]
        if top in seen:
            continue
        seen.add(top)
        if (
            top in ("__main__", "__mp_main__")
            or top in sys.stdlib_module_names
            or top in sys.builtin_module_names
            or top in installed
            or not top.isidentifier()
        ):
            continue
        module = sys.modules.get(top)
        if module is not None:
            yield top, module
