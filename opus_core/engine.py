"""`Tasks`: the engine that holds processors and tasks and runs them for a command and context."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opus_core.capture import capturing
from opus_core.errors import ConfigError, ManifestError, OpusError, PluginError
from opus_core.graph import Plan, build_plan
from opus_core.logger import DEBUG, LoggerWrapper, logs_at
from opus_core.loglines import LogLines, StartLines
from opus_core.manifest import Task, display_name
from opus_core.persistence import MemoryPersistence, StatePersistence
from opus_core.plugin.manager import PluginManager
from opus_core.processor import TaskProcessor, check_processor
from opus_core.records import RunRecords
from opus_core.resources import Resources
from opus_core.results import RunReport
from opus_core.resume import Resume
from opus_core.runners import Runner, RunnerSpec, resolve_runner
from opus_core.runners.base import HALT_GRACE, wait_for_halts
from opus_core.scheduler import Scheduler
from opus_core.store import KeyValueStore

if TYPE_CHECKING:
    from opus_core.assembly import Assembly
    from opus_core.config import Config


class Tasks:
    """The engine: register processors, add tasks, then `process_context`.

    ::

        tasks = Tasks(key_value_store=values, logger=logger)
        tasks.register_task_processor(processor=HelloWorld())
        tasks.add_task(task=Task(kind="HelloWorld", version="v1", spec={...}))
        report = tasks.process_context(command="apply", context="default")

    `runner` is a runner name, `Runner` instance or class (default: the runner
    named in `opus.toml`, else `sequential`).
    After a run, `key_value_store` also holds every value the run published.
    """

    def __init__(
        self,
        logger: LoggerWrapper | None = None,
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
        runner: RunnerSpec | None = None,
        plugins: Sequence[object] | None = None,
        fail_fast: bool = False,
        runner_options: Mapping[str, Any] | None = None,
        plugin_manager: PluginManager | None = None,
        resources: Mapping[str, float] | None = None,
        resources_scope: str = "run",
    ) -> None:
        self.logger = logger if logger is not None else LoggerWrapper()
        self.key_value_store = key_value_store if key_value_store is not None else KeyValueStore()
        self.state_persistence = (
            state_persistence if state_persistence is not None else MemoryPersistence()
        )
        self.runner: RunnerSpec | None = runner
        self.runner_options = dict(runner_options or {})
        self.fail_fast = fail_fast
        self.resources: dict[str, float] = dict(resources or {})
        """The capacities tasks' needs draw from (`[resources]` of opus.toml)."""
        if resources_scope not in ("run", "machine"):
            raise ValueError(f'resources_scope must be "run" or "machine", not {resources_scope!r}')
        self.resources_scope = resources_scope
        """"run": the capacities are this engine's runs'; "machine": shared with every opus
        process of the project on this machine (`opus_core.leases`)."""
        self.plugin_manager = plugin_manager
        self.config: Config | None = None
        self.processors: dict[tuple[str, str], TaskProcessor] = {}
        self.tasks: list[Task] = []
        self._task_ids: set[str] = set()
        self._scheduler: Scheduler | None = None
        self._lock = threading.Lock()
        if plugins:
            manager = self.manager()
            for plugin in plugins:
                manager.register(plugin)
            for processor in manager.processors(self.logger):
                self.register_task_processor(processor)

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        runner: str | None = None,
        plugins: Sequence[object] = (),
    ) -> Tasks:
        """An engine built from `opus.toml`: plugins, runner, persistence, logger, tasks.

        `path` defaults to `$OPUS_CONFIG`, else the nearest `opus.toml` in the
        current directory or its parents; `runner` overrides `[opus] runner`.
        Raises `ConfigError` naming the file and key of anything wrong.
        """
        from opus_core.assembly import Assembly
        from opus_core.config import load_config

        return cls.from_assembly(Assembly(load_config(path), plugins), runner=runner)

    @classmethod
    def from_assembly(
        cls,
        assembly: Assembly,
        *,
        runner: str | None = None,
        persistence: StatePersistence | None = None,
    ) -> Tasks:
        """The engine of `assembly`'s configuration: checked (`Assembly.check`), then its
        logger, runner (`runner` overriding `[opus] runner`), persistence (`persistence`,
        else the configured one), processors and tasks; its plugin manager is the
        assembly's. What `from_config` returns, and `opus`'s `context.tasks()`."""
        assembly.check()
        logger = assembly.logger()
        runner_class, options = assembly.runner_class(runner)
        tasks = cls(
            logger=logger,
            state_persistence=persistence if persistence is not None else assembly.persistence(),
            runner=runner_class,
            runner_options=options,
            fail_fast=bool(assembly.config.opus("fail_fast", False)),
            plugin_manager=assembly.manager,
            resources=assembly.config.data.get("resources"),
            resources_scope=assembly.config.opus("resources_scope", "run"),
        )
        tasks.config = assembly.config
        for processor in assembly.processors(logger):
            tasks.register_task_processor(processor)
        for task, where in assembly.tasks_with_sources():
            try:
                tasks.add_task(task)
            except ManifestError as exc:
                broken = "".join(
                    f"; {info.describe()} {info.failure}: {info.error}"
                    for info in assembly.manager.broken()
                )
                raise ConfigError(f"{where}: {exc}{broken}") from None
        return tasks

    def manager(self) -> PluginManager:
        """The plugin manager of this engine, with the engine's log lines registered as `log`.

        Each engine has its own unless one is given; installed plugins are
        imported once per process whatever the number of managers.
        """
        manager = self.plugin_manager
        if manager is None:
            manager = self.plugin_manager = PluginManager()
        if manager.logger is not self.logger:
            manager.unregister("builtin.log")
            manager.unregister("builtin.log.started")
            manager.register(LogLines(self.logger), name="builtin.log", core=True)
            manager.logger = self.logger
        debug = logs_at(self.logger, DEBUG)  # its level, as of now
        if debug != ("builtin.log.started" in manager.infos):
            if debug:
                manager.register(StartLines(self.logger), name="builtin.log.started", core=True)
            else:
                manager.unregister("builtin.log.started")
        return manager

    def running(self) -> int:
        """How many tasks of the run under way are running now (0 between runs); any
        thread may ask (the progress line of `opus run` does, as it draws)."""
        scheduler = self._scheduler
        return 0 if scheduler is None else scheduler.running_now()

    def finished(self) -> tuple[int, int]:
        """How many tasks of the run under way have finished, and how many of those failed
        or timed out ((0, 0) between runs); any thread may ask."""
        scheduler = self._scheduler
        return (0, 0) if scheduler is None else (scheduler.finished, scheduler.failed)

    def waiting(self) -> int:
        """How many tasks of the run under way are ready but wait for a resource (0 between
        runs, and in a run without resources); any thread may ask."""
        scheduler = self._scheduler
        return 0 if scheduler is None or scheduler.pool is None else scheduler.pool.blocked()

    # -- building --------------------------------------------------------------

    def register_task_processor(self, processor: TaskProcessor | type[TaskProcessor]) -> None:
        """Handle tasks of `processor.kind` (every version it lists) with `processor`."""
        if isinstance(processor, type) and issubclass(processor, TaskProcessor):
            processor = processor(logger=self.logger)
        if not isinstance(processor, TaskProcessor):
            raise OpusError(f"register_task_processor needs a TaskProcessor, got {processor!r}")
        check_processor(processor)
        for version in processor.versions:
            self.processors[processor.kind, version] = processor

    def add_task(self, task: Task) -> None:
        """Add `task`; its kind and version must have a processor and its id must be new."""
        if not isinstance(task, Task):
            raise ManifestError(f"add_task needs a Task, got {task!r}")
        if (task.kind, task.version) not in self.processors:
            versions = sorted(v for k, v in self.processors if k == task.kind)
            handler = self.processors[task.kind, versions[0]] if versions else None
            wanted = ", ".join(f'"{v}"' for v in (*versions, task.version))
            hint = (
                f"its processor handles versions {', '.join(versions)}; to add one, set "
                f"`versions = ({wanted})` on the processor class ({type(handler).__name__})"
                if versions
                else f"register a TaskProcessor with kind = {task.kind!r}"
            )
            raise ManifestError(
                f"task {display_name(task)!r}: no processor for kind {task.kind!r} "
                f"version {task.version!r}; {hint}"
            )
        if task.task_id in self._task_ids:
            what = "name" if task.meta.name else "manifest (an identical unnamed task)"
            raise ManifestError(
                f"task {display_name(task)!r}: another task has the same {what}; "
                "give each task a unique metadata.name"
            )
        self._task_ids.add(task.task_id)
        self.tasks.append(task)

    # -- running ---------------------------------------------------------------

    def plan(self, command: str = "apply", context: str = "default") -> Plan:
        """The tasks that would run for `command` in `context`, in order, and those left out."""
        tasks: Sequence[Task] = self.tasks
        manager = self.manager()
        if manager.modifies_tasks():
            selected = list(self.tasks)
            manager.modify_tasks(selected, command, context)
            known = {id(task) for task in self.tasks}
            added = next((t for t in selected if id(t) not in known), None)
            if added is not None or len({id(t) for t in selected}) != len(selected):
                what = (
                    "listed a task twice"
                    if added is None
                    else f"added task {display_name(added)!r}"
                    if isinstance(added, Task)
                    else f"added {added!r}"
                )
                raise PluginError(
                    f"opus_modify_tasks {what}; it may only remove or reorder tasks "
                    "(Tasks.add_task adds them)"
                )
            tasks = selected
        return build_plan(tasks, self.processors, command, context)

    def process_context(
        self,
        command: str = "apply",
        context: str = "default",
        resume: bool = False,
        *,
        force: bool | Iterable[str] = False,
        explain: bool = False,
    ) -> RunReport:
        """Run every task in scope for `command` in `context` and report how each ended.

        Each named task's outcome is recorded through `state_persistence` as soon
        as it finishes, and the run goes into its history (`save_run`: once as
        "running" before the first task starts, once more when it ends; the
        report's `run_id` names it). With `resume=True`, a task whose last record for this
        command and context succeeded with the same checksum (and whose
        dependencies are all restored too) is not run again: it is reported as
        `restored` and the values it published are restored. Plugins may restore
        tasks the same way (`opus_task_restore`), with or without `resume`.

        A task with `metadata.outputs` that is up to date (see `opus_core.caching`) is
        restored too, unless `force` is True or names it; `explain` logs why each such
        task ran or was restored at INFO.

        A run with no task in scope runs nothing and is not recorded: its report is
        empty and its `run_id` None (its runner is made, so its options are checked,
        but not started).

        Raises `DependencyError`/`CycleError` before anything runs when the graph
        is invalid. Task failures do not raise: they are in the report
        (`report.raise_on_failure()` turns them into an exception).
        """
        plan = self.plan(command, context)
        for warning in plan.warnings:
            self.logger.warning(warning)
        if not plan.tasks:
            # As pytest with no test collected: nothing ran, so nothing goes into the
            # history, and `latest` stays the last run that ran something. The runner is
            # still made (not started), so a configuration error in it is still one.
            runner, owned = self._runner()
            if owned:
                runner.shutdown(wait=False)
            return RunReport(command, context, started_at=time.time())
        with self.restoring(plan, resume, force, explain) as restorers:
            return self._process_plan(plan, restoring=restorers is not None)

    def _process_plan(self, plan: Plan, restoring: bool) -> RunReport:
        """Run `plan` (in scope, not empty), `restoring` if a plugin may restore tasks."""
        command, context = plan.command, plan.context
        resources = self.needs(plan)
        runner, owned = self._started_runner()
        run = self._run_started(command, context, runner, owned)
        records = RunRecords(self.state_persistence, command, context)
        scheduler = Scheduler(
            plan,
            self.processors,
            runner,
            self.key_value_store.store,
            self.state_persistence,
            self.manager(),
            fail_fast=self.fail_fast,
            records=records,
            restoring=restoring,
            run_id=run["id"],
            resources=resources,
        )
        with self._lock:
            if self._scheduler is not None:
                raise OpusError("this Tasks is already running; wait for the run to end")
            self._scheduler = scheduler
        try:
            with capturing():  # what each attempt prints and logs is kept
                report = scheduler.run()
        finally:
            with self._lock:
                self._scheduler = None
            still = wait_for_halts(HALT_GRACE)  # work told to stop is gone before the run ends
            if still:
                names = ", ".join(sorted(r.name for r in still))
                self.logger.warning(
                    f"runner {getattr(runner, 'name', runner)!r} is still halting {names} "
                    f"after {HALT_GRACE:g}s; the run ends without waiting for it"
                )
            if owned:
                runner.shutdown(wait=not scheduler.interrupted)
        records.close()
        self.key_value_store.store.update(scheduler.final_values())
        self._run_ended(run, report, plan, scheduler)
        return report

    def needs(self, plan: Plan) -> Resources | None:
        """The capacities of a run of `plan` and each task's needs, checked: a need of a
        resource `resources` does not have, or above its capacity, is a `ManifestError`
        naming the task (before anything runs). None when there is nothing to count."""
        leases = None
        if self.resources_scope == "machine" and self.resources:
            from opus_core.config import current_state_dir
            from opus_core.leases import MachineLeases

            folder = self.config.state_dir if self.config is not None else current_state_dir()
            leases = MachineLeases(folder, self.resources)
        return Resources.for_plan(plan, self.resources, leases)

    def _started_runner(self) -> tuple[Runner, bool]:
        """The run's runner, started, and whether this engine made it (and so ends it)."""
        runner, owned = self._runner()
        try:
            runner.start()
        except BaseException as exc:
            if owned:
                runner.shutdown(wait=False)
            if isinstance(exc, Exception) and not isinstance(exc, OpusError):
                raise self._plugin_failed("runners", runner, "start", exc) from None
            raise
        return runner, owned

    def _run_started(
        self, command: str, context: str, runner: Runner, owned: bool
    ) -> dict[str, Any]:
        """The run's entry in the history, saved as "running" before any task starts."""
        from opus_core import history

        persistence = self.state_persistence
        run = history.start_run(
            command,
            context,
            config=str(self.config.project) if self.config and self.config.project else None,
            runner=str(getattr(runner, "name", type(runner).__name__)),
            persistence=str(getattr(persistence, "name", type(persistence).__name__)),
        )
        try:
            self._save_run(run)
        except BaseException as exc:
            if owned:
                runner.shutdown(wait=False)
            if isinstance(exc, OpusError):
                exc.add_note("run not started: its history could not be saved")
            raise
        return run

    def _run_ended(
        self, run: dict[str, Any], report: RunReport, plan: Plan, scheduler: Scheduler
    ) -> None:
        """Save the ended run into the history and make the state durable; raise what
        stopped the run (with how its tasks ended), if something did."""
        from opus_core import history

        persistence = self.state_persistence
        stopped = scheduler.halted == "stopped" or scheduler.fatal_error is not None
        history.finish_run(
            run,
            report,
            plan,
            scheduler.attempt_logs(),
            ready_at=scheduler.ready_at,
            status=history.final_status(report, stopped),
            lazy=persistence.lazy_run_tasks,
        )
        try:
            self._save_run(run)
        except OpusError as exc:
            scheduler.fatal_error = scheduler.fatal_error or exc
        try:
            self.state_persistence.persist_all_state()
        except Exception as exc:  # a third-party persistence raises what it likes
            if scheduler.fatal_error is None:
                scheduler.fatal_error = self._plugin_failed(
                    "persistence", self.state_persistence, "make the run's state durable", exc
                )
        if scheduler.fatal_error is not None:
            # The error, then the summary: a run that stops still says how each task ended.
            error = scheduler.fatal_error
            error.add_note(f"how the tasks ended: {report.summary()}")
            raise error

    def _save_run(self, run: dict[str, Any]) -> None:
        """Save `run` into the history; a persistence's own failure becomes an `OpusError`
        naming it and its plugin."""
        try:
            self.state_persistence.save_run(run)
        except OpusError:
            raise
        except Exception as exc:  # a third-party persistence raises what it likes
            raise self._plugin_failed(
                "persistence", self.state_persistence, "save the run's history", exc
            ) from None

    def _plugin_failed(self, section: str, what: object, doing: str, exc: Exception) -> OpusError:
        """`runner 'x' (plugin 'p' (dist 1.0)) failed to DOING: Type: message`."""
        from opus_core.assembly import plugin_failed

        return plugin_failed(self.plugin_manager, section, what, doing, exc)

    def restored(
        self,
        plan: Plan,
        resume: bool = False,
        force: bool | Iterable[str] = False,
        explain: bool = False,
    ) -> list[dict[str, Any] | None] | None:
        """Per task of `plan`, the values plugins would restore instead of running it
        (`opus_task_restore`), as far as can be told before anything runs: None for a task
        that would run, or that waits for one that would; None when no plugin restores.

        Each task is asked as the run asks it (see `restoring`), as if every task it
        depends on had been restored; `explain` logs why each cached task would run or be
        restored.
        """
        with self.restoring(plan, resume, force, explain, dry_run=True) as manager:
            if manager is None:
                return None
            values = dict(self.key_value_store.store)
            restored: list[dict[str, Any] | None] = []
            for index, task in enumerate(plan.tasks):
                found = None
                deps = plan.deps[index]
                if all(restored[d] is not None for d in deps):
                    seen = dict(values)
                    for d in deps:
                        seen.update(restored[d] or {})
                    upstream = {plan.tasks[d].task_id: "restored" for d in deps}
                    found = manager.restore(
                        task, plan.command, plan.context, self.state_persistence, seen, upstream
                    )
                restored.append(found)
            return restored

    @contextlib.contextmanager
    def restoring(
        self,
        plan: Plan,
        resume: bool = False,
        force: bool | Iterable[str] = False,
        explain: bool = False,
        dry_run: bool = False,
    ) -> Iterator[PluginManager | None]:
        """The plugin manager with, for one run of `plan`, the core's restorers that run
        needs: `--resume`'s (`Resume`) with `resume`, and the file cache
        (`opus_core.caching.FileCache`, with `force` and `explain`) when a task of `plan`
        is cached (changing nothing it keeps, with `dry_run`). Yields None when no plugin
        restores anything."""
        manager = self.manager()
        added = []
        if resume:
            manager.unregister("builtin.resume")
            manager.register(Resume(), name="builtin.resume", core=True)
            added.append("builtin.resume")
        if any(task.meta.outputs for task in plan.tasks):
            from opus_core.caching import check_outputs

            check_outputs(plan.tasks)  # one maker per output, cached or not
        if any(task.meta.cached for task in plan.tasks):
            from opus_core.caching import FileCache
            from opus_core.config import project_folder

            cache = FileCache(
                project_folder(), self.state_persistence, self.logger, force, explain, dry_run
            )
            cache.prefetch(plan.command, plan.context, plan.tasks)
            manager.unregister("builtin.cache")
            manager.register(cache, name="builtin.cache", core=True)
            added.append("builtin.cache")
        try:
            yield manager if manager.restores() else None
        finally:
            for name in added:
                manager.unregister(name)

    def stop(self) -> None:
        """Stop the current run from another thread: no further task starts.

        Tasks not started are reported `cancelled`. A running task is stopped if
        its runner can stop it (`process` kills it) and reported `cancelled`.
        Under `sequential` (the default) the running task runs in the thread that
        called `process_context`, where it cannot be interrupted: it runs to its
        end and is reported as it ended; `process_context` returns right after.
        """
        with self._lock:
            if self._scheduler is not None:
                self._scheduler.stop()

    def _runner(self) -> tuple[Runner, bool]:
        """The runner for a run, and whether this engine made it (and so shuts it down)."""
        if isinstance(self.runner, Runner):
            return self.runner, False
        spec: RunnerSpec
        config: Config | None
        if self.runner is None:
            # As the SPEC has it: the runner named in opus.toml, else sequential.
            from opus_core.assembly import Assembly
            from opus_core.config import load_config

            config = load_config()
            spec, options = Assembly(config, manager=self.manager()).runner_class()
        else:
            spec, options, config = self.runner, self.runner_options, self.config
        available = self.manager().runners() if isinstance(spec, str) else None
        try:
            return resolve_runner(spec, available, **options), True
        except OpusError:
            raise
        except (TypeError, ValueError) as exc:
            name = getattr(spec, "name", spec)
            where = config.where(f"runners.{name}") if config else f"runner {name!r}"
            raise ConfigError(f"{where}: {exc}") from None
        except Exception as exc:  # the runner's own __init__: name it and its plugin
            cls = available[spec] if available is not None and isinstance(spec, str) else spec
            raise self._plugin_failed("runners", cls, "start", exc) from None

    def __repr__(self) -> str:
        return f"<Tasks {len(self.tasks)} task(s), {len(self.processors)} processor(s)>"
