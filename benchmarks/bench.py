"""opus against its baselines, in one run: prints a table of medians and ratios.

    python3 dev.py bench [--quick] [--only N,N]

Each row times opus and a baseline in the same process run (this machine is
noisy, so compare ratios) and reports the median of several repetitions.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import io
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peers import spread  # min/median/max, shared with benchmarks/peers.py

from opus_core import (
    KeyValueStore,
    LoggerWrapper,
    RunList,
    StatePersistence,
    Task,
    TaskProcessor,
    Tasks,
    task,
)
from opus_core.runners import Runner

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUIET = LoggerWrapper("ERROR")


@dataclass
class Row:
    number: str
    name: str
    opus: str
    baseline: str
    ratio: str
    target: str
    met: str


ROWS: list[Row] = []
FULL = False


def interleaved(
    fns: tuple[Callable[[], float | None], ...],
    repeat: int,
    collect: bool = True,
    warmup: int = 0,
) -> list[float]:
    """The median of `repeat` timings of each of `fns`, timed in turns (one of each per round).

    Each `fn` returns its own timing, or None to be timed whole. Taking turns
    gives every side the same share of this machine's slow spells. With
    `collect`, garbage left by the previous measurement is collected first, so
    it is not this one's cost; measurements of a few milliseconds go without,
    since walking the whole heap just before them leaves cold caches to pay for.
    The first `warmup` rounds are not measured.
    """
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(warmup + repeat):
        for fn, measured in zip(fns, times, strict=True):
            if collect:
                gc.collect()
            start = time.perf_counter()
            own = fn()
            if round_ >= warmup:
                measured.append(own if own is not None else time.perf_counter() - start)
    return [statistics.median(measured) for measured in times]


def median(fn: Callable[[], float | None], repeat: int, collect: bool = True) -> float:
    """The median of `repeat` timings of `fn` (see `interleaved`)."""
    return interleaved((fn,), repeat, collect)[0]


def add(
    number: str,
    name: str,
    opus: str,
    baseline: str,
    ratio: float | None,
    target: str,
    met: bool | None,
) -> None:
    row = Row(
        number,
        name,
        opus,
        baseline,
        "-" if ratio is None else f"{ratio:.2f}",
        target,
        "-" if met is None else ("yes" if met else "NO"),
    )
    ROWS.append(row)
    print(
        f"  {row.number:<4} {row.name:<44} {row.opus:>14} {row.baseline:>26} {row.ratio:>8}  "
        f"{row.target:<22} {row.met}",
        flush=True,
    )


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


class Noop(TaskProcessor):
    kind = "Noop"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        return None


def build(
    n: int,
    shape: str,
    persistence: StatePersistence | None = None,
    runner: str = "sequential",
    logger: LoggerWrapper = QUIET,
) -> Tasks:
    tasks = Tasks(logger=logger, runner=runner, state_persistence=persistence)
    tasks.register_task_processor(Noop(logger=logger))
    for i in range(n):
        if shape == "independent":
            metadata: dict = {"name": f"t{i}"}
        elif shape == "chain":
            metadata = {"name": f"t{i}", "dependencies": [f"t{i - 1}"] if i else []}
        else:  # fan: a root, a wide middle layer, a sink depending on the layer by label
            if i == 0:
                metadata = {"name": "root"}
            elif i == n - 1:
                metadata = {"name": "sink", "dependencies": [{"labels": {"layer": "middle"}}]}
            else:
                metadata = {
                    "name": f"t{i}",
                    "labels": {"layer": "middle"},
                    "dependencies": ["root"],
                }
        tasks.add_task(Task("Noop", "v1", metadata=metadata))
    return tasks


# -- 1. engine overhead ---------------------------------------------------------------------


class _Lines:
    """Where log lines and the progress line go in row 1: a real file, each line flushed."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile("w+")

    def __enter__(self) -> _Lines:
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.file
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self.saved
        self.file.seek(0)
        self.file.truncate()


