"""Every hook a plugin can implement, the whole plugin contract in one file.

Implement a hook by defining a function of the same name marked with
`opus_core.plugin.hookimpl`; it may take any subset of the hook's arguments,
by name. Hooks are called through pluggy: `tryfirst`/`trylast`, wrappers
(`wrapper=True`, and the older `hookwrapper=True`) and `firstresult` behave
as pluggy documents.

Where opus needs one answer per plugin (what it provides, its options),
every implementation is asked and each answer is kept with the plugin that
gave it. A registration hook that raises or returns the wrong type marks
*that* plugin as broken (`opus plugins list` shows it as `error`); a lifecycle
hook that raises — `SystemExit` included — is reported once naming the plugin
and the hook, and the run goes on.

`docs/hooks.md` is generated from this file (`python -m opus_core.plugin.docs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opus_core.plugin import hookspec

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.graph import Plan
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.plugin.manager import PluginManager
    from opus_core.processor import TaskProcessor
    from opus_core.results import RunReport, TaskResult
    from opus_core.runners.base import Runner


# -- registration: what a plugin provides ------------------------------------------------


@hookspec
def opus_register_runners() -> Iterable[type[Runner]]:
    """Return the `Runner` subclasses this plugin provides.

    Called once per plugin manager, in the main thread of the `opus` process
    (or of the program that built a `Tasks`), the first time opus needs to know
    which runners exist. Each class sets a unique `name` — what users write in
    `[opus] runner` and `runner=` — and takes its options, from
    `[runners.<name>]`, as keyword arguments of `__init__` (checked against its
    signature and type hints). Two plugins providing one name is an error
    naming both.

    Example::

        @hookimpl
        def opus_register_runners():
            return [NiceRunner]
    """


@hookspec
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """Return the `StatePersistence` subclasses this plugin provides.

    Called once per plugin manager, like `opus_register_runners`. Each class
    sets a unique `name` (what `[opus] persistence` selects) and takes its
    options, from `[persistence.<name>]`, as keyword arguments.

    Example::

        @hookimpl
        def opus_register_persistence():
            return [RedisPersistence]
    """


@hookspec
def opus_register_loggers() -> Iterable[type[LoggerWrapper]]:
    """Return the `LoggerWrapper` subclasses this plugin provides.

    Called once per plugin manager, like `opus_register_runners`. Each class
    sets a unique `name` (what `[opus] logger` selects) and takes its options,
    from `[loggers.<name>]`, as keyword arguments; `level` is passed from
    `[opus] log_level` unless the section sets it.

    Example::

        @hookimpl
        def opus_register_loggers():
            return [JsonLogger]
    """


@hookspec
def opus_register_processors() -> Iterable[TaskProcessor | type[TaskProcessor]]:
    """Return `TaskProcessor` instances or classes for every engine built from plugins.

    Called once per plugin manager. The processors are registered into every
    `Tasks` built from configuration (`Tasks.from_config`, `opus run`) or given
    `plugins=`; classes are instantiated with the engine's logger.

    Example::

        @hookimpl
        def opus_register_processors():
            return [Deploy]
    """


@hookspec
def opus_register_commands(commands: Commands) -> None:
    """Add subcommands to `opus` with `commands.add(name, handler, help=...)`.

    Called once each time `opus` starts, before the command line is parsed, so
    keep it cheap: `handler` may be a function or a `"module:function"` string
    imported only when the command runs, and returns the exit status. A
    handler whose first parameter is annotated `opus_core.cli.CommandContext`
    receives one — `.args` (the parsed arguments), `.config`, `.plugins`, and,
    built when first asked for, `.persistence` and `.tasks()` (the engine);
    any other handler receives the parsed arguments (`argparse.Namespace`).
    Before the handler runs, opus checks `[plugins.*]` and hands every plugin
    its options (`opus_configure`); `commands.add(..., configure=False)` skips
    that for a command that must work whatever the configuration holds. `add`
    returns the `argparse.ArgumentParser` of the new command, for its
    arguments; `commands.add_group(name, help, default=...)` makes
    `opus NAME ACTION`. The core's own commands are added through this hook.
    docs/commands.md has a complete command plugin.

    Example::

        @hookimpl
        def opus_register_commands(commands):
            parser = commands.add("hello", "opus_plugin_hello.cli:hello", help="say hello")
            parser.add_argument("--name", default="world")

        # opus_plugin_hello/cli.py
        def hello(context: CommandContext) -> int:
            print(f"hello, {context.args.name}, from {context.config.project}")
            return 0
    """


@hookspec
def opus_plugin_options() -> type | None:
    """Return the class of this plugin's options, read from `[plugins.<name>]`.

    `<name>` is the plugin's entry-point name. The class — usually a
    dataclass — takes each option as a keyword argument; opus checks the
    table against its signature and type hints as it checks runner options
    (an unknown key or a wrong type is an error naming the file and the key),
    makes an instance, and hands it to this plugin's `opus_configure`.

    Example::

        @dataclass
        class Options:
            channel: str = "#ops"
            quiet: bool = False

        @hookimpl
        def opus_plugin_options():
            return Options
    """


@hookspec
def opus_configure(options: Any, manager: PluginManager) -> None:
    """Receive this plugin's options, once the configuration is read.

    `options` is the instance of the class `opus_plugin_options` returned,
    made from `[plugins.<name>]` (every option at its default when the table
    is absent). Called for each plugin alone — a plugin sees only its own
    options — once per configuration, before any task is loaded or run.
    `manager` is the plugin manager the run will use: a plugin may register more
    hook implementations on it (`manager.register(obj, name="myplugin.part")`, as
    pytest plugins do from `pytest_configure`) — say, the per-task hooks of a
    feature the options turned on, so that a run with it off pays nothing for them.

    Example::

        @hookimpl
        def opus_configure(options):
            global CHANNEL
            CHANNEL = options.channel
    """


# -- tasks: what runs ------------------------------------------------------------------


@hookspec(firstresult=True)
def opus_load_tasks(path: Path) -> Iterable[Task] | None:
    """Return the tasks of the manifest file at `path`, or None if this plugin does not read it.

    firstresult: the first plugin to return something other than None wins.
    Called once for each file matched by `[opus] manifests` (globs relative to
    the configuration file), in the main thread, when an engine is built from
    configuration. The core reads `.toml` (a file of `[[tasks]]`) and `.json`
    (a list of manifests); opus-plugin-yaml reads `.yaml`/`.yml`. A file that
    cannot be read should raise `ManifestError` naming the file and, where
    known, the line.

    Example::

        @hookimpl
        def opus_load_tasks(path):
            if path.suffix != ".ini":
                return None
            return [Task(kind=..., version=..., metadata=..., spec=...) for ... in ...]
    """


@hookspec
def opus_modify_tasks(tasks: list[Task], command: str, context: str) -> None:
    """Deselect or reorder `tasks` in place before the run is planned.

    Called each time a plan is made (each run, and `opus run --dry-run`) with
    every task the engine holds, before scope and dependencies are
    resolved, as pytest's `pytest_collection_modifyitems`. Removing a task
    another task depends on by name makes planning fail naming both. The
    core's task selection (`opus run NAME ...`) is an implementation.

    Example::

        @hookimpl
        def opus_modify_tasks(tasks, command, context):
            tasks[:] = [t for t in tasks if t.meta.labels.get("tier") != "slow"]
    """


@hookspec(firstresult=True)
def opus_task_restore(
    task: Task,
    command: str,
    context: str,
    persistence: StatePersistence,
    values: Mapping[str, Any],
    upstream: Mapping[str, str],
) -> Mapping[str, Any] | None:
    """Return the values `task` would publish to skip running it, or None to run it.

    firstresult: the first plugin to return a mapping wins; the task is then
    reported as `restored` and its dependents see the returned values. Asked,
    in the thread running the engine, for each task in scope when it is ready
    to start (every task it depends on succeeded or was restored), before its
    `${KEY}` placeholders are substituted. `values` is the key-value store as
    the task would see it; `upstream` maps the id of each task it depends on
    directly to how that one ended, `"succeeded"` or `"restored"`.

    The core implements it twice: `--resume` answers from the task's last
    successful record for the same command, context and checksum (when all of
    `upstream` was restored), and the file cache (`opus_core.caching`, tryfirst)
    restores a task with `metadata.outputs` that is up to date.

    Example (make-style: skip a task whose output is newer than its input)::

        @hookimpl
        def opus_task_restore(task):
            src, out = Path(task.spec["input"]), Path(task.spec["output"])
            if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
                return {}
            return None
    """


# -- run lifecycle: notifications ------------------------------------------------------


@hookspec
def opus_run_started(plan: Plan) -> None:
    """A run is about to start its first task.

    `plan.command` and `plan.context` say what runs; `plan.tasks` lists the
    tasks in scope in the order they were added, each moved after what it depends
    on; `plan.excluded` those left out and why. Lifecycle hooks are called in the
    thread that runs the engine (`process_context`), one notification at a time,
    whatever the runner.
    """


@hookspec
def opus_task_started(task: Task, attempt: int) -> None:
    """`task` was handed to the runner for attempt number `attempt` (from 1).

    Called before the work starts, so a plugin may record the start time; a
    restored or skipped task never starts (only `opus_task_finished` is called).
    It is called only in a run that began with a plugin implementing it (the
    engine looks once, after `opus_run_started`), so a run nobody listens to
    this way pays nothing per task for it.
    """


@hookspec
def opus_attempt_context(task: Task, attempt: int, runner: Runner) -> Any:
    """A context manager to enter around attempt `attempt` of `task`, where it runs.

    Called in the engine's thread as the attempt is handed to `runner`, after
    `opus_task_started`. What each plugin returns (None for nothing) travels with
    the attempt to wherever it runs — a thread, a forked process, a pool worker,
    a Dask worker — so it must pickle (`cloudpickle` for Dask), and its class must be
    importable there; it is entered before the processor is called and left after it
    returns or raises, the first plugin's outermost. Set what the work should see
    there: a trace context (the otel plugin), a `contextvars` value, the variables a
    Command task starts with (`opus_core.command_tasks.COMMAND_ENVIRONMENT`). Like
    `opus_task_started`, it is called only in a run that began with a plugin
    implementing it.

    Example::

        @dataclasses.dataclass
        class Tagged:
            tag: str

            def __enter__(self):
                self.token = COMMAND_ENVIRONMENT.set({"BUILD_TAG": self.tag})
                return self

            def __exit__(self, *exc_info):
                COMMAND_ENVIRONMENT.reset(self.token)

        @hookimpl
        def opus_attempt_context(task, attempt):
            return Tagged(f"{task.name}-{attempt}")
    """


@hookspec
def opus_task_retrying(
    task: Task, attempt: int, error: str, delay: float, traceback: str | None
) -> None:
    """Attempt `attempt` of `task` failed; the next attempt starts in `delay` seconds.

    `error` is the failure in one line (type and message); `traceback` is the
    attempt's formatted traceback, as the process or worker that ran it
    formatted it. Called only when the task has retries left
    (`metadata.retries`, `@task(retries=...)`).
    """


@hookspec
def opus_task_finished(task: Task, result: TaskResult) -> None:
    """`task` reached its final status; `result` is its entry in the run report.

    `result.error` is a failure in one line and `result.traceback` the
    formatted traceback of the last failed attempt (None unless it raised).

    Called for every task in scope, including those skipped, cancelled or
    restored without starting.
    """


@hookspec
def opus_run_finished(report: RunReport) -> None:
    """The run ended; `report` is what `Tasks.process_context` returns.

    Called once per run, after every task's `opus_task_finished`, also when
    the run was interrupted (`report.interrupted`) or stopped by `fail_fast`.
    """
