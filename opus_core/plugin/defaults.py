"""The core's own plugins, registered through the same hooks as everyone else's.

This module is the plugin `builtin`: the `sequential`, `process` and `processpool` runners,
the `memory` and `sqlite` persistence, the `plain` logger and the `.toml`/`.json` task
loaders. The core's commands (`run`, `tasks`, `graph`, ...) are the command line's own
plugin, `builtin.commands` (`opus_core.cli.commands`), which the command line registers:
the engine never imports the command line. More are classes, registered per engine or per
run under `builtin.*` names: `LogLines` (the engine's log lines, `builtin.log`),
`Resume` (`--resume`, the core's `opus_task_restore`, `builtin.resume`), and
`Selection` (`opus run NAME ...`) and `KeywordSelection` (`-k EXPR`), the
core's `opus_modify_tasks`. The progress line of `opus run` on a terminal is
a plugin too (`opus_core.cli.progress`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opus_core.plugin import hookimpl

if TYPE_CHECKING:
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


# -- manifest files ---------------------------------------------------------------------------


OPUS_MANIFEST_SUFFIXES = (".toml", ".json")
"""The manifest files the core reads (`opus_load_tasks`), as `opus plugins list` shows them."""


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

    if not isinstance(entries, list) or not all(
        type(e) is dict or isinstance(e, Mapping) for e in entries
    ):
        raise ManifestError(f"{where}: expected a list of task manifests (tables)")
    tasks = []
    known = frozenset(TASK_KEYS)
    for index, entry in enumerate(entries):
        if not entry.keys() <= known:
            unknown = sorted(set(entry) - known)
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
    """The engine's log lines: each engine registers one, with its logger, as `log`.

    `success_level` is the level of the per-task lines of tasks that succeeded or were
    restored: "info" for the Python API; `opus run` makes it "debug" (pytest's way: the
    successes are counted, what went wrong is shown), and then, where no progress line is
    drawn, `progress_every` seconds apart at most, one INFO line says how far the run is.
    """

    def __init__(self, logger: LoggerWrapper) -> None:
        from opus_core.manifest import display_name

        self.logger = logger
        self._debug = self._info = self._successes = True
        self.success_level = "info"
        """"debug" to log each success at DEBUG (`opus run`), else "info"."""
        self.progress_every: float | None = None
        """Seconds between two `progress:` lines while successes are not logged one by one;
        None for no such line (the Python API, and `opus run` on a terminal)."""
        self.cancelled = 0
        """How many tasks of the run were cancelled so far: one line says so at its end."""
        self.total = self.done = self.failed = 0
        self._progress_at = 0.0
        self._name = display_name

    @hookimpl
    def opus_run_started(self, plan: Plan) -> None:
        import logging

        enabled = getattr(self.logger, "is_enabled_for", None)  # the level, as of this run
        self._debug = True if enabled is None else bool(enabled(logging.DEBUG))
        self._info = True if enabled is None else bool(enabled(logging.INFO))
        self._successes = self._info if self.success_level == "info" else self._debug
        self.cancelled = self.done = self.failed = 0
        self.total = len(plan.tasks)
        self._progress_at = time.monotonic()
        if self._info:
            self.logger.info(
                f"run {plan.command!r} in context {plan.context!r}: {len(plan.tasks)} task(s)"
            )

    @hookimpl
    def opus_task_retrying(self, task: Task, attempt: int, error: str, delay: float) -> None:
        self.logger.warning(
            f"task {self._name(task)!r} attempt {attempt} failed: {_printable(error)}; "
            f"retrying in {delay:g}s"
        )

    @hookimpl
    def opus_task_finished(self, task: Task, result: TaskResult) -> None:
        # Called for every task: nothing is formatted that the logger's level would drop.
        self.done += 1
        status = result.status
        if status == "succeeded" or status == "restored":
            if self._successes:
                done = "succeeded in" if status == "succeeded" else "restored, not run"
                line = f"task {self._name(task)!r} {done}"
                if status == "succeeded":
                    line = f"{line} {result.duration:.3f}s"
                if self.success_level == "info":
                    self.logger.info(line)
                else:
                    self.logger.debug(line)
            elif self.progress_every is not None and self._info:
                self._progress()
            return
        name = self._name(task)
        if status == "skipped":
            self.logger.warning(f"task {name!r} skipped: {_printable(result.error)}")
        elif status == "cancelled":
            # One line for them all at the end (Ctrl-C cancels every task not done; on a
            # big graph that is thousands); the report names them.
            self.cancelled += 1
            if self._debug:
                self.logger.debug(f"task {name!r} cancelled")
        else:
            self.failed += 1
            self.logger.error(f"task {name!r} {status}: {_printable(result.error)}")
            if self._debug and result.traceback:
                self.logger.debug(f"task {name!r} traceback:\n{_printable(result.traceback)}")

    def _progress(self) -> None:
        """The `progress:` line, if `progress_every` seconds passed since the last one."""
        now = time.monotonic()
        if self.progress_every is not None and now - self._progress_at >= self.progress_every:
            self._progress_at = now
            self.logger.info(f"progress: {self.done}/{self.total} done, {self.failed} failed")

    @hookimpl
    def opus_run_finished(self, report: RunReport) -> None:
        if self.cancelled:
            self.logger.warning(f"{self.cancelled} task(s) cancelled")
        line = f"run finished: {report.summary()}"
        if report.ok:
            self.logger.info(line)
        else:
            self.logger.error(line)


class StartLines:
    """`task '…' started (attempt N)` at DEBUG: registered beside `LogLines`, as
    `builtin.log.started`, only while the engine's logger is at DEBUG, so that a run at
    another level has no `opus_task_started` to call for each task."""

    def __init__(self, logger: LoggerWrapper) -> None:
        from opus_core.manifest import display_name

        self.logger = logger
        self._name = display_name

    @hookimpl
    def opus_task_started(self, task: Task, attempt: int) -> None:
        self.logger.debug(f"task {self._name(task)!r} started (attempt {attempt})")


def log_lines(manager: Any) -> LogLines:
    """The `LogLines` an engine's plugin manager (`Tasks.manager()`) holds as `builtin.log`."""
    plugin = manager.infos["builtin.log"].plugin
    assert isinstance(plugin, LogLines), plugin
    return plugin


