"""The `dask` runner: tasks run on a Dask `distributed` cluster.

With an `address` the runner connects to an existing scheduler; without one
it starts a `distributed.LocalCluster` on first use and closes it on
`shutdown()`. Each task is one `Client.submit(..., pure=False)`; its run wraps
the Dask future. A function task's value stays on the cluster until
`get_result()` asks for it, and a run passed to another task travels as its
future, so data moves from worker to worker; `map` is one `Client.map`. The
engine's attempts are batched into one `Client.map` per burst and bring their
values back as they end. Work is shipped with pickle: installed distributions must be
installed on the workers too, while the user's own modules are sent to them
(`opus_plugin_dask.modules`), and what tasks log there comes back to the
driver's log (`opus_plugin_dask.logs`).
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core import OpusError, TaskCancelledError, hookimpl
from opus_core.results import TaskStatus
from opus_core.runners.base import Attempted, BaseTaskRun, Runner, Work, check_count, run_name
from opus_core.runners.remote import portable_exception

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

__version__ = "0.1.0"


def _run_pickled(blob: bytes) -> Any:
    """Run the `(function, arguments)` pickled in `blob` (on a worker)."""
    import cloudpickle

    function, arguments = cloudpickle.loads(blob)
    try:
        return function(*arguments)
    except Exception as exc:  # its traceback, as formatted here, goes with it
        portable = portable_exception(exc)
        if portable is exc:
            raise
        raise portable from None


class DaskConnectionError(OpusError):
    """The scheduler at the configured address could not be reached."""


class DaskWorkerSetupError(OpusError):
    """The workers could not set up what opus installs on them (modules, log forwarding)."""


def _apply(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`fn(*args, **kwargs)`: how keywords that `Client.submit` would take for its own
    (`key`, `retries`, `priority`, ...) reach the task function."""
    return fn(*args, **kwargs)


def _apply_row(fn: Callable[..., Any], kwargs: dict[str, Any], *row: Any) -> Any:
    """`fn(*row, **kwargs)`: the same for `Client.map`."""
    return fn(*row, **kwargs)


def _unwrap(value: Any) -> Any:
    """The value inside an `Attempted` (what a task with retries returns), on a worker."""
    return value.value if isinstance(value, Attempted) else value


@functools.cache
def _dask_keywords(method: str) -> frozenset[str]:
    """The keyword arguments `Client.submit` or `Client.map` keeps for itself."""
    import inspect

    from distributed import Client

    parameters = inspect.signature(getattr(Client, method)).parameters.values()
    return frozenset(
        p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


def _may_wrap(fn: Callable[..., Any]) -> bool:
    """Whether `fn` may return an `Attempted`: what `@task` wraps a function in is not a
    plain function (a function, a builtin or a method is what it passes as it is)."""
    return not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, types.MethodType))


