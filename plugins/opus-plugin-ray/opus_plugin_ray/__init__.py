"""The `ray` runner: tasks run on a Ray cluster, and a timeout or `stop()` kills them there.

Without an `address` the runner starts a local Ray when it starts (`num_cpus` of them)
and stops it on `shutdown()`; with `"auto"`, `"host:port"` or `"ray://host:10001"` it
connects to a running cluster and leaves it running. Ray is imported only then:
importing this module does not.

Every task is one call of one remote function, `opus_plugin_ray.worker.execute`, with
the task pickled (`opus_core.runners.remote.dumps_work`) and `max_retries=0` (opus
retries). It returns a small *status* — fetched by the driver as soon as the task ends:
success or the exception, the attempt count, what the task printed and logged — and the
*value*, which stays in the object store until `get_result()` (function tasks) or comes
in the status (the engine's attempts, whose values the driver needs). A run passed to
another task of the runner travels as its value's `ObjectRef`, so Ray starts the
dependent where and when the value is ready; `map` submits every row at once, the
function pickled once. `halt()` is `ray.cancel(force=True)`: the worker process running
the task is killed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core import OpusError, TaskCancelledError, hookimpl
from opus_core.results import TaskStatus
from opus_core.runners.base import (
    HALT_GRACE,
    Attempted,
    BaseTaskRun,
    Runner,
    Work,
    check_count,
    run_name,
)
from opus_core.runners.remote import dumps_work
from opus_plugin_ray.connection import RayConnectionError, Settings, connect, disconnect

if TYPE_CHECKING:
    from concurrent.futures import Future  # not imported to list plugins or run without Ray

    from ray import ObjectRef

__all__ = ["RayConnectionError", "RayRunner", "RayTaskLostError", "RayTaskRun"]

__version__ = "0.1.0"


_OPTIONS = {"num_returns": 2, "max_retries": 0}
"""Ray options of every task: a status and a value; no retry by Ray (opus retries)."""


WARM_UP = 60.0
"""Seconds `RayRunner.start` waits at most for the workers it starts (`warm_up`)."""


INLINE = 100 * 1024
"""Bytes: a function (with the keyword arguments shared by a map's rows) pickled into no
more than this travels inline with each task (as Ray inlines small arguments), a bigger
one goes to the object store once."""


class RayTaskLostError(OpusError):
    """Ray could not run a task to its end: its worker or node died, or it was cancelled
    from outside opus. The message carries Ray's own."""


class RayTaskRun(BaseTaskRun):
    """A task on the cluster: `status_ref` and `value_ref` are the `ObjectRef`s of what it
    returns (see `opus_plugin_ray.worker`).

    A function task's value stays in Ray's object store until `get_result()` fetches it
    (once); `get_result(timeout)` bounds the wait for the run to end, not the fetch.
    """

    def __init__(self, name: str, runner: RayRunner, remote: bool) -> None:
        super().__init__(name)
        self.runner = runner
        """The runner that started the run."""
        self.remote = remote
        """Whether the value stays on the cluster until asked for (a function task)."""
        self.status_ref: ObjectRef[bytes] | None = None
        """The task's status in Ray's object store (None until submitted)."""
        self.value_ref: ObjectRef[bytes] | None = None
        """The task's value in Ray's object store (what dependents are given)."""
        self.ended: Future[Any] | None = None
        """The status, as Ray delivers it to the driver (`ObjectRef.future()`)."""
        self.fetched = False
        """Whether the value has been brought to the driver (`value`)."""
        self.value: Any = None
        """The value, once fetched."""

    def fetch(self) -> Any:
        """The value from the object store (fetched once)."""
        if not self.fetched:
            import ray

            from opus_plugin_ray.worker import loads_value

            with self.runner.calling_ray() as connected:
                if not connected:
                    raise OpusError(
                        f"the value of task {self.name!r} stayed on the Ray cluster and is "
                        "gone with the runner's connection: call get_result() before shutdown()"
                    )
                assert self.value_ref is not None  # a run that succeeded was submitted
                self.value = loads_value(ray.get(self.value_ref))
            self.fetched = True
        return self.value

    def get_result(self, timeout: float | None = None, raise_exceptions: bool = True) -> Any:
        """The task's value, fetched from the cluster the first time it is asked for.

        Raises the task's exception (or returns it, with `raise_exceptions=False`),
        and `TimeoutError` if the run does not end within `timeout` seconds.
        """
        result = super().get_result(timeout, raise_exceptions)
        if not self.remote or self.exception() is not None:
            return result
        try:
            return self.fetch()
        except Exception as exc:  # lost with its node, or cannot be unpickled here
            if raise_exceptions:
                raise
            return exc

    @classmethod
    def fetch_many(cls, runs: list[BaseTaskRun]) -> None:
        """Fetch the remote values of `runs` with one `ray.get`."""
        import ray

        from opus_plugin_ray.worker import loads_value

        wanted = [
            run
            for run in runs
            if isinstance(run, RayTaskRun)
            and run.remote
            and not run.fetched
            and run.status is TaskStatus.SUCCEEDED
        ]
        with contextlib.ExitStack() as calls:
            runners = {run.runner for run in wanted}
            if not runners or not all(calls.enter_context(r.calling_ray()) for r in runners):
                return  # a runner shut down: each run says so when it is read
            try:
                values = ray.get([run.value_ref for run in wanted if run.value_ref is not None])
            except Exception:  # one is lost: each says so when it is read
                return
        for run, data in zip(wanted, values, strict=True):
            run.value, run.fetched = loads_value(data), True

    def halt(self) -> None:
        """Kill the task on the cluster (`ray.cancel(force=True)`: its worker process is told
        to exit) and return once Ray reports it ended, or after `HALT_GRACE` seconds. The
        worker's process may outlive that report by a moment, exiting: it runs no more of
        the task."""
        if self.status_ref is None:
            return  # not submitted: `submit` cancels it if it gets that far
        import ray

        with self.runner.calling_ray() as connected:
            if connected:
                ray.cancel(self.status_ref, force=True)
                ray.wait([self.status_ref], timeout=HALT_GRACE, fetch_local=False)


def _place(needs: Mapping[str, float], declared: Mapping[str, float]) -> dict[str, Any]:
    """Ray's options for a task that needs `needs`: `cpu` and `gpu` as `num_cpus` and
    `num_gpus`, any other need the cluster declares (`declared`) as a custom resource."""
    options: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for name, need in needs.items():
        if name == "cpu":
            options["num_cpus"] = need
        elif name == "gpu":
            options["num_gpus"] = need
        elif name in declared and need:
            custom[name] = need
    if custom:
        options["resources"] = custom
    return options


class RayRunner(Runner):
    """Runs tasks on a Ray cluster (`"ray"`).

    Options: `address` (none: a local Ray started for the runner and stopped with it;
    `"auto"`, `"host:port"` or `"ray://host:10001"`: a running cluster, left running),
    `num_cpus` (of the local Ray; default: the machine's), `runtime_env` (the job's
    runtime environment; the user's own modules are added to its `py_modules`),
    `max_workers` (how many tasks of a graph the engine keeps in flight; default: the
    cluster's CPUs), `init_kwargs` (anything else `ray.init` takes) and `warm_up` (default
    true: `start()` starts a worker per CPU of each node, and waits for them, so that the
    first tasks' timeouts are not spent on starting the workers they run on).

    A task's declared needs (`metadata.resources`, `@task(resources=...)`) go to Ray:
    `cpu` as `num_cpus`, `gpu` as `num_gpus`, and any other the cluster declares
    (`ray start --resources '{"db": 2}'`) as a custom resource.
    """

    name: ClassVar[str] = "ray"
    shares_memory: ClassVar[bool] = False

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        max_workers: int | None = None,
        init_kwargs: dict[str, Any] | None = None,
        warm_up: bool = True,
    ) -> None:
        check_count("num_cpus", num_cpus)
        check_count("max_workers", max_workers)
        if address is not None and num_cpus is not None:
            raise ValueError(
                "num_cpus is for a local Ray; leave it out when connecting to an address"
            )
        self.address = address
        self.num_cpus = num_cpus
        self.runtime_env: dict[str, Any] = dict(runtime_env or {})
        self.max_workers = max_workers
        self.init_kwargs: dict[str, Any] = dict(init_kwargs or {})
        self.warm_up = warm_up
        self.connected = False
        """Whether the runner holds its share of the process's connection to Ray."""
        self.cluster_cpus: int | None = None
        """The cluster's CPUs, once connected."""
        self.declared: dict[str, float] = {}
        """The cluster's resources, once connected."""
        self._lock = threading.Lock()
        self._calls = 0  # `calling_ray` blocks under way
        self._no_calls = threading.Condition(self._lock)
        self._remote: Any = None  # `execute` as a Ray remote function
        self._plain: Any = None  # the same with the options every task has
        self._running: set[RayTaskRun] = set()
        self._ended: list[RayTaskRun | None] = []  # runs whose status arrived, to settle
        self._more = threading.Event()  # set when `_ended` has runs
        self._settler: threading.Thread | None = None
        self._heads: dict[Callable[..., Any], bytes] = {}  # function -> pickled

    @property
    def max_concurrency(self) -> int | None:
        """`max_workers`, else the cluster's CPUs (once connected): more would only wait
        in Ray's queue with their timeouts running."""
        return self.max_workers if self.max_workers is not None else self.cluster_cpus

    # -- connecting ---------------------------------------------------------------------

    @contextlib.contextmanager
    def calling_ray(self) -> Iterator[bool]:
        """Around calls to Ray from a thread other than the one that shuts the runner down
        (a halt from the deadline watcher): gives whether the runner is connected, and
        keeps `shutdown` from ending the connection until the block is over. Ray ends the
        whole process when it is called after `ray.shutdown()`."""
        with self._lock:
            connected = self.connected
            if connected:
                self._calls += 1
        try:
            yield connected
        finally:
            if connected:
                with self._lock:
                    self._calls -= 1
                    self._no_calls.notify_all()

    def start(self) -> None:
        """Connect to Ray (or start the local Ray) before the run's first task."""
        with self._lock:
            if self.connected:
                return
            from opus_plugin_ray.modules import user_modules

            settings = Settings(self.address, self.num_cpus, self.runtime_env, self.init_kwargs)
            connect(settings, user_modules())
            self.connected = True
            import ray

            from opus_plugin_ray.worker import execute

            self._remote = ray.remote(execute)
            self._plain = self._remote.options(**_OPTIONS)
            self.declared = dict(ray.cluster_resources())  # type: ignore[no-untyped-call]
            self.cluster_cpus = int(self.declared.get("CPU", 0)) or None
            self._settler = threading.Thread(target=self._settle, name="opus-ray", daemon=True)
            self._settler.start()
            if self.warm_up:
                self._start_workers()

    def _start_workers(self) -> None:
        """Start a worker per CPU of every node of the cluster (Ray starts them per job,
        with the job's runtime environment), and wait for them: a task's timeout counts
        from `submit`, and should not be spent on starting the worker it runs on."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        head = dumps_work(Work(os.getpid, (), {}, "opus-ray-warm-up"))
        started = []
        for node in ray.nodes():  # type: ignore[no-untyped-call]
            cpus = int(node.get("Resources", {}).get("CPU", 0)) if node.get("Alive") else 0
            place = NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
            remote = self._remote.options(**_OPTIONS, scheduling_strategy=place)
            started += [remote.remote(False, head, None)[0] for _ in range(cpus)]
        if started:
            ray.wait(started, num_returns=len(started), timeout=WARM_UP, fetch_local=False)

    def shutdown(self, wait: bool = True) -> None:
        """Wait for the runs still running (or, without `wait`, kill them), then give up
        the connection: a local Ray this runner started stops with the last runner."""
        super().shutdown(wait)
        with self._lock:
            if not self.connected:
                return
            running = list(self._running)
        if wait:
            for run in running:
                run.wait()
        else:
            for run in running:
                run.stop()
        with self._lock:
            self.connected = False
            self._heads.clear()
            settler, self._settler = self._settler, None
            self._no_calls.wait_for(lambda: not self._calls)  # each ends within HALT_GRACE
        self._arrived(None)
        if settler is not None:
            settler.join(HALT_GRACE)
        disconnect()

    # -- submitting ---------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Start `fn(*args, **kwargs)` (one `Work`, from the engine or `@task`) on the cluster.

        Runs of this runner among the arguments, even inside lists, tuples, sets and
        dicts, travel as their values' `ObjectRef`s (see `input_handle`).
        """
        from opus_plugin_ray.worker import InputCollector

        work = Work.of(fn, *args, **kwargs)
        self.start()
        run = RayTaskRun(work.name, self, remote=work.kind == "function")
        head = self._head(work.fn)
        with InputCollector() as collected:
            if head is None:
                head, row = dumps_work(work), None
            else:
                row = dumps_work((work.args, work.kwargs))
        inputs = collected.inputs
        if inputs:
            run.inputs = tuple(given.run for given in inputs if given.run is not None)
        options = _place(work.resources, self.declared) if work.resources else None
        self._start(run, options, head, row, [given.ref for given in inputs])
        return run

    def _head(self, fn: Callable[..., Any]) -> bytes | None:
        """`fn` pickled (with no keyword arguments), once, for a module-level function; None
        for anything else (a closure, a wrapper made per call), which travels pickled with
        each task's arguments. Workers unpickle a function they were sent before once."""
        if not isinstance(fn, types.FunctionType) or "<" in fn.__qualname__:
            return None
        found = self._heads.get(fn)
        if found is None:
            found = self._heads[fn] = dumps_work((fn, {}))
        return found

    def submit_map(
        self, fn: Callable[..., Any], iterables: list[list[Any]], kwargs: dict[str, Any]
    ) -> list[BaseTaskRun]:
        """Start `fn(*row, **kwargs)` for each row of `zip(*iterables)` at once: the function
        and `kwargs` pickled once, into the object store (a worker unpickles them once), each
        row on its own."""
        import ray

        from opus_plugin_ray.worker import InputCollector

        self.start()
        name = run_name(fn)
        rows = list(zip(*iterables, strict=True))
        if not rows:
            return []
        with InputCollector() as shared:
            head = dumps_work((fn, kwargs))
        if shared.found:  # runs among the keyword arguments: they travel with each row
            head, each = dumps_work((fn, {})), kwargs
        else:
            each = {}
        # Sent once to the object store when big: each row's task would carry it otherwise.
        head_ref = ray.put(head) if len(head) > INLINE else head
        runs: list[BaseTaskRun] = []
        for row in rows:
            run = RayTaskRun(name, self, remote=True)
            with InputCollector() as collected:
                packed = dumps_work((row, each))
            inputs = collected.inputs
            if inputs:
                run.inputs = tuple(given.run for given in inputs if given.run is not None)
            self._start(run, None, head_ref, packed, [given.ref for given in inputs])
            runs.append(run)
        return runs

    def _start(
        self,
        run: RayTaskRun,
        options: dict[str, Any] | None,
        head: Any,
        row: bytes | None,
        inputs: list[Any],
    ) -> None:
        """Call `execute` on the cluster for `run`, and follow its status."""
        remote = self._plain if not options else self._remote.options(**_OPTIONS, **options)
        status_ref, value_ref = remote.remote(run.remote, head, row, *inputs)
        run.status_ref, run.value_ref = status_ref, value_ref
        with self._lock:
            self._running.add(run)
        ended = run.ended = status_ref.future()
        ended.add_done_callback(lambda _: self._arrived(run))
        if run.done():  # stopped while it was being submitted
            run.halt()

    def input_handle(self, run: BaseTaskRun) -> Any:
        """What stands for `run` (a function task of this runner) in another task's
        arguments: its value's `ObjectRef`, wrapped (`opus_plugin_ray.worker.RayInput`);
        None for any other run, whose value opus passes instead."""
        if (
            not isinstance(run, RayTaskRun)
            or run.runner is not self
            or not run.remote
            or run.value_ref is None
        ):
            return None
        from opus_plugin_ray.worker import RayInput

        return RayInput(run.value_ref, run)

    # -- ending -------------------------------------------------------------------------

    def _arrived(self, run: RayTaskRun | None) -> None:
        """In Ray's thread: `run`'s status arrived (None: the runner shuts down). The settling
        thread is woken once per batch, not once per run: a wake-up costs the thread that
        submits tasks the interpreter lock."""
        with self._lock:
            self._ended.append(run)
            wake = len(self._ended) == 1
        if wake:
            self._more.set()

    def _settle(self) -> None:
        """Finish runs as their statuses arrive, a batch at a time (in this thread, not Ray's:
        finishing a run calls its done callbacks, which may submit more work)."""
        while True:
            self._more.wait()
            with self._lock:
                batch, self._ended = self._ended, []
                self._more.clear()
            for run in batch:
                if run is None:
                    return
                try:
                    self._conclude(run)
                except Exception as exc:  # a run left running would hang whoever waits
                    run.finish(exception=exc)

    def _conclude(self, run: RayTaskRun) -> None:
        """Finish `run`, whose status has arrived, after its inputs (so that a run given a
        failed one reports `UpstreamFailedError` naming it)."""
        for given in run.inputs:
            if isinstance(given, RayTaskRun) and given.status is None and given.ended is not None:
                if given.ended.done():
                    self._conclude(given)
        with self._lock:
            self._running.discard(run)
        if run.done():
            return
        assert run.ended is not None
        try:
            data = run.ended.result()
        except Exception as exc:  # cancelled, or its worker or node died
            run.finish(exception=_lost(run, exc))
            return
        import pickle

        try:
            ok, payload, attempts, said = pickle.loads(data)
        except Exception as exc:
            run.finish(exception=OpusError(f"the status of task {run.name!r} is unreadable: {exc}"))
            return
        replay(said)
        if not ok:
            run.finish(exception=payload)
        elif run.remote:
            run.finish(value=Attempted(None, attempts))  # the value stays on the cluster
        else:
            run.finish(value=payload)

    def __repr__(self) -> str:
        return f"<RayRunner on {self.address or 'a local Ray'}>"


def _lost(run: RayTaskRun, error: BaseException) -> BaseException:
    """What a run ends with when Ray could not run its task to the end."""
    kind = type(error).__name__
    if kind == "TaskCancelledError":
        return TaskCancelledError(f"task run {run.instance_name} was cancelled on the cluster")
    return RayTaskLostError(f"Ray lost task {run.name!r}: {kind}: {error}")


def replay(said: Iterable[tuple[str, Any]]) -> None:
    """Write what a task printed and logged on a worker here, in the driver: its output
    to `sys.stdout` and `sys.stderr`, its log records to the loggers of their names."""
    import logging

    for stream, what in said:
        if stream == "log":
            record = logging.makeLogRecord(what)
            logging.getLogger(record.name).handle(record)
        else:
            target = sys.stdout if stream == "stdout" else sys.stderr
            target.write(what)
    for target in (sys.stdout, sys.stderr):
        try:
            target.flush()
        except (OSError, ValueError):
            pass


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """The `ray` runner."""
    return [RayRunner]
