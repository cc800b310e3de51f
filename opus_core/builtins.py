"""The core's own runners, persistence and logger, registered as a plugin like any other."""

from __future__ import annotations

from collections.abc import Iterable

from opus_core.hookspecs import hookimpl
from opus_core.logger import LoggerWrapper
from opus_core.persistence import StatePersistence
from opus_core.runners import BUILTIN_RUNNERS
from opus_core.runners.base import Runner


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """`sequential` and `process`."""
    return list(BUILTIN_RUNNERS.values())


@hookimpl
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """`memory`."""
    return [StatePersistence]


@hookimpl
def opus_register_loggers() -> Iterable[type[LoggerWrapper]]:
    """`plain`."""
    return [LoggerWrapper]
