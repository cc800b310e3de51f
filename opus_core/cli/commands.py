"""The core's own commands: the plugin `builtin.commands`, which adds them through
`opus_register_commands` like any plugin's.

The command line registers it (`opus_core.cli.context.command_line_plugins`), so the
engine and the core's other plugin, `builtin`, never import the command line.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from opus_core.cli.report import add_report_command
from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.selection import KeywordExpression

PLUGIN_NAME = "builtin.commands"
"""The name `opus plugins list` shows this plugin under."""


@hookimpl(tryfirst=True)
def opus_register_commands(commands: Commands) -> None:
    """The core's commands: first, so no plugin can take their names."""
    add_core_commands(commands)


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


def add_core_commands(commands: Commands) -> None:
    """`run`, `tasks`, `graph`, `runs`, `plugins`, `config`, `state` and `completion`."""
    run = commands.add(
        "run",
        "opus_core.cli.run:run",
        help="run the tasks of the configuration",
        description="Run the tasks in scope for a command and context, in dependency order.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    selection_arguments(run, running=True)
    run.add_argument("--runner", default=None, help="a runner name, overriding [opus] runner")
    run.add_argument(
        "--resume",
        action="store_true",
        help="skip tasks that already succeeded with the same manifest",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (order, and what is left out and why); run nothing",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print the report (or with --dry-run the plan) as JSON instead of tables",
    )
    run.add_argument(
        "--report",
        metavar="FILE",
        default=None,
        help="write the run's HTML report to FILE at the end (also when tasks failed)",
    )
    run.add_argument(
        "--tb",
        choices=("short", "long", "line", "no"),
        default="short",
        help="tracebacks of failed tasks: the last frames (short, the default), all of "
        "them (long), one line per task (line), or none (no)",
    )
    run.add_argument(
        "-x",
        "--fail-fast",
        action="store_true",
        help="start no new task after the first failure (overrides [opus] fail_fast)",
    )
    run.add_argument(
        "-j",
        "--workers",
        metavar="N",
        type=_workers,
        default=None,
        help="run at most N tasks at once (overrides the runner's max_workers)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no live progress line, even on a terminal",
    )
    loudness = run.add_mutually_exclusive_group()
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

    _add_tasks_and_graph(commands)
    add_report_command(commands)

    plugins = commands.add_group(
        "plugins", "list the installed plugins, or start a new one", default="list"
    )
    listing = plugins.add(
        "list",
        "opus_core.cli.plugins:list_plugins",
        help="every plugin, built-ins included",
        configure=False,  # lists a plugin whatever its options: it is how one finds out why
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    new = plugins.add(
        "new",
        "opus_core.cli.scaffold:new",
        help="write a new plugin distribution, with a passing test",
        configure=False,
    )
    new.add_argument("name", help="the plugin's name: opus-plugin-NAME, module opus_plugin_NAME")
    new.add_argument(
        "--kind",
        choices=("processor", "runner", "persistence", "loader", "command"),
        default="processor",
        help="what the plugin provides, with a test of it (default: processor, with options "
        "and a lifecycle hook)",
    )
    new.add_argument("--directory", default=".", help="where to write it (default: here)")
    new.add_argument("--force", action="store_true", help="overwrite an existing directory")

    config = commands.add_group("config", "show, create or locate opus.toml", default="show")
    config_show = config.add(
        "show",
        "opus_core.cli.config:show",
        help="the merged configuration, defaults included, and where each value is from",
    )
    config_show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    init = config.add(
        "init",
        "opus_core.cli.config:init",
        help="write a commented starter opus.toml",
        configure=False,
    )
    init.add_argument(
        "path",
        nargs="?",
        default="opus.toml",
        help="the file to write, or a directory to write opus.toml in (default: ./opus.toml)",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    config.add(
        "path",
        "opus_core.cli.config:path",
        help="which configuration files are read",
        configure=False,  # says where the files are even when they are wrong
    )

    state = commands.add_group("state", "what the configured persistence holds", default="list")
    state_list = state.add(
        "list", "opus_core.cli.state:list_state", help="every identifier with state"
    )
    state_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    state_show = state.add(
        "show",
        "opus_core.cli.state:show",
        help="the state of one id, or the record of one task",
        description="The state of ID, or the last record of the task NAME for a command and "
        "context (the id opus-run:COMMAND:CONTEXT:NAME).",
    )
    state_show.add_argument("id", metavar="ID|NAME", help="a state id, or a task's name")
    state_show.add_argument(
        "--command", default="apply", help="the command of a task's record (default: apply)"
    )
    state_show.add_argument(
        "--context", default="default", help="the context of a task's record (default: default)"
    )
    state_show.add_argument("--json", action="store_true", help="print JSON (times in ISO 8601)")
    clear = state.add(
        "clear",
        "opus_core.cli.state:clear",
        help="forget the state of one id, or of all",
        description="Forget the state of ID, or the last record of the task NAME; without "
        "ID, all state and task records "
        "(asked on a terminal, --yes elsewhere); the run history stays (opus runs prune).",
    )
    clear.add_argument(
        "id", metavar="ID|NAME", nargs="?", help="a state id or a task's name (default: all)"
    )
    clear.add_argument(
        "--command", default="apply", help="the command of a task's record (default: apply)"
    )
    clear.add_argument(
        "--context", default="default", help="the context of a task's record (default: default)"
    )
    clear.add_argument("-y", "--yes", action="store_true", help="forget everything without asking")

    _add_runs(commands)

    completion = commands.add(
        "completion",
        "opus_core.cli.completion:completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for bash or zsh.",
        epilog=COMPLETION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=False,  # runs at each TAB: never an error under the cursor
    )
    completion.add_argument("shell", nargs="?", choices=("bash", "zsh"), help="the shell")
    completion.add_argument(  # what the scripts call for names that depend on the project
        "--list", choices=("runners", "tasks", "contexts"), help=argparse.SUPPRESS
    )


def _add_runs(commands: Commands) -> None:
    """`opus runs list|show|prune`: the run history."""
    runs = commands.add_group(
        "runs",
        "the history of runs: list, show one, prune",
        default="list",
        description="Every opus run is recorded by the configured persistence.",
    )
    listing = runs.add("list", "opus_core.cli.runs:list_runs", help="the runs, newest first")
    listing.add_argument(
        "--limit", metavar="N", type=_count, default=None, help="at most the N newest runs"
    )
    listing.add_argument("--json", action="store_true", help="print JSON (times in ISO 8601)")
    show = runs.add(
        "show",
        "opus_core.cli.runs:show",
        help="one run and each of its tasks",
        description="One run: how it ended, each task's status, attempts and error, and "
        "the tracebacks of the tasks that failed (as opus run ends).",
    )
    show.add_argument(
        "run",
        metavar="RUN",
        nargs="?",
        default="latest",
        help="latest (the default), a run id, or the beginning of one",
    )
    show.add_argument(
        "--tb",
        choices=("short", "long", "line", "no"),
        default="short",
        help="tracebacks of failed tasks: the last frames (short, the default), all of "
        "them (long), one line per task (line), or none (no)",
    )
    show.add_argument("--json", action="store_true", help="print JSON (times in ISO 8601)")
    prune = runs.add("prune", "opus_core.cli.runs:prune", help="forget every run but the newest N")
    prune.add_argument(
        "--keep", metavar="N", type=_count, required=True, help="how many of the newest to keep"
    )


def _count(value: str) -> int:
    """`--limit N`, `--keep N`: a whole number of at least 0."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {value!r}")
    return number


def _add_tasks_and_graph(commands: Commands) -> None:
    """`opus tasks` and `opus graph`: what `opus run` would run, listed or drawn."""
    tasks = commands.add(
        "tasks",
        "opus_core.cli.tasks:tasks",
        help="list the tasks in scope: kind, labels, dependencies",
        description="List the tasks in scope for a command and context, in run order, with "
        "their kind, labels and dependencies; then those out of scope and why.",
    )
    selection_arguments(tasks)
    tasks.add_argument("--json", action="store_true", help="print JSON instead of a table")

    graph = commands.add(
        "graph",
        "opus_core.cli.graph:graph",
        help="draw the task graph (Mermaid, DOT or a text tree)",
        description="Print the task graph: Mermaid (renders on GitHub), DOT for Graphviz "
        "(opus graph --format dot | dot -Tsvg > graph.svg) or an indented text tree. Tasks "
        "out of scope are dashed and grey; above 200 tasks, one node per kind.",
    )
    selection_arguments(graph)
    graph.add_argument(
        "--format",
        choices=("mermaid", "dot", "text"),
        default="mermaid",
        help="mermaid (default), dot or text",
    )
    graph.add_argument(
        "--group-by",
        metavar="WHAT",
        default="auto",
        type=group_by_argument,
        help="auto (kind above 200 tasks), none, kind, or label:KEY (default: auto)",
    )


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


def group_by_argument(text: str) -> str:
    """`--group-by`: `auto`, `none`, `kind` or `label:KEY`."""
    if text in ("auto", "none", "kind") or (text.startswith("label:") and text[6:]):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not auto, none, kind or label:KEY (label:tier groups by the label tier)"
    )


def keyword_expression(text: str) -> KeywordExpression:
    """The `-k EXPR` argument: a parsed expression, or a usage error naming it."""
    from opus_core.selection import KeywordExpression

    try:
        return KeywordExpression(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


COMPLETION_EPILOG = """\
install:
  bash:  opus completion bash > ~/.local/share/bash-completion/completions/opus
  zsh:   opus completion zsh > "${fpath[1]}/_opus"   (then start a new shell)
  or, for this shell only:  source <(opus completion bash)"""


def _workers(value: str) -> int:
    """`-j N`: a whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return number
