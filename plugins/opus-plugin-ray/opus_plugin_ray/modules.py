"""Which of the driver's modules the workers need sent: the user's own.

Work travels to the workers with pickle, which names a function or a class by its
module: a worker must be able to import that module. Installed distributions
(opus-core, the opus plugins, the libraries a project uses) have to be installed on
the workers; the user's own modules — imported from the project folder (`[opus]
processors`), a script's folder, `$PYTHONPATH` — are sent by the runner through the
job's `runtime_env` `py_modules`, which Ray uploads to the cluster and puts on the
workers' `sys.path`.

`user_modules()` finds them (`opus_core.runners.user_modules` says which modules are
the user's): a single-file module goes as its file, a package as its whole folder (so
its submodules and the data files in it go too). Namespace packages (no `__init__.py`)
are not sent.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from opus_core.runners.user_modules import is_library_file, source_file, user_top_levels


def _module_path(name: str, module: ModuleType) -> str | None:
    """The file (a module) or folder (a package) to send for top-level module `name`."""
    path = source_file(module)
    if path is None or is_library_file(path):
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
    """The paths of the user's own top-level modules and packages imported here, sorted."""
    found = {_module_path(name, module) for name, module in user_top_levels()}
    return sorted(path for path in found if path is not None)
