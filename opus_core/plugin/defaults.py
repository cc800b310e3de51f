"""The core's own plugins, registered through the same hooks as everyone else's.

This module is the plugin `builtin`: the `sequential`, `process` and `processpool` runners,
the `memory` and `sqlite` persistence, the `plain` logger, the `Command` processor and the
`.toml`/`.json` task loaders. The core's commands (`run`, `tasks`, `graph`, ...) are the
command line's own plugin, `builtin.commands` (`opus_core.cli.commands`), which the command
line registers: the engine never imports the command line. This module holds registrations
only; the plugins registered per engine or per run under `builtin.*` names live with what
they do:
`LogLines` and `StartLines` (`opus_core.loglines`, `builtin.log`), `Resume`
(`opus_core.resume`, `builtin.resume`), `Selection` and `KeywordSelection`
(`opus_core.selection`, `opus run NAME ...` and `-k EXPR`), and the progress line of
`opus run` on a terminal (`opus_core.cli.progress`). The manifest files are read by
`opus_core.manifest_files`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.processor import TaskProcessor
    from opus_core.runners.base import Runner


# -- what the core provides ---------------------------------------------------------------


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """`sequential`, `process` and `processpool`."""
    from opus_core.runners import BUILTIN_RUNNERS

    return list(BUILTIN_RUNNERS.values())


@hookimpl
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """`memory` and `sqlite`."""
    from opus_core.persistence import MemoryPersistence
    from opus_core.persistence.sqlite import SqlitePersistence

    return [MemoryPersistence, SqlitePersistence]


@hookimpl
def opus_register_loggers() -> Iterable[type[LoggerWrapper]]:
    """`plain`."""
    from opus_core.logger import LoggerWrapper

    return [LoggerWrapper]


@hookimpl
def opus_register_processors() -> Iterable[type[TaskProcessor]]:
    """`Command`: shell steps as tasks (`opus_core.command_tasks`)."""
    from opus_core.command_tasks import CommandProcessor

    return [CommandProcessor]


# -- manifest files ---------------------------------------------------------------------------

OPUS_MANIFEST_SUFFIXES = (".toml", ".json")
"""The manifest files the core reads (`opus_load_tasks`), as `opus plugins list` shows them."""


@hookimpl(trylast=True)
def opus_load_tasks(path: Path) -> list[Task] | None:
    """`.toml` (a file of `[[tasks]]`) and `.json` (a list of manifests, or one)."""
    from opus_core.manifest_files import load_manifest_file

    return load_manifest_file(path)
