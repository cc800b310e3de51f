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

from opus_core.cli.report import check_writable, write_run_report
from opus_core.cli.signals import env_seconds, exit_leaving_threads, interrupted_status
from opus_core.errors import OpusError
from opus_core.plugin.manager import warn
from opus_core.results import TaskStatus

# The parser of `opus` is built at every start, so this module is imported by `opus --help`
# too: the engine and the rest of what a run needs are imported by the functions that run.
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext
    from opus_core.engine import Tasks
    from opus_core.graph import Plan
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.results import RunReport, TaskResult
    from opus_core.selection import KeywordExpression

NOTHING_IN_SCOPE = 5
"""The exit status of a run with no task in scope (as pytest's "no tests collected")."""

NO_PROJECT = (
    "opus: nothing to run: no opus.toml here or in any parent folder; "
    "`opus config init` writes a starter one (or name one with --config)\n"
)
"""What `opus run`, `opus tasks` and `opus graph` say (exit status 5) outside a project."""

PROGRESS_EVERY_ENV = "OPUS_PROGRESS_EVERY"
PROGRESS_EVERY = 10.0
"""Seconds between two `progress:` log lines of `opus run` where no progress line is drawn
(`$OPUS_PROGRESS_EVERY` changes it; 0 logs one after each task)."""

TB_STYLES = ("short", "long", "line", "no")
SHORT_FRAMES = 5
"""How many of a traceback's last frames `--tb=short` shows."""


RUN_EPILOG = """\
examples:
  opus run                        every task in scope for apply in context default
  opus run deploy --context prod  the task deploy and what it depends on
  opus run --resume               skip what already succeeded with the same manifest
  opus run --dry-run              the plan: order, dependencies, what is left out and why
  opus run -x -j 8 --tb=long      stop at the first failure, 8 workers, whole tracebacks
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
        help="run the tasks of the configuration",
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


def parameter_argument(text: str) -> tuple[str, Any]:
    """`--set KEY=VALUE`: the key, and the value read as a TOML value (`3`, `true`,
    `[1, 2]`, `"text"`), or as the text itself when it is not one."""
    import tomllib

    key, equals, value = text.partition("=")
    if not equals or not key or key != key.strip() or "}" in key:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (a key without spaces or '}}', then '=', then "
            "the value: --set region=eu-west-1)"
        )
    try:
        return key, tomllib.loads(f"value = {value}")["value"]
    except tomllib.TOMLDecodeError:
        return key, value


def selection_arguments(parser: argparse.ArgumentParser, running: bool = False) -> None:
    """`NAME ...`, `-k EXPR`, `--command`, `--context`: the tasks `opus run` runs (`running`),
    or those `opus tasks` lists and `opus graph` draws."""
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"{'run ' if running else ''}only these tasks and what they depend on",
    )
    parser.add_argument(
        "-k",
        dest="keyword",
        metavar="EXPR",
        type=keyword_expression,
        default=None,
        help="run only the tasks EXPR matches and what they depend on: words found in task "
        "names, or key=value for a label, with and, or, not and parentheses "
        "(-k 'tier=data and not cache')"
        if running
        else "only the tasks EXPR matches (as opus run -k) and what they depend on",
    )
    parser.add_argument(
        "--command",
        default="apply",
        help=f"the command{' to run' if running else ''} (default: apply)",
    )
    parser.add_argument("--context", default="default", help="the context (default: default)")


def traceback_argument(parser: argparse.ArgumentParser) -> None:
    """`--tb STYLE`: how `opus run` and `opus runs show` print the tracebacks of failures."""
    parser.add_argument(
        "--tb",
        choices=TB_STYLES,
        default="short",
        help="tracebacks of failed tasks: the last frames (short, the default), all of "
        "them (long), one line per task (line), or none (no)",
    )


def keyword_expression(text: str) -> KeywordExpression:
    """The `-k EXPR` argument: a parsed expression, or a usage error naming it."""
    from opus_core.selection import KeywordExpression

    try:
        return KeywordExpression(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def workers_argument(value: str) -> int:
    """`-j N`: a whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return number


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
        return tasks.process_context(args.command, args.context, resume=args.resume)
    from opus_core.cli.progress import Progress

    progress = Progress(sys.stderr, running=tasks.running)
    manager.register(progress, name="builtin.progress", core=True)
    with progress.attached():
        return tasks.process_context(args.command, args.context, resume=args.resume)


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


# -- what `opus run` prints -------------------------------------------------------------------


def failures_section(report: RunReport, style: str = "short", width: int | None = None) -> str:
    """The tasks that failed or timed out, each with its traceback in `style`, as pytest's
    FAILURES: "short" the last frames and the exception, "long" all of it, "line" one
    line per task, "no" nothing (an empty string)."""
    from opus_core.cli.output import printable, task_label, terminal_width

    failed = [
        r for r in report.unsuccessful() if r.status in (TaskStatus.FAILED, TaskStatus.TIMED_OUT)
    ]
    if not failed or style == "no":
        return ""
    width = min(width or terminal_width() or 80, 120)
    if style == "line":
        return "\n".join(_one_line(r) for r in failed)
    parts = [_rule(" FAILURES ", "=", width)]
    for result in failed:
        tries = f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}"
        name = printable(task_label(result.task_id, result.kind))
        parts.append(_rule(f" {name} ({result.status}, {tries}) ", "_", width))
        if result.traceback:
            text = result.traceback if style == "long" else short_traceback(result.traceback)
        else:
            text = result.error or result.status.value
        parts.append("\n".join(printable(line) for line in text.split("\n")))
    return "\n".join(parts)


