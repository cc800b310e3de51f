"""`opus run`: run the configuration's tasks, with progress and a summary.

Logs, warnings and errors go to standard error; results — the summary table,
the failures with their tracebacks, the plan of `--dry-run`, and the JSON of
`--json` — to standard output.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

from opus_core.cli.arguments import (
    durations_argument,
    parameter_argument,
    selection_arguments,
    traceback_argument,
    workers_argument,
)
from opus_core.cli.commands import COMMAND_HELP
from opus_core.cli.report import check_writable, write_run_report
from opus_core.cli.scope import NO_PROJECT, NOTHING_IN_SCOPE, nothing_in_scope
from opus_core.cli.sections import durations_section, failures_section
from opus_core.cli.signals import env_seconds, exit_leaving_threads, interrupted_status
from opus_core.errors import OpusError
from opus_core.plugin.manager import warn

# The engine and the rest of what a run needs are imported by the functions that run: this
# module is imported to parse `opus run`'s arguments, before the configuration is read.
if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext
    from opus_core.engine import Tasks
    from opus_core.persistence import StatePersistence
    from opus_core.results import RunReport

PROGRESS_EVERY_ENV = "OPUS_PROGRESS_EVERY"
PROGRESS_EVERY = 10.0
"""Seconds between two `progress:` log lines of `opus run` where no progress line is drawn
(`$OPUS_PROGRESS_EVERY` changes it; 0 logs one after each task)."""


RUN_EPILOG = """\
examples:
  opus run                        every task in scope for apply in context default
  opus run deploy --context prod  the task deploy and what it depends on
  opus run --resume               skip what already succeeded with the same manifest
  opus run --explain              say why each task with outputs ran or was restored
  opus run --force                run tasks with outputs even when they are up to date
  opus run --dry-run              the plan: order, dependencies, what is left out and why
  opus run -x -j 8 --runner process --tb=long
                                  stop at the first failure, 8 processes, whole tracebacks
  opus run --json > report.json   the report as JSON (logs stay on stderr)

Logs and errors go to stderr; the table of the tasks that did not succeed (-v:
every task), the failures with their tracebacks, the counts, and JSON go to stdout.
Successes are counted, not logged one by one (-v logs them); off a terminal a
`progress:` line comes every 10 seconds ($OPUS_PROGRESS_EVERY changes it).

