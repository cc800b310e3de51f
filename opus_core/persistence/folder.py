"""Where a persistence keeps its files when the user does not say: the project's state folder."""

from __future__ import annotations

import os
from pathlib import Path


def state_folder(project: str | os.PathLike[str] | None = None) -> Path:
    """The project's own state folder, where a persistence puts its files by default.

    It is `<folder name>-<hash>` under `platformdirs.user_state_dir("opus")`
    (`~/.local/state/opus/` on Linux): per project, so two checkouts of one
    project never see each other's state. `sqlite` keeps `state.db` there and
    `file` its JSON files; a third-party persistence should use it too (a file
    or a sub-folder named after the persistence). Nothing is created: make the
    folder (mode 0700) on the first write.

    `project` is the project's `opus.toml` or its folder. Without it, the
    project is the one whose configuration was loaded last in this context
    (`Tasks.from_config`, the `opus` command), else the one `opus.toml` lookup
    finds from the current directory — which is what a persistence wants when
    it is built with its options, so call it in `__init__` (or on first use).
    """
    from opus_core.config import FILENAME, current_state_dir, project_state_dir

    if project is None:
        return current_state_dir()
    path = Path(project)
    if path.is_dir():
        path = path / FILENAME
    return project_state_dir(path)
