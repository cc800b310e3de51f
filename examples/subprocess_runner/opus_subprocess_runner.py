"""An example runner plugin: each task runs in a fresh `python` process (`"subprocess"`).

It is the worked example of docs/runners.md, and it uses only the public runner
contract: `Runner.submit` receives a `Work`, `opus_core.runners.remote` carries the
work there and its outcome (a value, or an exception with its traceback) back, and
the run handle calls `finish` when the process ends and kills it in `halt`.

Register it with an entry point (`[project.entry-points.opus] subprocess =
"opus_subprocess_runner"`) and choose it in `opus.toml`::

    [opus]
    runner = "subprocess"

    [runners.subprocess]
    max_workers = 4
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from opus_core import OpusError, hookimpl
from opus_core.runners import BaseTaskRun, Runner, Work
from opus_core.runners.base import check_count
from opus_core.runners.remote import dumps_work, loads_work, read_outcome, run_work

OPUS_PLUGIN_API_REQUIRES = ">=1.0,<2"


class SubprocessRun(BaseTaskRun):
    """One task's `python` process; `halt()` kills it and whatever it started."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], folder: Path) -> None:
        super().__init__(name)
        self.process = process
        self.folder = folder
        threading.Thread(target=self.follow, name=f"opus-{name}", daemon=True).start()

    def follow(self) -> None:
        """Wait for the process to end, then finish the run with what it sent back."""
        code = self.process.wait()
        outcome = self.folder / "outcome"
        try:
            if outcome.exists():
                ok, payload = read_outcome(outcome.read_bytes(), self.name)
                if ok:
                    self.finish(value=payload)
                else:
                    self.finish(exception=payload)
            else:
                self.finish(
                    exception=OpusError(
                        f"the process of task {self.name!r} exited with code {code} "
                        "without sending back a result"
                    )
                )
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def halt(self) -> None:
        """Kill the task's process group, and wait until it is gone."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


class SubprocessRunner(Runner):
    """Runs each task in a new `python` process (`"subprocess"`).

    Options: `python`, the interpreter (default: the one running opus), and
    `max_workers`, how many tasks of a graph run at once (default: the CPU count).
    """

    name: ClassVar[str] = "subprocess"
    shares_memory: ClassVar[bool] = False  # the work sees copies: state writes come back

    def __init__(self, python: str = sys.executable, max_workers: int | None = None) -> None:
        self.python = python
        self.max_workers = check_count("max_workers", max_workers)
        self.runs: set[SubprocessRun] = set()

    @property
    def max_concurrency(self) -> int | None:
        """`max_workers`, or the number of CPUs."""
        return self.max_workers or os.cpu_count() or 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Write the work to a folder and start `python -m opus_subprocess_runner FOLDER`."""
        work = Work.of(fn, *args, **kwargs)
        folder = Path(tempfile.mkdtemp(prefix="opus-subprocess-"))
        (folder / "work").write_bytes(dumps_work(work))
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        process = subprocess.Popen(
            [self.python, "-m", __name__, str(folder)],
            env=environment,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a process group of its own: halt() kills all of it
        )
        run = SubprocessRun(work.name, process, folder)
        self.runs.add(run)
        run.add_done_callback(self.runs.discard)
        return run

    def shutdown(self, wait: bool = True) -> None:
        """Wait for the runs (or, without `wait`, stop them)."""
        super().shutdown(wait)
        for run in list(self.runs):
            if wait:
                run.wait()
            else:
                run.stop()


def watch_parent(parent: int) -> None:
    """In the task's process: end the task's process group when opus is gone (even killed)."""
    while os.getppid() == parent:
        threading.Event().wait(0.2)
    os.killpg(0, signal.SIGKILL)


def main(folder: str) -> None:
    """In the task's process: run the work in `folder` and write its outcome beside it."""
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    work = loads_work(Path(folder, "work").read_bytes())
    outcome = run_work(work)
    partial = Path(folder, "outcome.partial")
    partial.write_bytes(outcome)
    partial.replace(Path(folder, "outcome"))  # whole, or not there at all


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """The `subprocess` runner."""
    return [SubprocessRunner]


if __name__ == "__main__":
    main(sys.argv[1])