exit status: 0 all well, 1 a task did not succeed, 2 a usage, configuration or
plugin error, 5 nothing in scope to run, 130 interrupted (Ctrl-C), 143
terminated (SIGTERM)."""


def add_command(commands: Commands) -> None:
    """`opus run`: its arguments, and `run` to handle it."""
    parser = commands.add(
        "run",
        run,
        help=COMMAND_HELP["run"],
        description="Run the tasks in scope for a command and context, in dependency order.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    selection_arguments(parser, running=True)
    parser.add_argument("--runner", default=None, help="a runner name, overriding [opus] runner")
    parser.add_argument(
        "--set",
        dest="parameters",
        metavar="KEY=VALUE",
        action="append",
        type=parameter_argument,
        default=[],
        help="give ${KEY} in specs the value VALUE (a TOML value: 3, true, [1, 2], "
        '"text"; anything else is text); repeatable',
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip tasks that already succeeded with the same manifest",
    )
    parser.add_argument(
        "-f",
        "--force",
        nargs="*",
        metavar="NAME",
        default=None,
        help="run tasks that are up to date too: every one, or only the NAMEs given (put "
        "the tasks to run before --force)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="log why each cached task (one with outputs) ran or was restored (opus why NAME "
        "tells later)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (order, and what is left out and why); run nothing",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report (or with --dry-run the plan) as JSON instead of tables",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        default=None,
        help="write the run's HTML report to FILE at the end (also when tasks failed)",
    )
    traceback_argument(parser)
    durations_argument(parser)
    parser.add_argument(
        "-x",
        "--fail-fast",
        action="store_true",
        help="start no new task after the first failure (overrides [opus] fail_fast)",
    )
    parser.add_argument(
        "-j",
        "--workers",
        metavar="N",
        type=workers_argument,
        default=None,
        help="run at most N tasks at once (overrides the runner's max_workers)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no live progress line, even on a terminal",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="log warnings and errors only; no results table (failures and the counts stay)",
    )
    loudness.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log everything (DEBUG), tracebacks too; a results row for every task",
    )
    loudness.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        default=None,
        help="the log level (overrides [opus] log_level)",
    )


def run(context: CommandContext) -> int:
    """Run the tasks; 0 when all succeeded, 1 when any did not, 5 when none was in scope,
    130/143 when stopped."""
    from opus_core.logger import LoggerWrapper

    previous = LoggerWrapper.stream
    LoggerWrapper.stream = "stderr"  # stdout carries the results only
    saved = sys.stdout, sys.stderr
    # `opus run | head -1`: a task printing after the reader went away goes on (into nothing).
    sys.stdout, sys.stderr = (
        stream if stream is None else QuietWhenClosed(stream) for stream in saved
    )
    try:
        return _run(context)
    finally:
        sys.stdout, sys.stderr = saved
        LoggerWrapper.stream = previous


class QuietWhenClosed(io.TextIOBase):
    """A standard stream that goes quiet when its reader goes away (`opus run | head -1`).

    Python's advice for a closed pipe (the SIGPIPE section of the `signal` docs): point
    the file descriptor at `os.devnull` and go on. What a task prints after that is
    dropped, the task is not failed by a `BrokenPipeError`, and nothing is left to print
    a traceback at exit; the run ends with its own exit status.
    """

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target
        self.closed_by_reader = False
        """True once the reader went away."""

    def write(self, text: str) -> int:
        try:
            self.target.write(text)
        except BrokenPipeError:
            self.reader_gone()
        return len(text)

    def flush(self) -> None:
        try:
            self.target.flush()
        except BrokenPipeError:
            self.reader_gone()

    def reader_gone(self) -> None:
        """Point the stream at `os.devnull`: the reader went away."""
        self.closed_by_reader = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.target.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        finally:
            os.close(devnull)
        try:
            self.target.flush()  # what its buffer held goes into nothing, not into an error
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return self.target.isatty()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.target.fileno()

    def __getattr__(self, name: str) -> object:
        return getattr(self.target, name)  # buffer, errors, ...: the stream's own

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


def _run(context: CommandContext) -> int:
    from opus_core.selection import KeywordSelection, Selection

    args = context.args
    project = context.config.project
    if project is None:
        # Nothing to run, so no engine and no persistence: no state folder appears.
        sys.stderr.write(NO_PROJECT)
        return NOTHING_IN_SCOPE
    # The project folder is every task's working directory, on every runner: changed once
    # here, before any runner, thread or task starts (docs/project-folder.md).
    os.chdir(project.parent)
    tasks = context.tasks(runner=args.runner)
    _override(tasks, args)
    for key, value in args.parameters:  # --set: what ${KEY} stands for, unless a task publishes it
        tasks.key_value_store.save(key, value)
    manager = tasks.manager()
    if args.names:
        manager.register(Selection(args.names), name="builtin.selection", core=True)
    if getattr(args, "keyword", None) is not None:
        manager.register(KeywordSelection(args.keyword), name="builtin.keywords", core=True)
    _check_options(tasks, args)
    if args.dry_run:
        from opus_core.cli.dry_run import dry_run

        return dry_run(tasks, args.command, args.context, as_json=args.json, args=args)
    if args.report is not None:
        check_writable(args.report)  # before anything runs, not after
    report = _run_with_progress(tasks, args)
    if report.interrupted:
        status = interrupted_status()
    elif not len(report):
        status = NOTHING_IN_SCOPE
    else:
        status = 0 if report.ok else 1
    args.exit_status = status  # what `opus run | head` exits with, if the reader goes away
    _print_results(report, args, tasks.state_persistence)
    if status == NOTHING_IN_SCOPE:
        sys.stderr.write(nothing_in_scope(tasks, tasks.plan(args.command, args.context), args))
    if args.report is not None and status != NOTHING_IN_SCOPE:
        write_run_report(tasks.state_persistence, report.run_id, args.report)
    exit_leaving_threads(status)
    return status


def _check_options(tasks: Tasks, args: argparse.Namespace) -> None:
    """Options that contradict each other, or the configuration: an error, or a warning."""
    if args.resume and type(tasks.state_persistence).name == "memory":
        warn(
            "--resume with the memory persistence restores nothing: it keeps no state "
            'between runs; set [opus] persistence = "sqlite" (the default when unset) or '
            '"file" in opus.toml'
        )
    if args.force:
        from opus_core.errors import did_you_mean

        names = {task.task_id for task in tasks.tasks}
        for name in args.force:
            if name not in names:
                raise OpusError(
                    f"--force {name}: no task is named {name!r}{did_you_mean(name, names)}"
                )
    if args.dry_run and args.report is not None:
        raise OpusError(
            "--report writes the report of a run, and --dry-run runs nothing: leave one out"
        )


def _run_with_progress(tasks: Tasks, args: argparse.Namespace) -> RunReport:
    """The run, with the progress line on a terminal (else a `progress:` line now and then).

    As pytest, successes are counted, not listed (`-v` lists them); what went wrong is
    always logged.
    """
    from opus_core.loglines import log_lines

    manager = tasks.manager()
    lines = log_lines(manager)
    if not args.verbose:
        lines.success_level = "debug"
    if not sys.stderr.isatty() or args.no_progress:
        lines.progress_every = env_seconds(PROGRESS_EVERY_ENV, PROGRESS_EVERY)
        return _process(tasks, args)
    from opus_core.cli.progress import Progress

    progress = Progress(
        sys.stderr, running=tasks.running, waiting=tasks.waiting, finished=tasks.finished
    )
    manager.register(progress, name="builtin.progress", core=True)
    with progress.attached():
        return _process(tasks, args)


def _process(tasks: Tasks, args: argparse.Namespace) -> RunReport:
    force: bool | list[str] = False if args.force is None else (args.force or True)
    return tasks.process_context(
        args.command, args.context, resume=args.resume, force=force, explain=args.explain
    )


def _print_results(
    report: RunReport, args: argparse.Namespace, persistence: StatePersistence
) -> None:
    """On stdout, as pytest: the tasks that did not succeed (`-v` every task, `-q` none),
    their tracebacks, then the counts; or the report as JSON (`--json`)."""
    from opus_core.cli.output import report_records, report_table, to_json

    if args.json:
        print(to_json(report_records(report)))
        return
    if not len(report):
        return
    table = "" if args.quiet else report_table(report, every_task=args.verbose)
    if table:
        print(table)
    failures = failures_section(report, args.tb)
    if failures:
        print(failures)
    if args.durations is not None and report.run_id is not None:
        _print_durations(persistence, report.run_id, args.durations)
    print(report.summary() + (" (interrupted)" if report.interrupted else ""))


def _print_durations(persistence: StatePersistence, run_id: str, count: int) -> None:
    """`--durations N` after a run: from the run as its history saved it."""
    from opus_core.history import find_run
    from opus_core.persistence.base import finite_number

    run = find_run(persistence, run_id)
    section = durations_section(run.get("tasks") or [], count, finite_number(run.get("started_at")))
    if section:
        print(section)


def _override(tasks: Tasks, args: argparse.Namespace) -> None:
    """`-x/--fail-fast` over `[opus] fail_fast`; `-j/--workers N` over `max_workers`;
    `-q`/`-v`/`--log-level` over `[opus] log_level`."""
    if args.fail_fast:
        tasks.fail_fast = True
    level = "WARNING" if args.quiet else "DEBUG" if args.verbose else args.log_level
    if level is not None:
        from opus_core.logger import parse_level

        tasks.logger.level = parse_level(level)
    workers = getattr(args, "workers", None)
    if workers is None:
        return
    from opus_core.options import accepted_options

    runner = tasks.runner
    name = getattr(runner, "name", str(runner))
    accepted: dict[str, Any] = {}
    open_ended = False
    if isinstance(runner, type) and runner.__init__ is not object.__init__:
        accepted, open_ended = accepted_options(runner)
    if "max_workers" not in accepted and not open_ended:
        raise OpusError(
            f"-j/--workers: runner {name!r} takes no max_workers option "
            "(threadpool and process do; choose one with --runner or [opus] runner)"
        )
    tasks.runner_options["max_workers"] = workers
