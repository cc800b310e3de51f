"""The core's own plugins, registered through the same hooks as everyone else's.

This module is the plugin `builtin`: the `sequential` and `process` runners,
the `memory` persistence, the `plain` logger, the `run`, `plugins`, `config`
and `state` commands, and the `.toml`/`.json` task loaders. Three more are
classes, registered per engine or per run: `LogLines` (the engine's log lines),
`Resume` (`--resume`, the core's `opus_task_restore`) and `Selection`
(`opus run NAME ...`, the core's `opus_modify_tasks`). The progress line of
`opus run` on a terminal is a plugin too (`opus_core.cli.progress`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.graph import Plan
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.records import RunRecords
    from opus_core.report import RunReport, TaskResult
    from opus_core.runners.base import Runner


# -- what the core provides ---------------------------------------------------------------


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """`sequential` and `process`."""
    from opus_core.runners import BUILTIN_RUNNERS

    return list(BUILTIN_RUNNERS.values())


@hookimpl
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """`memory`."""
    from opus_core.persistence import StatePersistence

    return [StatePersistence]


@hookimpl
def opus_register_loggers() -> Iterable[type[LoggerWrapper]]:
    """`plain`."""
    from opus_core.logger import LoggerWrapper

    return [LoggerWrapper]


@hookimpl(tryfirst=True)
def opus_register_commands(commands: Commands) -> None:
    """`run`, `plugins`, `config` and `state`: first, so no plugin can take their names."""
    from opus_core.cli.commands import add_core_commands

    add_core_commands(commands)


# -- manifest files ---------------------------------------------------------------------------


@hookimpl(trylast=True)
def opus_load_tasks(path: Path) -> list[Task] | None:
    """`.toml` (a file of `[[tasks]]`) and `.json` (a list of manifests, or one)."""
    import json

    from opus_core.config import read_toml
    from opus_core.errors import ManifestError

    if path.suffix == ".toml":
        data = read_toml(path)
        unknown = sorted(set(data) - {"tasks"})
        if unknown:
            raise ManifestError(f"{path}: unknown section [{unknown[0]}]; expected [[tasks]]")
        entries = data.get("tasks", [])
    elif path.suffix == ".json":
        try:
            entries = json.loads(path.read_bytes(), parse_constant=_no_constant)
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        except ValueError as exc:
            raise ManifestError(f"{path}: {exc}") from None
        if isinstance(entries, Mapping):
            entries = [entries]
    else:
        return None
    return manifests(entries, str(path))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON (or a task record) can hold")


def manifests(entries: object, where: str) -> list[Task]:
    """`Task`s from a list of `{kind, version, metadata, spec}` tables; errors name `where`."""
    from opus_core.errors import ManifestError
    from opus_core.manifest import TASK_KEYS, Task

    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ManifestError(f"{where}: expected a list of task manifests (tables)")
    tasks = []
    for index, entry in enumerate(entries):
        unknown = sorted(set(entry) - set(TASK_KEYS))
        if unknown:
            raise ManifestError(
                f"{where}: tasks[{index}]: unknown key {unknown[0]!r}; "
                f"expected {', '.join(TASK_KEYS)}"
            )
        try:
            tasks.append(
                Task(
                    kind=entry.get("kind"),
                    version=entry.get("version"),
                    spec=entry.get("spec"),
                    metadata=entry.get("metadata"),
                )
            )
        except ManifestError as exc:
            raise ManifestError(f"{where}: tasks[{index}]: {exc}") from None
    return tasks


# -- per engine and per run ---------------------------------------------------------------------


class LogLines:
    """The engine's log lines: each engine registers one, with its logger, as `log`."""

    def __init__(self, logger: LoggerWrapper) -> None:
        from opus_core.manifest import display_name

        self.logger = logger
        self._debug = self._info = True
        self._name = display_name

    @hookimpl
    def opus_run_started(self, plan: Plan) -> None:
        import logging

        enabled = getattr(self.logger, "is_enabled_for", None)  # the level, as of this run
        self._debug = True if enabled is None else bool(enabled(logging.DEBUG))
        self._info = True if enabled is None else bool(enabled(logging.INFO))
        if self._info:
            self.logger.info(
                f"run {plan.command!r} in context {plan.context!r}: {len(plan.tasks)} task(s)"
            )

    @hookimpl
    def opus_task_started(self, task: Task, attempt: int) -> None:
        if self._debug:
            self.logger.debug(f"task {self._name(task)!r} started (attempt {attempt})")

    @hookimpl
    def opus_task_retrying(self, task: Task, attempt: int, error: str, delay: float) -> None:
        self.logger.warning(
            f"task {self._name(task)!r} attempt {attempt} failed: {error}; retrying in {delay:g}s"
        )

    @hookimpl
    def opus_task_finished(self, task: Task, result: TaskResult) -> None:
        name = self._name(task)
        status = result.status
        if status == "succeeded":
            if self._info:
                self.logger.info(f"task {name!r} succeeded in {result.duration:.3f}s")
        elif status == "restored":
            if self._info:
                self.logger.info(f"task {name!r} restored, not run")
        elif status == "skipped":
            self.logger.warning(f"task {name!r} skipped: {result.error}")
        elif status == "cancelled":
            self.logger.warning(f"task {name!r} cancelled")
        else:
            self.logger.error(f"task {name!r} {status}: {result.error}")

    @hookimpl
    def opus_run_finished(self, report: RunReport) -> None:
        line = f"run finished: {report.summary()}"
        if report.ok:
            self.logger.info(line)
        else:
            self.logger.error(line)


class Resume:
    """`--resume`: restore a named task whose last record for the same command and context
    succeeded with the same checksum. The engine registers it, as `resume`, for a run."""

    def __init__(self) -> None:
        self._records: dict[tuple[int, str, str], RunRecords] = {}

    @hookimpl
    def opus_task_restore(
        self, task: Task, command: str, context: str, persistence: StatePersistence
    ) -> dict[str, Any] | None:
        from opus_core.records import RunRecords

        if not task.meta.name:
            return None
        key = (id(persistence), command, context)
        records = self._records.get(key)
        if records is None:
            records = self._records[key] = RunRecords(persistence, command, context)
        record = records.resumable(task)
        return None if record is None else dict(record.published or {})


class Selection:
    """`opus run NAME ...`: keep the named tasks and every task they depend on."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    @hookimpl
    def opus_modify_tasks(self, tasks: list[Task]) -> None:
        from opus_core.errors import DependencyError
        from opus_core.graph import close_over_dependencies

        by_name = {t.meta.name: t for t in tasks if t.meta.name}
        missing = [n for n in self.names if n not in by_name]
        if missing:
            import difflib

            close = difflib.get_close_matches(missing[0], list(by_name), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            names = sorted(by_name)
            known = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if names[10:] else "")
            raise DependencyError(f"no task named {missing[0]!r}{hint} (tasks: {known or 'none'})")
        keep = close_over_dependencies(tasks, [by_name[n] for n in self.names])
        tasks[:] = [t for t in tasks if id(t) in keep]