def engine_overhead(quick: bool) -> None:
    """10,000 independent no-op tasks on `sequential`, the `Task` objects built in the
    timing, with logging off, with the default logger at INFO writing each line to a file,
    and as `opus run` sets it up (progress line shown, per-task lines at DEBUG)."""
    from opus_core.cli.progress import Progress

    n = 10_000
    processor = Noop(logger=QUIET)
    repeat = 3 if quick else 7

    def plain() -> None:  # the same manifests built, then the processor called in a loop
        persistence = StatePersistence()
        for manifest in [Task("Noop", "v1", metadata={"name": f"t{i}"}) for i in range(n)]:
            processor.process_task(manifest, "apply", "default", KeyValueStore(), persistence)

    def engine(setting: str) -> Callable[[], float]:
        def run() -> float:
            with _Lines() as lines:
                start = time.perf_counter()
                logger = QUIET if setting == "off" else LoggerWrapper("INFO")
                tasks = build(n, "independent", logger=logger)
                if setting == "opus run":
                    manager = tasks.manager()
                    manager.register(
                        Progress(lines.file, tasks.running), name="builtin.progress", core=True
                    )
                    manager.infos["builtin.log"].plugin.success_level = "debug"  # type: ignore[attr-defined]
                built = time.perf_counter()
                assert tasks.process_context().ok
                end = time.perf_counter()
            RUN_ONLY[setting].append(end - built)
            return end - start

        return run

    settings = ("off", "INFO", "opus run")
    RUN_ONLY.update({setting: [] for setting in settings})
    timings = interleaved((plain, *(engine(s) for s in settings)), repeat=repeat, warmup=1)
    base = timings[0]
    names = {
        "off": ("logging off (ERROR)", "<= 30 µs overhead/task", 30e-6, True),
        "INFO": ("default logger at INFO, a line a task to a file", "<= 15 µs/task", 15e-6, False),
        "opus run": (
            "as `opus run`: progress shown, task lines DEBUG",
            "<= 12 µs/task",
            12e-6,
            False,
        ),
    }
    for setting, ours in zip(settings, timings[1:], strict=True):
        label, target, limit, is_overhead = names[setting]
        measured = (ours - base) / n if is_overhead else ours / n
        run_only = statistics.median(RUN_ONLY[setting][-repeat:]) / n
        add(
            "1",
            f"10,000 no-ops, build + run, {label}",
            f"{ours / n * 1e6:.1f} µs/task",
            f"build + plain loop {base / n * 1e6:.2f} µs/task",
            ours / base,
            target,
            measured <= limit,
        )
        add(
            "",
            "  overhead per task" if is_overhead else "  of which the run (process_context)",
            f"{measured * 1e6:.1f} µs" if is_overhead else f"{run_only * 1e6:.1f} µs/task",
            "",
            None,
            "",
            None,
        )


RUN_ONLY: dict[str, list[float]] = {}


# -- 2. scaling, and 13. memory per task ------------------------------------------------------

SCALE_CHILD = """
import json, resource, sys, time
from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks


def rss_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


class Noop(TaskProcessor):
    kind = "Noop"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        return None


n, shape = int(sys.argv[1]), sys.argv[2]
quiet = LoggerWrapper("ERROR")
tasks = Tasks(logger=quiet, runner="sequential")
tasks.register_task_processor(Noop(logger=quiet))
base = rss_kib("VmRSS")
cpu, start = time.process_time(), time.perf_counter()
for i in range(n):
    if shape == "chain10" and i % 10:
        metadata = {"name": f"t{i}", "dependencies": [f"t{i - 1}"]}
    else:
        metadata = {"name": f"t{i}"}
    tasks.add_task(Task("Noop", "v1", metadata=metadata))
built = time.perf_counter()
report = tasks.process_context()
end = time.perf_counter()
assert report.ok and len(report) == n
print(json.dumps({
    "build": built - start, "total": end - start, "cpu": time.process_time() - cpu,
    "base_kib": base, "peak_kib": rss_kib("VmHWM"),
}))
"""

SHAPES = {"independent": "independent", "chain10": "chains of 10"}
_SCALE: dict[tuple[str, int], list[dict[str, float]]] = {}


def scale_runs(shape: str, n: int, repeat: int) -> list[dict[str, float]]:
    """`repeat` runs of build + plan + run of `n` no-op tasks of `shape` on `sequential`,
    logging off, each in a fresh interpreter (so its peak RSS is its own, above its
    imports); kept for rows 2 and 13."""
    runs = _SCALE.setdefault((shape, n), [])
    while len(runs) < repeat:
        result = subprocess.run(
            [sys.executable, "-c", SCALE_CHILD, str(n), shape],
            capture_output=True,
            text=True,
            check=True,
            cwd=tempfile.gettempdir(),
            env={**os.environ, "OPUS_DISABLE_PLUGIN_AUTOLOAD": "1"},
        )
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return runs[:repeat]