class DaskTaskRun(BaseTaskRun):
    """A run on the cluster, wrapping its `distributed.Future` (`.future`).

    The engine's attempts bring their values to the driver as they end. A
    function task's value stays on the cluster, held by the future (kept as long
    as the run), until `get_result()` fetches it; passed to another task, the
    run travels as that future. `get_result(timeout)` waits at most `timeout`
    seconds for the run to end; fetching a value that is ready is not timed.
    """

    def __init__(
        self,
        name: str,
        runner: DaskRunner | None = None,
        remote: bool = False,
        wrapped: bool = False,
    ) -> None:
        self._wrapped = wrapped  # the work returns Attempted(value, attempts)
        self._attempts_known = not wrapped
        super().__init__(name)
        self.future: Future | None = None
        self.key: str | None = None
        self._runner = runner
        self._remote = remote  # the value stays on the cluster until asked for
        self._fetched = False
        self._value: Any = None  # the value fetched from the cluster
        self._handle: Future | None = None  # what dependents are given, when not `future`

    @property  # type: ignore[override]
    def attempts(self) -> int:
        """How many attempts the run took (for a task with retries, known with its value)."""
        if not self._attempts_known and self.status is TaskStatus.SUCCEEDED:
            try:
                self._fetch()
            except Exception:  # the value is lost: the count with it
                self._attempts_known = True
        return self._attempts

    @attempts.setter
    def attempts(self, value: int) -> None:
        self._attempts = value

    def _fetch(self) -> None:
        """Bring the value from the cluster (once)."""
        if self._fetched or self.future is None:
            return
        value = self.future.result()
        if self._wrapped and isinstance(value, Attempted):
            self._attempts, value = value.attempts, value.value
        self._attempts_known = True
        self._value = value
        self._fetched = True

    def get_result(self, timeout: float | None = None, raise_exceptions: bool = True) -> Any:
        """The task's value, fetched from the cluster the first time it is asked for.

        Raises the task's exception (or returns it, with `raise_exceptions=False`),
        and `TimeoutError` if the run does not end within `timeout` seconds.
        """
        result = super().get_result(timeout, raise_exceptions)
        if not self._remote or self.exception() is not None:
            return result
        if self._fetched:
            return self._value
        try:
            self._fetch()
        except Exception as exc:  # lost with its worker, or cannot be unpickled here
            if raise_exceptions:
                raise
            return exc
        return self._value

    @classmethod
    def fetch_many(cls, runs: list[BaseTaskRun]) -> None:
        """Fetch the remote values of `runs` with one `Client.gather` per runner."""
        wanted: dict[int, list[DaskTaskRun]] = {}
        for run in runs:
            if (
                isinstance(run, DaskTaskRun)
                and run._remote
                and not run._fetched
                and run.status is TaskStatus.SUCCEEDED
                and run.future is not None
                and run._runner is not None
            ):
                wanted.setdefault(id(run._runner), []).append(run)
        for group in wanted.values():
            runner = group[0]._runner
            assert runner is not None
            try:
                values = runner.client.gather([run.future for run in group])
            except Exception:  # one is lost or will not unpickle: each says so when read
                continue
            for run, value in zip(group, values, strict=True):
                if run._wrapped and isinstance(value, Attempted):
                    run._attempts, value = value.attempts, value.value
                run._attempts_known = True
                run._value = value
                run._fetched = True

    def before_wait(self) -> None:
        """An engine's attempt still held for the runner's `flush()` is sent now: a run
        someone waits for is on its way to the cluster."""
        if self.future is None and self._runner is not None and not self.done():
            self._runner.flush()

    def halt(self) -> None:
        """Cancel the work's future (a running task runs on: Dask cannot stop it)."""
        for future in (self.future, self._handle):
            if future is not None:
                future.cancel()  # Dask cancels what depends on it too


_CONTAINERS = (list, tuple, set, frozenset, dict)


def _futures_in(value: Any) -> list[Future]:
    """The Dask futures in `value`: itself, or inside lists, tuples, sets and dicts, each
    container walked once however often it is shared (or holds itself)."""
    from distributed import Future

    found: list[Future] = []
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Future):
            found.append(item)
        elif isinstance(item, _CONTAINERS) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.items() if isinstance(item, dict) else item)
    return found


class _Lost:
    """A value that could not be fetched, and why."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _fetched(future: Future) -> Any:
    """The future's value, or `_Lost` with the error that fetching it raised."""
    try:
        return future.result()
    except Exception as exc:  # lost with its worker, cancelled meanwhile, will not unpickle
        return _Lost(exc)


def _with_remote_traceback(future: Future) -> BaseException:
    """The future's exception with the frames it had on the worker (distributed rebuilds
    them with tblib), so that a failed task's traceback shows where it failed there."""
    exc: BaseException = future.exception()
    try:
        remote = future.traceback()
    except Exception:  # no traceback to be had: the local one, as it is
        return exc
    if remote is not None and exc.__traceback__ is None:
        exc = exc.with_traceback(remote)
    return exc