def durations_argument(parser: argparse.ArgumentParser) -> None:
    """`--durations N`, as pytest's: the N slowest tasks (0: every task)."""
    parser.add_argument(
        "--durations",
        metavar="N",
        type=count_argument,
        default=None,
        help="the N slowest tasks (0: all), each with how long it waited for its "
        "dependencies and then for a worker",
    )


def count_argument(value: str) -> int:
    """`--durations N`, `--limit N`, `--keep N`: a whole number of at least 0."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {value!r}")
    return number


def durations_section(
    tasks: Sequence[Mapping[str, Any]], count: int, started_at: float | None, width: int = 0
) -> str:
    """pytest's "slowest durations": the `count` slowest of a run's `tasks` (as the run
    history keeps them; every task with 0), slowest first, each with the seconds it
    waited for its dependencies (from `started_at`, the run's start, to when the last one
    ended) and then for a worker (to its first start)."""
    from opus_core.cli.output import duration, printable, table, task_label, terminal_width
    from opus_core.persistence.base import finite_number

    timed = [
        (seconds, task)
        for task in tasks
        if (seconds := finite_number(task.get("duration"))) is not None and task.get("attempts")
    ]
    timed.sort(key=lambda pair: pair[0], reverse=True)
    shown = timed[:count] if count else timed
    if not shown:
        return ""

    def waited(since: float | None, until: object) -> str:
        end = finite_number(until)
        return duration(max(end - since, 0.0)) if since is not None and end is not None else "-"

    rows = [
        (
            duration(seconds),
            printable(task_label(str(task.get("name")), str(task.get("kind")))),
            waited(started_at, task.get("ready_at")),
            waited(finite_number(task.get("ready_at")), task.get("started_at")),
        )
        for seconds, task in shown
    ]
    width = min(width or terminal_width() or 80, 120)
    title = f" slowest {len(shown)} durations " if count else " durations "
    headers = ("DURATION", "TASK", "WAITED FOR DEPENDENCIES", "THEN FOR A WORKER")
    return _rule(title, "=", width) + "\n" + table(headers, rows)


def _rule(title: str, fill: str, width: int) -> str:
    side = max(3, (width - len(title)) // 2)
    return f"{fill * side}{title}{fill * side}"


def _one_line(result: TaskResult) -> str:
    """`name: file:line: Error: message` (where it was raised, when the traceback says)."""
    from opus_core.cli.output import printable, task_label

    where = ""
    for line in reversed((result.traceback or "").splitlines()):
        stripped = line.strip()
        if stripped.startswith('File "') and ", line " in stripped:
            path, _, rest = stripped[len('File "') :].partition('", line ')
            where = f"{path}:{rest.split(',')[0]}: "
            break
    name = task_label(result.task_id, result.kind)
    return printable(f"{name}: {where}{result.error or result.status.value}")


def short_traceback(text: str, frames: int = SHORT_FRAMES) -> str:
    """The last exception of a formatted traceback with its last `frames` frames.

    The frames above the task's own code (the runner and opus calling the
    processor) are left out first; exceptions it was chained from are summed
    up in one line.
    Text that is not a traceback is returned as it is.
    """
    lines = text.splitlines()
    header = "Traceback (most recent call last):"
    starts = [i for i, line in enumerate(lines) if line == header]
    if not starts:
        return text
    start = starts[-1]
    blocks: list[list[str]] = []
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        if lines[end].startswith('  File "') or not blocks:
            blocks.append([lines[end]])
        else:
            blocks[-1].append(lines[end])
        end += 1
    exception = lines[end:]
    own = [any(f'"{d}' in block[0] for d in _opus_dirs()) for block in blocks]
    for i in range(len(blocks) - 1):  # where opus (or a runner around it) calls the task's code
        if own[i] and not own[i + 1]:
            del blocks[: i + 1]
            break
    hidden = len(blocks) - frames
    shown = blocks[-frames:] if hidden > 0 else blocks
    out = []
    if len(starts) > 1:
        chained = len(starts) - 1
        out.append(f"({chained} chained exception(s) before this one; --tb=long shows them)")
    out.append(header)
    if hidden > 0:
        out.append(f"  ... {hidden} frame(s) above (--tb=long shows them)")
    for block in shown:
        out.extend(block)
    out.extend(exception)
    return "\n".join(out)


def _opus_dirs() -> tuple[str, ...]:
    """Where opus's own modules are: their frames say nothing about a task's failure."""
    import os

    import opus_core

    return (os.path.dirname(opus_core.__file__) + os.sep,)


def nothing_in_scope(tasks: Tasks, plan: Plan, args: argparse.Namespace) -> str:
    """Why no task is in scope, and what the tasks do use (stderr of exit status 5)."""
    command, context = args.command, args.context
    config = getattr(tasks, "config", None)
    if not tasks.tasks:
        if config is None or config.project is None:
            return NO_PROJECT
        return (
            f"opus: nothing to run: {config.project} has no tasks "
            "(add [[tasks]], or manifest files in [opus] manifests)\n"
        )
    considered = [task for task, _ in plan.excluded]
    if not considered:
        return f"opus: nothing to run: {_selection(args) or 'the selection'} selects no task\n"
    commands, contexts, anywhere = _scopes(tasks, considered)
    selected = " selected" if args.names or getattr(args, "keyword", None) else ""
    lines = [
        f"opus: nothing to run: none of the {len(considered)}{selected} task(s) is in scope "
        f"for command {command!r} in context {context!r}"
    ]
    lines.append(f"  commands the tasks use: {_listing(commands)}{_close(command, commands)}")
    where = _listing(contexts) if contexts else ""
    if anywhere:
        where += ("; " if where else "") + f"{anywhere} task(s) run in any context"
    lines.append(f"  contexts the tasks use: {where or 'none'}{_close(context, contexts)}")
    lines.append("  (`opus run --dry-run` shows why each task is left out)")
    return "\n".join(lines) + "\n"


def _selection(args: argparse.Namespace) -> str:
    """`NAME a b and -k 'expr'`, as the command line chose (empty when it chose nothing)."""
    chosen = " ".join(args.names) if args.names else ""
    keyword = getattr(args, "keyword", None)
    parts = (
        chosen and f"NAME {chosen}",
        keyword is not None and f"-k {getattr(keyword, 'text', keyword)!r}",
    )
    return " and ".join(part for part in parts if part)


def _scopes(tasks: Tasks, considered: list[Task]) -> tuple[set[str], set[str], int]:
    """The commands and the contexts `considered` run in, and how many run in any context."""
    commands: set[str] = set()
    contexts: set[str] = set()
    anywhere = 0
    for task in considered:
        meta = task.meta
        processor = tasks.processors.get((task.kind, task.version))
        supported = set(getattr(processor, "commands", ()) or ())
        usable = supported if meta.commands is None else supported & set(meta.commands)
        commands |= usable - set(meta.exclude_commands)
        if meta.contexts is None:
            anywhere += 1
        else:
            contexts |= set(meta.contexts) - set(meta.exclude_contexts)
    return commands, contexts, anywhere


def _listing(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _close(name: str, names: set[str]) -> str:
    from opus_core.errors import did_you_mean

    return "" if name in names else did_you_mean(name, sorted(names))


def dry_run(
    tasks: Tasks,
    command: str,
    context: str,
    as_json: bool = False,
    args: argparse.Namespace | None = None,
) -> int:
    """Print what would run, in order, with dependencies, and what is left out and why.

    Exit status 5 (with the reason on stderr) when nothing is in scope.
    """
    from opus_core.cli.output import table, to_json
    from opus_core.manifest import display_name

    plan = tasks.plan(command, context)
    for warning in plan.warnings:
        warn(warning)
    resume = bool(getattr(args, "resume", False))
    restored = tasks.restored(plan, resume) or [None] * len(plan.tasks)
    if as_json:
        print(to_json(plan_records(plan, restored)))
    else:
        rows = []
        for position, task in enumerate(plan.tasks, start=1):
            deps = ", ".join(display_name(plan.tasks[d]) for d in plan.deps[position - 1])
            then = "restore" if restored[position - 1] is not None else "run"
            rows.append((position, display_name(task), task.kind, deps or "-", then))
        print(f"plan for command {command!r} in context {context!r}: {len(plan.tasks)} task(s)")
        if rows:
            print(table(("#", "TASK", "KIND", "AFTER", "WOULD"), rows))
        would = sum(1 for values in restored if values is not None)
        if would:
            print(f"{would} task(s) would be restored, not run")
        if plan.excluded:
            print(f"left out: {len(plan.excluded)} task(s)")
            print(table(("TASK", "WHY"), [(display_name(t), why) for t, why in plan.excluded]))
    if not plan.tasks:
        if args is None:
            args = argparse.Namespace(command=command, context=context, names=[], keyword=None)
        sys.stderr.write(nothing_in_scope(tasks, plan, args))
        return NOTHING_IN_SCOPE
    return 0


def plan_records(plan: Plan, restored: list[dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """The plan as JSON data: the tasks in order with what each runs after and whether it
    would be restored rather than run, and those left out."""
    from opus_core.manifest import display_name

    restored = restored or [None] * len(plan.tasks)
    return {
        "command": plan.command,
        "context": plan.context,
        "tasks": [
            {
                "position": position,
                "task": display_name(task),
                "kind": task.kind,
                "version": task.version,
                "after": [display_name(plan.tasks[d]) for d in plan.deps[position - 1]],
                "restored": restored[position - 1] is not None,
            }
            for position, task in enumerate(plan.tasks, start=1)
        ],
        "excluded": [{"task": display_name(t), "why": why} for t, why in plan.excluded],
    }