def _printable(text: str | None) -> str:
    """`text` with control characters shown as escapes, line by line: a task's error
    cannot move the cursor or clear the terminal its log lines go to."""
    from opus_core.printable import printable

    return "\n".join(printable(line) for line in str(text).split("\n"))


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


class KeywordSelection:
    """`-k EXPR`: keep the tasks `EXPR` matches and every task they depend on.

    It runs after the other `opus_modify_tasks` implementations (`trylast`), so
    `opus run NAME -k EXPR` narrows the named tasks and their dependencies.
    Selecting nothing leaves nothing: the command says so.
    """

    def __init__(self, expression: KeywordExpression | str) -> None:
        if isinstance(expression, str):
            expression = KeywordExpression(expression)
        self.expression = expression

    @hookimpl(trylast=True)
    def opus_modify_tasks(self, tasks: list[Task]) -> None:
        from opus_core.graph import close_over_dependencies

        keep = close_over_dependencies(tasks, [t for t in tasks if self.expression.matches(t)])
        tasks[:] = [t for t in tasks if id(t) in keep]


class KeywordExpression:
    """A `-k` expression, as pytest's: words joined by `and`, `or`, `not` and parentheses.

    A word matches a task whose name contains it, ignoring case (`-k data`
    matches `database`); `key=value` matches a task whose label `key` is exactly
    `value`. Words and values may be quoted ('...' or "...") to hold spaces,
    parentheses, `=` or the words `and`/`or`/`not`. An empty expression matches
    every task. A malformed one raises `ValueError` saying where it goes wrong.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._tokens = _keyword_tokens(text)
        self._at = 0
        if not self._tokens:
            self._match: _Matcher = lambda name, labels: True
            return
        self._match = self._or()
        if self._at < len(self._tokens):
            kind, value, column = self._tokens[self._at]
            hint = "; join words with 'and' or 'or'" if kind == "word" else ""
            raise self._error(f"unexpected {value!r} at column {column}{hint}")

    def matches(self, task: Task) -> bool:
        """Whether the expression selects `task`."""
        return self._match((task.meta.name or "").lower(), task.meta.labels)

    def __repr__(self) -> str:
        return f"KeywordExpression({self.text!r})"

    # A recursive-descent parser over the tokens: or_expr := and_expr ('or' and_expr)*,
    # and_expr := not_expr ('and' not_expr)*, not_expr := 'not' not_expr | '(' or_expr ')'
    # | word ['=' word].

    def _or(self) -> _Matcher:
        parts = [self._and()]
        while self._accept("or"):
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        return lambda name, labels: any(part(name, labels) for part in parts)

    def _and(self) -> _Matcher:
        parts = [self._not()]
        while self._accept("and"):
            parts.append(self._not())
        if len(parts) == 1:
            return parts[0]
        return lambda name, labels: all(part(name, labels) for part in parts)

    def _not(self) -> _Matcher:
        if self._accept("not"):
            inner = self._not()
            return lambda name, labels: not inner(name, labels)
        kind, value, column = self._next("a task name, key=value, 'not' or '('")
        if kind == "(":
            inner = self._or()
            if not self._accept(")"):
                raise self._error(f"the '(' at column {column} is never closed")
            return inner
        if kind != "word":
            raise self._error(
                f"expected a task name, key=value, 'not' or '(' at column {column}, found {value!r}"
            )
        if not self._accept("="):
            word = value.lower()
            return lambda name, labels: word in name
        kind, label_value, at = self._next(f"a value after {value}=")
        if kind != "word":
            raise self._error(f"expected a value after {value}= at column {at}")
        return lambda name, labels: labels.get(value) == label_value

    def _accept(self, kind: str) -> bool:
        if self._at < len(self._tokens) and self._tokens[self._at][0] == kind:
            self._at += 1
            return True
        return False

    def _next(self, expected: str) -> tuple[str, str, int]:
        if self._at == len(self._tokens):
            raise self._error(f"expected {expected} at column {len(self.text) + 1}, found the end")
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _error(self, message: str) -> ValueError:
        return ValueError(f"cannot read the expression {self.text!r}: {message}")


_Matcher = Callable[[str, Mapping[str, str]], bool]
"""A compiled `-k` expression: (the task's name in lower case, its labels) -> selected."""


def _keyword_tokens(text: str) -> list[tuple[str, str, int]]:
    """`(kind, value, column)` for each token of a `-k` expression; kind is the operator,
    a parenthesis, `=` or `word` (quoted words keep their text, without the quotes)."""
    import re

    tokens = []
    for match in re.finditer(r"""\s*(?:([()=])|"([^"]*)"|'([^']*)'|([^\s()="']+)|(\S))""", text):
        column = match.start() + len(match.group()) - len(match.group().lstrip()) + 1
        symbol, double, single, bare, stray = match.groups()
        if stray is not None:
            raise ValueError(
                f"cannot read the expression {text!r}: unclosed quote at column {column}"
            )
        if symbol is not None:
            tokens.append((symbol, symbol, column))
        elif bare in ("and", "or", "not"):
            tokens.append((bare, bare, column))
        else:
            value = bare if bare is not None else double if double is not None else single
            tokens.append(("word", value, column))
    return tokens