class DaskRunner(Runner):
    """Runs tasks on a Dask cluster (`"dask"`).

    Options: `address` (a scheduler such as `tcp://host:8786`; none: a local
    cluster for this runner), `n_workers`, `threads_per_worker` and `processes`
    for the local cluster, `cluster_kwargs` and `client_kwargs` passed on to
    `LocalCluster` and `Client`, `connect_timeout` in seconds, and
    `no_workers_warning`: when tasks have waited that many seconds (default 30)
    on a cluster with no worker, one line on stderr names the scheduler, and the
    tasks go on waiting for a worker to join.

    A task's declared needs (`metadata.resources`, `@task(resources=...)`) that the
    cluster's workers declare as Dask worker resources (`dask worker --resources
    "gpu=1"`, or `cluster_kwargs = { resources = { gpu = 1 } }`) go to Dask too, which
    then runs the task only on a worker with that much free.
    """

    name: ClassVar[str] = "dask"
    shares_memory: ClassVar[bool] = False

    def __init__(
        self,
        address: str | None = None,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        cluster_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        connect_timeout: float = 10.0,
        no_workers_warning: float = 30.0,
    ) -> None:
        check_count("n_workers", n_workers)
        if not no_workers_warning > 0:
            raise ValueError(f"no_workers_warning must be above 0, got {no_workers_warning!r}")
        check_count("threads_per_worker", threads_per_worker)
        if address is not None and (n_workers or threads_per_worker or cluster_kwargs):
            raise ValueError(
                "n_workers, threads_per_worker and cluster_kwargs are for a local "
                "cluster; leave them out when connecting to an address"
            )
        self.address = address
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        self.cluster_kwargs: Mapping[str, Any] = dict(cluster_kwargs or {})
        self.client_kwargs: Mapping[str, Any] = dict(client_kwargs or {})
        self.connect_timeout = connect_timeout
        self.no_workers_warning = no_workers_warning
        self.cluster: LocalCluster | None = None
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._runs: dict[str, DaskTaskRun] = {}
        self._buffer: list[tuple[DaskTaskRun, str, bytes]] = []
        # In every key: tells this runner's tasks apart on a cluster shared with others.
        self._tag = os.urandom(8).hex()
        self._numbers = itertools.count()
        self._shipped: dict[str, str] = {}  # module name -> digest the workers have
        self._modules_seen = 0  # len(sys.modules) when the user's modules were last looked for
        self._plugins: list[str] = []
        self._shipping = threading.Lock()
        # The runs whose futures were handed to other submissions, by the futures' keys.
        self._handed: weakref.WeakValueDictionary[str, DaskTaskRun] = weakref.WeakValueDictionary()
        self._completed: Any = None  # a distributed.as_completed following the futures
        self._more = threading.Event()  # set when futures are added to `_completed`
        self._unwatched: list[Future] = []  # submitted, not yet added to `_completed`
        self._declared: frozenset[str] | None = None  # the workers' resources, once looked up

    @property
    def client(self) -> Client:
        """The `distributed.Client`, connecting (or starting the local cluster) on first use."""
        with self._lock:
            if self._client is None:
                client = self._connect()
                try:
                    self._prepare_workers(client)
                except BaseException:
                    self._close(client, self.cluster)
                    self.cluster = None
                    raise
                self._client = client
            return self._client

    def _connect(self) -> Client:
        from distributed import Client, LocalCluster

        if self.address is not None:
            try:
                return Client(self.address, timeout=self.connect_timeout, **self.client_kwargs)
            except (OSError, TimeoutError) as exc:
                raise DaskConnectionError(
                    f"cannot connect to the Dask scheduler at {self.address}: {exc}; "
                    "check that `dask scheduler` runs there and the address is right"
                ) from None
        options: dict[str, Any] = {
            "processes": self.processes,
            "dashboard_address": ":0",
            "silence_logs": 50,  # logging.CRITICAL: task failures are opus's to report
        }
        if self.n_workers is not None:
            options["n_workers"] = self.n_workers
        if self.threads_per_worker is not None:
            options["threads_per_worker"] = self.threads_per_worker
        options.update(self.cluster_kwargs)
        self.cluster = LocalCluster(**options)
        return Client(self.cluster, **self.client_kwargs)

    def _prepare_workers(self, client: Client) -> None:
        """Install on the workers what opus needs there: log forwarding and the user's modules."""
        from opus_plugin_dask.logs import ForwardLogs, replay

        topic = f"opus-logs-{self._tag}"
        client.subscribe_topic(topic, replay)
        self._register(client, ForwardLogs(topic, self._tag), topic)
        self._ship_modules(client)

    def _register(self, client: Client, plugin: Any, name: str) -> None:
        """Register a Dask plugin; a worker plugin is remembered, to unregister at shutdown."""
        try:
            client.register_plugin(plugin, name=name)
        except Exception as exc:
            where = self.address or "the local cluster"
            raise DaskWorkerSetupError(
                f"the Dask workers of {where} could not set up {name}: "
                f"{type(exc).__name__}: {exc}; install opus-core and opus-plugin-dask "
                "(the versions the driver has) where the workers run"
            ) from None
        if hasattr(plugin, "teardown") and name not in self._plugins:
            self._plugins.append(name)

    def _ship_modules(self, client: Client) -> None:
        """Send the workers the user's own modules, if any is new or changed since last time."""
        from opus_plugin_dask.modules import ProjectModules, SchedulerModules, user_modules

        with self._shipping:
            self._modules_seen = len(sys.modules)
            modules = user_modules()
            versions = {m.name: m.digest for m in modules}
            if all(self._shipped.get(name) == digest for name, digest in versions.items()):
                return
            # The scheduler unpickles the tasks' arguments, the workers run them. One worker
            # plugin holds every module: registered again under its name, it replaces the
            # one before. The scheduler's is named by its contents, as Dask cannot remove it.
            workers = ProjectModules(modules)
            self._register(client, SchedulerModules(modules), f"opus-modules-{workers.digest}")
            self._register(client, workers, f"opus-modules-{self._tag}")
            self._shipped = versions

    def _ship_new_modules(self, client: Client) -> None:
        """Ship modules imported since the last look (a cheap check when nothing was)."""
        if len(sys.modules) != self._modules_seen:
            self._ship_modules(client)

    def _key(self, group: str) -> str:
        # Dask groups statistics by the part before the first "-": tasks of one kind share it.
        return f"{group}-{self._tag}{next(self._numbers):016x}"

    def start(self) -> None:
        """Connect to the scheduler (or start the local cluster) before the run's first task."""
        self.client  # noqa: B018 - connecting is the point

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Hand `fn(*args, **kwargs)` to `Client.submit` (pure=False).

        Dask futures among the arguments (what `input_handle` gave for runs passed
        as inputs), even inside lists, tuples, sets and dicts, are resolved by Dask
        on the worker. The engine's attempts are held for `flush()`.
        """
        work = Work.of(fn, *args, **kwargs)
        name = work.name
        key = self._key(work.kind if work.kind != "function" else name)
        placed = self._placed(work.resources) if work.resources else None
        if work.kind != "function":  # an engine's attempt: its value comes to the driver
            import cloudpickle

            run = DaskTaskRun(name, self)
            if placed:  # on a worker that has them: submitted alone, with its needs
                blob = cloudpickle.dumps((work.fn, work.args))
                client = self.client
                self._ship_new_modules(client)
                future = client.submit(_run_pickled, blob, key=key, pure=False, resources=placed)
                self._track(client, [(run, key, future)])
                return run
            # Sent as bytes, so the scheduler passes them on without unpickling them, and
            # held until `flush()` so that a burst of attempts is one `client.map`.
            with self._lock:
                self._buffer.append((run, key, cloudpickle.dumps((work.fn, work.args))))
            return run
        fn, args, kwargs = work.fn, work.args, work.kwargs
        client = self.client
        self._ship_new_modules(client)
        run = DaskTaskRun(name, self, remote=True, wrapped=_may_wrap(fn))
        nested = any(isinstance(v, _CONTAINERS) for v in (*args, *kwargs.values()))
        futures = _futures_in((args, kwargs) if nested else (*args, *kwargs.values()))
        if self._handed and futures:
            run.inputs = self._input_runs(futures)  # known before the work can end
        if nested and not futures:
            import cloudpickle

            # Pickled here, whole: Dask walks containers in arguments once per path, which
            # a shared or self-holding one turns into forever; pickle keeps them as they are.
            blob = cloudpickle.dumps((_apply, (fn, args, kwargs)))
            future = client.submit(_run_pickled, blob, key=key, pure=False)
        elif kwargs and not _dask_keywords("submit").isdisjoint(kwargs):
            future = client.submit(_apply, fn, args, kwargs, key=key, pure=False)
        elif placed:
            future = client.submit(_apply, fn, args, kwargs, key=key, pure=False, resources=placed)
        else:
            future = client.submit(fn, *args, key=key, pure=False, **kwargs)
        self._track(client, [(run, key, future)])
        return run

    def _placed(self, needs: Mapping[str, float]) -> dict[str, float]:
        """The part of a task's `needs` that the cluster's workers declare as Dask worker
        resources (looked up when the first task with needs is submitted): Dask then runs
        the task only on a worker with that much free."""
        if self._declared is None:
            workers = self.client.scheduler_info().get("workers", {})
            self._declared = frozenset(
                name for worker in workers.values() for name in (worker.get("resources") or {})
            )
        return {name: need for name, need in needs.items() if name in self._declared}

    def submit_map(
        self, fn: Callable[..., Any], iterables: list[list[Any]], kwargs: dict[str, Any]
    ) -> list[BaseTaskRun]:
        """Start `fn(*row, **kwargs)` for each row of `zip(*iterables)` with one `Client.map`."""
        client = self.client
        self._ship_new_modules(client)
        name = group = run_name(fn)
        count = len(iterables[0]) if iterables else 0
        wrapped = _may_wrap(fn)
        runs = [DaskTaskRun(name, self, remote=True, wrapped=wrapped) for _ in range(count)]
        if not runs:
            return []
        keys = [self._key(group) for _ in range(count)]
        if self._handed:
            for run, row in zip(runs, zip(*iterables, strict=True), strict=True):
                run.inputs = self._input_runs(_futures_in((row, kwargs)))
        if kwargs and not _dask_keywords("map").isdisjoint(kwargs):
            futures = client.map(
                _apply_row, [fn] * count, [kwargs] * count, *iterables, key=keys, pure=False
            )
        else:
            futures = client.map(fn, *iterables, key=keys, pure=False, **kwargs)
        self._track(client, list(zip(runs, keys, futures, strict=True)))
        return list(runs)

    def input_handle(self, run: BaseTaskRun) -> Any:
        """The Dask future standing for `run`, a function task this runner started, or None.

        A task that retries (or is async, or renamed) returns its value wrapped with
        its attempt count: dependents get a small task's future that unwraps it there.
        """
        if not isinstance(run, DaskTaskRun) or run._runner is not self or run.future is None:
            return None
        if not run._remote:
            return None  # an engine attempt: its value comes to the driver anyway
        handle = run.future
        if run._wrapped:
            if run._handle is None:
                run._handle = self.client.submit(
                    _unwrap, run.future, key=self._key(f"{run.name}.value"), pure=False
                )
                if run.done() and run.exception() is not None:  # stopped meanwhile
                    run._handle.cancel()
            handle = run._handle
        self._handed[handle.key] = run
        return handle

    def _input_runs(self, futures: list[Future]) -> tuple[BaseTaskRun, ...]:
        """The runs whose futures (from `input_handle`) are among `futures`."""
        found: dict[int, BaseTaskRun] = {}
        for future in futures:
            run = self._handed.get(future.key)
            if run is not None:
                found.setdefault(id(run), run)
        return tuple(found.values())

    def flush(self) -> None:
        """Submit the attempts held since the last flush, as one `client.map`."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        batch = [item for item in batch if not item[0].done()]  # stopped before submitting
        if not batch:
            return
        client = self.client
        self._ship_new_modules(client)
        futures = client.map(
            _run_pickled,
            [blob for _, _, blob in batch],
            key=[key for _, key, _ in batch],
            pure=False,
        )
        self._track(
            client,
            [(run, key, future) for (run, key, _), future in zip(batch, futures, strict=True)],
        )

    def _track(self, client: Client, started: list[tuple[DaskTaskRun, str, Future]]) -> None:
        """Follow the futures of runs just submitted, to finish each run when its future ends."""
        with self._lock:
            for run, key, future in started:
                run.future, run.key = future, key
                self._runs[key] = run
            completed = self._completed
            if completed is None:
                from distributed import as_completed

                completed = self._completed = as_completed(loop=client.loop)
                threading.Thread(
                    target=self._watch, args=(client, completed), name="opus-dask", daemon=True
                ).start()
                threading.Thread(
                    target=self._watch_workers,
                    args=(client, completed),
                    name="opus-dask-workers",
                    daemon=True,
                ).start()
            # Handed to the client's event loop in batches: one wake-up for a burst of tasks.
            wake = not self._unwatched
            self._unwatched.extend(future for _, _, future in started)
        for run, _, future in started:
            if run.done():  # stopped while being submitted
                future.cancel()
        if wake:
            client.loop.add_callback(self._follow, completed)

    def _follow(self, completed: Any) -> None:
        """On the client's event loop: add the futures submitted since the last call."""
        with self._lock:
            futures, self._unwatched = self._unwatched, []
        completed.update(futures)
        self._more.set()

    def _watch(self, client: Client, completed: Any) -> None:
        """Finish runs as their futures end, a batch at a time (`distributed.as_completed`).

        `Future.add_done_callback` would do, but it runs every callback through a
        thread pool of its own, a hop per task that costs about a fifth of a
        graph's time on a small machine; `as_completed` waits on the client's
        event loop and hands over whatever ended together.
        """
        while True:
            for batch in completed.batches():  # ends when nothing is left to wait for
                try:
                    self._settle(client, batch)
                except Exception:  # one bad batch must not leave every later run running
                    for future in batch:
                        run = self._runs.pop(future.key, None)
                        if run is not None:
                            self._conclude_failed(run)
            self._more.wait()
            self._more.clear()
            if self._completed is not completed:
                return  # shut down

    def _watch_workers(self, client: Client, completed: Any) -> None:
        """While tasks wait: say once (on stderr) when the cluster has had no worker for
        `no_workers_warning` seconds, and again only after workers came and went."""
        import sys
        import time

        since: float | None = None
        said = False
        while self._completed is completed:
            time.sleep(min(1.0, self.no_workers_warning / 4))
            try:
                workers = len(client.nthreads()) if self._runs else 1
            except Exception:  # closing, or the scheduler is gone: the runs say so
                continue
            if workers:
                since, said = None, False
                continue
            now = time.monotonic()
            since = now if since is None else since
            if not said and now - since >= self.no_workers_warning:
                address = client.scheduler.address if client.scheduler else self.address
                print(
                    f"opus: dask: the scheduler at {address} has had no worker for "
                    f"{now - since:.0f}s; {len(self._runs)} task(s) wait for one to join",
                    file=sys.stderr,
                    flush=True,
                )
                said = True

    def _settle(self, client: Client, batch: list[Future]) -> None:
        """Hand finished futures to their runs, fetching the engine's values many at a time.

        One `gather` per batch of finished futures instead of one round trip each is
        what keeps the runner's overhead near that of bare `client.submit`.
        """
        ended = [(run, f) for f in batch if (run := self._runs.pop(f.key, None)) is not None]
        # Only the engine's attempts bring their values: function tasks' stay remote.
        finished = [f for run, f in ended if f.status == "finished" and not run._remote]
        try:
            results = client.gather(finished) if finished else []
        except Exception:  # a result lost with its worker: take them one by one
            results = [_fetched(f) for f in finished]
        by_key = dict(zip((f.key for f in finished), results, strict=True))
        for run, future in ended:
            if future.status == "finished":
                value = by_key.get(future.key)
                if isinstance(value, _Lost):
                    run.finish(exception=value.error)
                else:
                    run.finish(value=value)
            else:
                self._conclude_failed(run)

    def _conclude_failed(self, run: DaskTaskRun) -> None:
        """Finish a run whose future failed or was cancelled, its unfinished inputs first.

        Dask passes an input's failure (or cancellation) on to what depends on it;
        finishing the input first is what makes the dependent report
        `UpstreamFailedError` naming it rather than the input's own exception.
        """
        chain: list[DaskTaskRun] = []
        stack = [run]
        while stack:
            current = stack.pop()
            chain.append(current)
            for given in current.inputs:
                if (
                    isinstance(given, DaskTaskRun)
                    and given.status is None
                    and given.future is not None
                    and given.future.done()
                ):
                    stack.append(given)
        for current in reversed(chain):  # inputs before what they fed
            if current.key is not None:
                self._runs.pop(current.key, None)
            future = current.future
            assert future is not None
            if future.status == "finished":
                current.finish(value=None)  # a remote value, fetched when asked for
            elif future.status == "cancelled":
                message = f"task run {current.instance_name} was cancelled"
                current.finish(exception=TaskCancelledError(message))
            else:
                try:
                    error = _with_remote_traceback(future)
                except Exception as exc:  # nothing to be had from the cluster but this
                    error = exc
                current.finish(exception=error)

    def shutdown(self, wait: bool = True) -> None:
        """Close the client, and the local cluster if this runner started it."""
        super().shutdown(wait)
        with self._lock:
            self._completed = None
            self._more.set()
            client, self._client = self._client, None
            cluster, self.cluster = self.cluster, None
            plugins, self._plugins = self._plugins, []
            self._shipped = {}
        if client is not None and cluster is None:
            # A cluster that outlives the run: take back what this runner installed on it.
            try:
                for name in plugins:
                    client.unregister_worker_plugin(name)
                client.unsubscribe_topic(f"opus-logs-{self._tag}")
            except Exception:  # the scheduler is gone: so is what was installed there
                pass
        self._close(client, cluster)

    @staticmethod
    def _close(client: Client | None, cluster: LocalCluster | None) -> None:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def __repr__(self) -> str:
        where = self.address or "a local cluster"
        return f"<DaskRunner on {where}>"


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """The `dask` runner."""
    return [DaskRunner]
