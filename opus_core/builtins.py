"""The core's own runners, persistence and logger, registered as a plugin like any other."""

from __future__ import annotations

from collections.abc import Iterable

from opus_core.hookspecs import hookimpl
from opus_core.logger import LoggerWrapper
from opus_core.persistence import StatePersistence
from opus_core.runners.base import Runner
from opus_core.runners.process import ProcessRunner
from opus_core.runners.sequential import SequentialRunner


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """`sequential` and `process`."""
    return [SequentialRunner, ProcessRunner]


@hookimpl
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """`memory`."""
    return [StatePersistence]


@hookimpl
def opus_register_loggers() -> Iterable[type[LoggerWrapper]]:
    """`plain`."""
    return [LoggerWrapper]