def scaling(quick: bool) -> None:
    """Build + plan + run of 100,000 and 1,000,000 no-op tasks on `sequential`, logging
    off, each size in fresh interpreters: independent tasks and chains of 10."""
    repeat = 1 if quick else 3
    for shape, label in SHAPES.items():
        totals = {}
        for n in (100_000, 1_000_000):
            runs = scale_runs(shape, n, repeat)
            totals[n] = statistics.median(r["total"] for r in runs)
            build_time = statistics.median(r["build"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            add(
                "2",
                f"{n:,} tasks, {label}, build + plan + run (ERROR)",
                fmt(totals[n]),
                f"build {fmt(build_time)}, CPU {fmt(cpu)}",
                None,
                "< 15 s" if n == 1_000_000 else "",
                totals[n] < 15 if n == 1_000_000 else None,
            )
        growth = totals[1_000_000] / totals[100_000]
        add(
            "2",
            f"{label}: time(1M) / time(100k)",
            f"{growth:.1f}",
            "linear: 10",
            None,
            "<= 11",
            growth <= 11,
        )
    dry_run(quick)


def dry_run(quick: bool) -> None:
    """`opus run --dry-run` of a 100,000-task `opus.toml` (chains of 10), timed whole."""
    n = 100_000
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "noop.py").write_text(
            "from opus_core import TaskProcessor\n\n\nclass Noop(TaskProcessor):\n"
            '    kind = "Noop"\n\n'
            "    def process_task(\n"
            "        self, task, command, context, key_value_store, state_persistence\n"
            "    ):\n"
            "        return None\n"
        )
        lines = ['[opus]\nprocessors = ["noop:Noop"]\npersistence = "memory"\n']
        for i in range(n):
            deps = f', dependencies = ["t{i - 1}"]' if i % 10 else ""
            lines.append(
                f'[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = {{ name = "t{i}"{deps} }}\n'
            )
        (root / "opus.toml").write_text("".join(lines))
        opus = BIN / "opus"
        env = {**os.environ, "OPUS_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(root)}

        def once() -> None:
            done = subprocess.run(
                [str(opus), "run", "--dry-run"], cwd=root, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr

        seconds = median(once, 1 if quick else 3, collect=False)
    add(
        "2",
        "`opus run --dry-run`, 100,000-task opus.toml",
        fmt(seconds),
        "",
        None,
        "< 5 s",
        seconds < 5,
    )


def memory(quick: bool) -> None:
    """Peak RSS per task above the imports: a fresh interpreter builds, plans and runs
    100,000 and 1,000,000 no-op tasks (logging off); its high-water mark less its RSS once
    opus is imported and the engine made, over the number of tasks."""
    repeat = 1 if quick else 3
    for shape, label in SHAPES.items():
        for n in (100_000, 1_000_000):
            runs = scale_runs(shape, n, repeat)
            per_task = statistics.median((r["peak_kib"] - r["base_kib"]) * 1024 / n for r in runs)
            add(
                "13",
                f"peak RSS per task, {n:,} tasks, {label} (ERROR)",
                f"{per_task:,.0f} B/task",
                "",
                None,
                "<= 1 KB/task",
                per_task <= 1024,
            )


# -- 3. the original engine -------------------------------------------------------------------


def original_engine(quick: bool) -> None:
    import magnum_opus.operarius as mo

    class MoNoop(mo.TaskProcessor):
        def __init__(self) -> None:
            super().__init__(api_version="v1")

        def create_action(self, task, persistence, variable_store, task_resolved_spec):  # type: ignore[no-untyped-def]
            return variable_store

    import logging

    logging.getLogger().setLevel(logging.ERROR)
    n = 100 if quick else 1_000 if FULL else 200
    for shape in ("independent", "chain"):

        def magnum(shape: str = shape) -> tuple[float, float]:
            store = mo.TaskProcessStore()
            store.register_task_processor(MoNoop())
            executor = mo.WorkflowExecutor(
                task_process_store=store,
                persistence=mo.StatePersistence(load_on_init=False),
                variable_store=mo.VariableStore(),
            )
            executor.add_workflow_step_by_hook_instance(mo.TaskProcessingHook())
            built = time.perf_counter()
            for i in range(n):
                metadata: dict = {"name": f"t{i}"}
                if shape == "chain" and i:
                    metadata["dependencies"] = [{"tasks": [f"t{i - 1}"]}]
                executor.add_task(
                    mo.Task(api_version="v1", kind="Noop", metadata=metadata, spec={})
                )
            start = time.perf_counter()
            executor.tasks.get_task_names_in_order(command="create", context="default")
            ordering = time.perf_counter() - start
            executor.execute_workflow(command="create", context="default")
            return ordering, time.perf_counter() - built

        quiet = io.StringIO()  # its "NOT IMPLEMENTED" notices, a line per task
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            ordering, total = magnum()

        def ours(shape: str = shape) -> float:  # the tasks built in the timing, as above
            start = time.perf_counter()
            tasks = build(n, shape)
            assert tasks.process_context().ok
            return time.perf_counter() - start

        mine = median(ours, 21, collect=False)  # a few ms each: many repetitions, warm
        add(
            "3",
            f"original engine, {n} {shape} tasks",
            fmt(mine),
            f"magnum-opus 3.1 {fmt(total)} (order {fmt(ordering)})",
            total / mine,
            "> 1000x faster",
            total / mine > 1000,
        )


# -- 4. @task on threadpool -------------------------------------------------------------------


def pool_and_runner(
    make_pool: Callable[[], concurrent.futures.Executor],
    make_runner: Callable[[], Runner],
    fn: Callable[[], object],
    n: int,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """`n` calls of `fn` on a `concurrent.futures` pool and as an `@task` on an opus runner,
    for `interleaved`; each side starts its pool and shuts it down inside the timing."""

    def bare() -> None:
        with make_pool() as pool:
            futures = [pool.submit(fn) for _ in range(n)]
            for future in futures:
                future.result()

    def ours() -> None:
        runner = make_runner()
        on_runner = task(runner=runner)(fn)
        runs = [on_runner() for _ in range(n)]
        for run in runs:
            run.get_result()
        runner.shutdown()

    return bare, ours


def task_threadpool(quick: bool) -> None:
    from opus_plugin_threadpool import ThreadPoolRunner

    n = 2_000 if quick else 10_000
    workers = 8

    def noop() -> None:
        return None

    bare, ours = pool_and_runner(
        lambda: concurrent.futures.ThreadPoolExecutor(workers),
        lambda: ThreadPoolRunner(max_workers=workers),
        noop,
        n,
    )
    base, mine = interleaved((bare, ours), repeat=3 if quick else 5)
    add(
        "4",
        f"@task on threadpool, {n:,} no-op calls",
        f"{mine / n * 1e6:.1f} µs/call",
        f"ThreadPoolExecutor {base / n * 1e6:.1f} µs/call",
        mine / base,
        "<= 2x",
        mine / base <= 2,
    )


# -- 5. @task on process ------------------------------------------------------------------------


def _noop() -> int:
    return 0


def _bare_child(conn) -> None:  # type: ignore[no-untyped-def]
    conn.send(_noop())
    conn.close()


def task_process(quick: bool) -> None:
    import logging

    import woflo

    # woflo logs two lines a task by default: a user pays for them, so they are still
    # formatted and written, but to /dev/null rather than over the table.
    for handler in logging.getLogger("woflo").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # kept open for the whole run

    n = 100 if quick else 200
    ctx = multiprocessing.get_context("fork")

    def bare() -> None:
        pairs = []
        for _ in range(n):
            receiver, sender = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_bare_child, args=(sender,))
            process.start()
            sender.close()
            pairs.append((process, receiver))
        for process, receiver in pairs:
            receiver.recv()
            process.join()

    def forked() -> None:
        """The floor: os.fork and a pipe per task, nothing around them."""
        children = []
        for _ in range(n):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child
                os.write(write_end, b"x")
                os._exit(0)
            os.close(write_end)
            children.append((pid, read_end))
        for pid, read_end in children:
            os.read(read_end, 1)
            os.close(read_end)
            os.waitpid(pid, 0)

    woflo_task = woflo.task(_noop)

    def with_woflo() -> None:
        runs = [woflo_task() for _ in range(n)]
        for run in runs:
            run.get_result()

    opus_task = task(runner="process")(_noop)

    def ours() -> None:
        runs = [opus_task() for _ in range(n)]
        for run in runs:
            run.get_result()

    base, fork, wf, mine = interleaved((bare, forked, with_woflo, ours), repeat=3 if quick else 5)
    add(
        "5",
        f"@task on process, {n} no-op calls",
        f"{mine / n * 1e3:.2f} ms/call",
        f"woflo 0.8.2 {wf / n * 1e3:.2f} ms/call",
        mine / wf,
        "<= 1x woflo",
        mine <= wf,
    )
    add(
        "5",
        "",
        "",
        f"multiprocessing.Process {base / n * 1e3:.2f} ms",
        mine / base,
        "<= 1.3x",
        mine / base <= 1.3,
    )
    add("5", "", "", f"bare os.fork + pipe {fork / n * 1e3:.2f} ms", mine / fork, "report", None)


# -- 6. dask ---------------------------------------------------------------------------------------


def dask_runner(quick: bool) -> None:
    from opus_plugin_dask import DaskRunner

    n = 500 if quick else 2_000
    runner = DaskRunner(n_workers=2, threads_per_worker=2)
    runner.start()
    client = runner.client
    try:

        def bare() -> None:
            futures = [client.submit(_noop, pure=False) for _ in range(n)]
            client.gather(futures)

        fn = task(runner=runner)(_noop)

        def ours() -> None:
            # Values stay on the cluster until asked for: a RunList fetches them in one
            # round trip, as client.gather does, rather than one each.
            RunList([fn() for _ in range(n)]).get_results()

        def graph() -> float:
            tasks = build(n, "independent")
            tasks.runner = runner
            start = time.perf_counter()
            assert tasks.process_context().ok
            return time.perf_counter() - start

        # Round robin: the cluster's speed drifts over a run of several seconds, and each
        # round then gives all three the same conditions.
        base, mine, graph_time = interleaved((bare, ours, graph), repeat=5)
        add(
            "6",
            f"@task on dask, {n:,} no-op calls",
            fmt(mine),
            f"client.submit {fmt(base)}",
            mine / base,
            "<= 1.5x",
            mine / base <= 1.5,
        )
        add(
            "6",
            f"graph on dask, {n:,} independent tasks",
            fmt(graph_time),
            f"client.submit {fmt(base)}",
            graph_time / base,
            "<= 1.5x",
            graph_time / base <= 1.5,
        )
    finally:
        runner.shutdown()


# -- 7. Prefect -----------------------------------------------------------------------------------

PREFECT_VENV = ROOT / ".bench" / "prefect"
PREFECT_SCRIPT = """
import os, sys, time
from prefect import flow, task

@task
def noop():
    return None

@flow
def many(n):
    futures = [noop.submit() for _ in range(n)]
    for future in futures:
        future.result()

n = int(sys.argv[1])
many(5)  # the temporary server starts here
start = time.perf_counter()
many(n)
print(time.perf_counter() - start)
"""


def prefect_environment(home: str) -> dict[str, str]:
    """The environment of a Prefect script: its own home folder, its own temporary API
    server, only errors logged, no analytics."""
    env = {
        **os.environ,
        "PREFECT_HOME": home,
        "PREFECT_LOGGING_LEVEL": "ERROR",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    return env


def prefect(quick: bool) -> None:
    """opus and Prefect 3 in turns: a round is one timing of opus's `@task` calls on
    threadpool, then one Prefect flow of the same number of submitted tasks in a process of
    its own (its temporary API server started, and warmed by a first small flow, before
    the timing)."""
    from opus_plugin_threadpool import ThreadPoolRunner

    n = 200 if quick else 1_000
    rounds = 3
    python = PREFECT_VENV / "bin" / "python"
    if not python.exists():
        add("7", "Prefect 3", "-", "not installed", None, "record why", None)
        print(
            f"       {PREFECT_VENV / 'WHY'}: " + (PREFECT_VENV / "WHY").read_text().strip()
            if (PREFECT_VENV / "WHY").exists()
            else "       run `python3 dev.py bench` to install it"
        )
        return
    runner = ThreadPoolRunner(max_workers=8)
    fn = task(runner=runner)(_noop)

    def ours() -> float:
        gc.collect()
        start = time.perf_counter()
        runs = [fn() for _ in range(n)]
        for run in runs:
            run.get_result()
        return time.perf_counter() - start

    mine: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory() as home:
        env = prefect_environment(home)
        script = Path(home) / "flow.py"
        script.write_text(PREFECT_SCRIPT)
        ours()  # warm
        for _ in range(rounds):
            mine.append(ours())
            result = subprocess.run(
                [str(python), str(script), str(n)],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if result.returncode != 0:
                runner.shutdown()
                add("7", "Prefect 3", "-", "failed to run", None, "record why", None)
                print("       " + (result.stderr.strip().splitlines() or ["?"])[-1])
                return
            theirs.append(float(result.stdout.strip().splitlines()[-1]))
    runner.shutdown()
    add(
        "7",
        f"{n:,} submitted no-op tasks, {rounds} rounds in turns",
        spread(mine, 1e6 / n, "µs/task"),
        "Prefect 3 " + spread(theirs, 1e3 / n, "ms/task"),
        statistics.median(theirs) / statistics.median(mine),
        "report ratio",
        None,
    )


# -- 8. start-up ----------------------------------------------------------------------------------


STARTUP_VENV = ROOT / ".bench" / "startup"
STARTUP_BASELINE = (
    "import pluggy, importlib.metadata; importlib.metadata.entry_points(group='opus')"
)


def startup_environment() -> Path:
    """A virtual environment with opus-core and every plugin of `plugins/` installed as users
    get them: not editable, byte-compiled by pip. The plugins' own heavy dependencies (dask,
    Ray, PyYAML, colorlog, OpenTelemetry) are left out on purpose: registration must not
    import them, and here it cannot."""
    python = STARTUP_VENV / "bin" / "python"
    sources = [ROOT, *sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))]
    digest = str(sorted((str(p), (p / "pyproject.toml").stat().st_mtime) for p in sources))
    digest += "".join(str(f.stat().st_mtime) for p in sources for f in p.glob("opus*/**/*.py"))
    stamp = STARTUP_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == digest:
        return python
    import venv

    if not python.exists():
        venv.create(STARTUP_VENV, with_pip=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    dependencies = ["pluggy>=1.5", "platformdirs>=3", "tomli>=2.0", "tomli-w>=1.0"]
    subprocess.run([*pip, *dependencies], check=True)
    subprocess.run([*pip, "--no-deps", "--force-reinstall", *map(str, sources)], check=True)
    stamp.write_text(digest)
    return python


def startup(quick: bool) -> None:
    repeat = 5 if quick else 11
    python = startup_environment()
    opus = str(python.parent / "opus")
    listed = subprocess.run([opus, "plugins", "list", "--json"], capture_output=True, text=True)
    plugins = [p["name"] for p in json.loads(listed.stdout) if not p["builtin"]]
    shipped = len(list((ROOT / "plugins").glob("*/pyproject.toml")))
    assert listed.returncode == 0 and len(plugins) == shipped and not listed.stderr, listed
    limits = {("--help",): 1.5, ("plugins", "list"): 1.5, ("--version",): 1.5}
    with tempfile.TemporaryDirectory() as empty:

        def command(*args: str) -> Callable[[], None]:
            return lambda: subprocess.run(args, cwd=empty, capture_output=True, check=True) and None

        base, *mine = interleaved(
            (
                command(str(python), "-c", STARTUP_BASELINE),
                *(command(opus, *args) for args in limits),
            ),
            repeat,
            collect=False,
            warmup=1,
        )
    for args, ours in zip(limits, mine, strict=True):
        add(
            "8",
            f"opus {' '.join(args)} ({shipped} plugins)",
            fmt(ours),
            f"pluggy+entry_points {fmt(base)}",
            ours / base,
            f"<= {limits[args]}x",
            ours / base <= limits[args],
        )


# -- 9. persistence -------------------------------------------------------------------------------


def persistence(quick: bool) -> None:
    from opus_plugin_file_persistence import FilePersistence

    n = 2_000 if quick else 10_000
    with tempfile.TemporaryDirectory(dir=ROOT / ".bench") as directory:
        files = FilePersistence(Path(directory) / "state")
        bare_directory = Path(directory) / "bare"
        bare_directory.mkdir()
        record = {"status": "succeeded", "checksum": "0" * 64, "attempts": 1, "published": {"x": 1}}

        def bare_save(name: str) -> None:
            """The floor: the same durable atomic write, with nothing around it."""
            temporary, target = bare_directory / f".{name}.tmp", bare_directory / f"{name}.json"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, json.dumps({"id": name, "state": record}).encode())
            os.fsync(fd)
            os.close(fd)
            os.replace(temporary, target)
            directory_fd = os.open(bare_directory, os.O_RDONLY)
            os.fsync(directory_fd)
            os.close(directory_fd)

        # In alternating blocks: this disk's fsync latency wanders, and both sides see it.
        ours = bare = 0.0
        block = 500
        for first in range(0, n, block):
            start = time.perf_counter()
            for i in range(first, first + block):
                files.save_object_state(f"t{i}", record)
            middle = time.perf_counter()
            for i in range(first, first + block):
                bare_save(f"t{i}")
            ours, bare = ours + middle - start, bare + time.perf_counter() - middle
        per_save, bare_per_save = ours / n, bare / n
        add(
            "9",
            f"file persistence: {n:,} durable atomic saves",
            f"{per_save * 1e3:.3f} ms/save",
            f"bare write+fsync+rename {bare_per_save * 1e3:.3f} ms",
            per_save / bare_per_save,
            "<= 1 ms/save",
            per_save <= 1e-3,
        )

        state = FilePersistence(Path(directory) / "runs")
        first = build(n, "independent", persistence=state)
        start = time.perf_counter()
        assert first.process_context().ok
        full = time.perf_counter() - start
        again = build(n, "independent", persistence=state)
        start = time.perf_counter()
        report = again.process_context(resume=True)
        resumed = time.perf_counter() - start
        assert report.ok and all(r.resumed for r in report)
        add(
            "9",
            f"resume of {n:,} tasks, all skipped",
            fmt(resumed),
            f"first run {fmt(full)}",
            resumed / full,
            "< 3 s",
            resumed < 3,
        )
    sqlite_records(quick)


def sqlite_records(quick: bool) -> None:
    """The sqlite persistence as a whole in a real run — each task's record, committed as
    the task ends, and the run's history — against a bare sqlite3 loop written as opus
    writes (one `INSERT OR REPLACE` of the record's JSON per task, each its own commit;
    WAL, synchronous NORMAL), and the file persistence's records."""
    import sqlite3

    from opus_plugin_file_persistence import FilePersistence

    from opus_core.persistence.sqlite import SqlitePersistence

    n = 2_000 if quick else 10_000
    spent = {"sqlite": 0.0, "file": 0.0, "history": 0.0}

    def timed(cls: type, key: str) -> type:
        class Timed(cls):  # type: ignore[misc, valid-type]
            def save_record(self, object_identifier: str, record: object) -> None:
                start = time.perf_counter()
                super().save_record(object_identifier, record)
                spent[key] += time.perf_counter() - start

            def save_run(self, run: dict[str, object]) -> None:
                start = time.perf_counter()
                super().save_run(run)
                spent["history"] += time.perf_counter() - start

        return Timed

    def bare_loop(path: Path) -> float:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("CREATE TABLE state (id TEXT PRIMARY KEY, data TEXT) WITHOUT ROWID")
        record = {
            "record": "opus.task-record",
            "command": "apply",
            "context": "default",
            "status": "succeeded",
            "checksum": "0" * 64,
            "attempts": 1,
            "finished_at": time.time(),
            "duration": 1e-5,
            "error": None,
            "traceback": None,
            "published": {},
        }
        start = time.perf_counter()
        for i in range(n):
            connection.execute(
                "INSERT OR REPLACE INTO state VALUES (?, ?)",
                (f"opus-run:apply:default:t{i}", json.dumps({**record, "task": f"t{i}"})),
            )
        took = time.perf_counter() - start
        connection.close()
        return took

    with tempfile.TemporaryDirectory(dir=ROOT / ".bench") as directory:
        root = Path(directory)
        ours, bares = [], []
        for round_ in range(5):  # in turns: a run of opus, then the bare loop
            spent["sqlite"] = spent["history"] = 0.0
            persistence = timed(SqlitePersistence, "sqlite")(root / f"opus-{round_}.db")
            start = time.perf_counter()
            assert build(n, "independent", persistence=persistence).process_context().ok
            whole = time.perf_counter() - start
            ours.append((spent["sqlite"] + spent["history"], spent["sqlite"], whole))
            persistence.close()
            bares.append(bare_loop(root / f"bare-{round_}.db"))
        both, records, whole = sorted(ours)[len(ours) // 2]
        bare = statistics.median(bares)
        files = timed(FilePersistence, "file")(root / "files")
        assert build(n, "independent", persistence=files).process_context().ok
        per, bare_per, file_per = both / n, bare / n, spent["file"] / n
        add(
            "9",
            f"sqlite persistence: records and history of a {n:,}-task run",
            f"{per * 1e3:.4f} ms/task",
            f"bare insert + commit {bare_per * 1e3:.4f} ms",
            per / bare_per,
            "<= 1.5x",
            per <= 1.5 * bare_per,
        )
        add(
            "9",
            "  of which the records",
            f"{records / n * 1e3:.4f} ms/task",
            f"file persistence {file_per * 1e3:.3f} ms",
            records / n / file_per,
            "report",
            None,
        )
        add(
            "9",
            f"  whole run of {n:,} no-ops on sqlite",
            f"{whole / n * 1e6:.1f} µs/task",
            "",
            None,
            "report",
            None,
        )


# -- 10, 11. function tasks that feed each other, on threadpool -------------------------------


def compose_chain(quick: bool) -> None:
    """A chain of dependent no-op calls: each run takes the previous one as its input."""
    from opus_plugin_threadpool import ThreadPoolRunner

    n = 2_000 if quick else 10_000
    workers = 8

    def step(x: int) -> int:
        return x + 1

    def bare() -> None:
        # The chain a user writes by hand, as issue 30 names it: each link's done callback
        # submits the next. A link that ended before its callback is attached would run the
        # callback nested in the thread attaching it; nested deep enough, a RecursionError
        # inside a callback (which the pool only logs) lost the chain and hung this row
        # once. So a link found ended goes on in the same loop instead of nesting.
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            last: concurrent.futures.Future[int] = concurrent.futures.Future()

            def forward(done: concurrent.futures.Future[int], link: int) -> None:
                while True:
                    value = done.result()
                    if link == n:
                        last.set_result(value)
                        return
                    done, link = pool.submit(step, value), link + 1
                    if not done.done():
                        done.add_done_callback(lambda f, link=link: forward(f, link))
                        return

            pool.submit(step, 0).add_done_callback(lambda f: forward(f, 1))
            assert last.result() == n

    def ours() -> None:
        runner = ThreadPoolRunner(max_workers=workers)
        fn = task(runner=runner)(step)
        run = fn(0)
        for _ in range(n - 1):
            run = fn(run)
        assert run.get_result() == n
        runner.shutdown()

    base, mine = interleaved((bare, ours), repeat=3 if quick else 5)
    add(
        "10",
        f"@task chain on threadpool, {n:,} dependent calls",
        f"{mine / n * 1e6:.1f} µs/link",
        f"callback chain {base / n * 1e6:.1f} µs/link",
        mine / base,
        "<= 1.5x",
        mine / base <= 1.5,
    )


def compose_map(quick: bool) -> None:
    """`map` of a no-op over many elements against `ThreadPoolExecutor.map`."""
    from opus_plugin_threadpool import ThreadPoolRunner

    n = 2_000 if quick else 10_000
    workers = 8

    def step(x: int) -> int:
        return x + 1

    def bare() -> None:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            assert sum(pool.map(step, range(n))) == n * (n + 1) // 2

    def ours() -> None:
        runner = ThreadPoolRunner(max_workers=workers)
        assert sum(task(runner=runner)(step).map(range(n)).get_results()) == n * (n + 1) // 2
        runner.shutdown()

    base, mine = interleaved((bare, ours), repeat=3 if quick else 5)
    add(
        "11",
        f"@task map on threadpool, {n:,} elements",
        f"{mine / n * 1e6:.1f} µs/element",
        f"executor.map {base / n * 1e6:.1f} µs/element",
        mine / base,
        "<= 1.3x",
        mine / base <= 1.3,
    )


# -- 12. a process pool that still kills -------------------------------------------------------

PREFECT_POOL_SCRIPT = """
import statistics, sys, time
import prefect
from prefect import flow, task
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner

@task
def noop():
    return None

n, workers, flows = (int(arg) for arg in sys.argv[1:4])

@flow(task_runner=ProcessPoolTaskRunner(max_workers=workers))
def many(n):
    futures = [noop.submit() for _ in range(n)]
    for future in futures:
        future.result()

if __name__ == "__main__":
    # One API server for the flow and its worker processes (each worker would otherwise try
    # to start an ephemeral server of its own, and time out on a busy machine).
    server = SubprocessASGIServer()
    server.start(timeout=300)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            many(workers)  # the pool's workers start here
            times = []
            for _ in range(flows):
                start = time.perf_counter()
                many(n)
                times.append(time.perf_counter() - start)
    finally:
        server.stop()
    print(prefect.__version__, statistics.median(times))
"""


def _prefect_pool(n: int, workers: int, flows: int) -> tuple[str, float] | str:
    """Prefect's `ProcessPoolTaskRunner` on `n` no-op tasks: (version, median seconds of
    `flows` flows), or why it could not be measured."""
    python = PREFECT_VENV / "bin" / "python"
    if not python.exists():
        why = PREFECT_VENV / "WHY"
        return why.read_text().strip() if why.exists() else "not installed (python3 dev.py bench)"
    with tempfile.TemporaryDirectory() as home:
        env = prefect_environment(home)
        script, out, err = (Path(home) / name for name in ("pool_flow.py", "out", "err"))
        script.write_text(PREFECT_POOL_SCRIPT)
        with out.open("w") as stdout, err.open("w") as stderr:
            # Files, not pipes, and a session of its own: what Prefect leaves running (its
            # API server) would hold pipes open, and is killed with the session afterwards.
            flow_process = subprocess.Popen(
                [str(python), str(script), str(n), str(workers), str(flows)],
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
            try:
                code = flow_process.wait(timeout=1800)
            finally:
                try:
                    os.killpg(flow_process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                flow_process.wait()
        if code != 0:
            return "failed: " + (err.read_text().strip().splitlines() or ["?"])[-1]
        version, seconds = out.read_text().strip().splitlines()[-1].split()
    return version, float(seconds)  # one flow's, or the median of several


def process_pool(quick: bool) -> None:
    """@task on the processpool runner (reused workers that stop() and timeouts kill) against
    `concurrent.futures.ProcessPoolExecutor` (which cannot kill a running task) and Prefect's
    `ProcessPoolTaskRunner`, the pools started inside the timing. Function tasks log nothing."""
    from opus_core.runners import ProcessPoolRunner

    n = 2_000 if quick else 10_000
    workers = os.cpu_count() or 1
    ctx = multiprocessing.get_context("fork")

    bare, ours = pool_and_runner(
        lambda: concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx),
        lambda: ProcessPoolRunner(max_workers=workers),
        _noop,
        n,
    )
    base, mine = interleaved((bare, ours), repeat=3 if quick else 5, warmup=1)
    add(
        "12",
        f"@task on processpool, {n:,} no-op calls",
        f"{mine / n * 1e3:.3f} ms/call",
        f"ProcessPoolExecutor {base / n * 1e3:.3f} ms",
        mine / base,
        "<= 1.5x, <= 0.15 ms",
        mine / base <= 1.5 and mine / n <= 0.15e-3,
    )
    # Prefect in turns with opus: a round is a timing of opus's calls, then one Prefect flow
    # in a process of its own (its API server and pool started, and warmed, before it).
    prefect_n = 20 if quick else 40  # Prefect takes about half a second a task here
    rounds = 3
    mine_runs: list[float] = []
    theirs_runs: list[float] = []
    version = ""
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        ours()
        mine_runs.append(time.perf_counter() - start)
        measured = _prefect_pool(prefect_n, workers, 1)
        if isinstance(measured, str):
            add("12", "", "", "Prefect ProcessPoolTaskRunner", None, ">= 5x faster", None)
            print(f"       Prefect: {measured}")
            return
        version, seconds = measured
        theirs_runs.append(seconds)
    ratio = (statistics.median(theirs_runs) / prefect_n) / (statistics.median(mine_runs) / n)
    add(
        "12",
        f"  Prefect: {prefect_n:,} tasks a flow, {rounds} rounds in turns",
        spread(mine_runs, 1e3 / n, "ms/call"),
        f"Prefect {version} " + spread(theirs_runs, 1e3 / prefect_n, "ms"),
        ratio,
        ">= 5x faster",
        ratio >= 5,
    )


# -- 14. function tasks that feed each other, on dask -------------------------------------------


def compose_lattice(quick: bool) -> None:
    """A diamond lattice of `@task` calls passing runs, against the same with `client.submit`
    futures (see compose_dask.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import compose_dask

    result = compose_dask.measure(quick)
    add(
        "14",
        f"diamond lattice on dask, {result.tasks:,} tasks",
        fmt(result.opus),
        f"client.submit futures {fmt(result.bare)}",
        result.ratio,
        f"<= {compose_dask.TARGET}x",
        result.ratio <= compose_dask.TARGET,
    )


# -- 15. peers: doit, Luigi and Dask on the same graphs, each in its own environment ----------


def peers(quick: bool) -> None:
    """opus, doit, Luigi and Dask on 10,000 independent no-op tasks and on chains of 10, each
    in a process (and a virtual environment) of its own, in turns: `benchmarks/peers.py`."""
    import peers as peer_rows

    n, rounds = (2_000, 3) if quick else (10_000, 5)

    def report(graph: str, name: str, ours: list[float], theirs: list[float]) -> None:
        add(
            "15",
            f"{graph}: opus vs {name}",
            spread(ours),
            spread(theirs),
            statistics.median(ours) / statistics.median(theirs),
            "report",
            None,
        )

    peer_rows.table(n, rounds, report)


BENCHMARKS = {
    "1": engine_overhead,
    "2": scaling,
    "3": original_engine,
    "4": task_threadpool,
    "5": task_process,
    "6": dask_runner,
    "7": prefect,
    "8": startup,
    "9": persistence,
    "10": compose_chain,
    "11": compose_map,
    "12": process_pool,
    "13": memory,
    "14": compose_lattice,
    "15": peers,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="rows to run, e.g. 1,4")
    parser.add_argument(
        "--full",
        action="store_true",
        help="row 3 with 1,000 tasks (the original engine then takes minutes)",
    )
    args = parser.parse_args()
    global FULL
    FULL = args.full
    (ROOT / ".bench").mkdir(exist_ok=True)
    print(
        f"opus benchmarks on {platform.node()}: {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    print(
        f"  {'#':<4} {'benchmark':<44} {'opus':>14} {'baseline':>26} {'ratio':>8}  "
        f"{'target':<22} met"
    )
    for key in args.only.split(","):
        BENCHMARKS[key.strip()](args.quick)
    missed = [row for row in ROWS if row.met == "NO"]
    print(f"\n{len(ROWS)} rows, {len(missed)} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
