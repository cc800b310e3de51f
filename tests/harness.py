"""Test helpers: a scripted processor whose behaviour each task's spec describes."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opus_core import LoggerWrapper, RunReport, Task, TaskProcessor, Tasks

RUNNERS = ["sequential", "process"]
PATIENCE = 30.0
"""How long a task or a test waits for something that should happen: generous, since only
a failure ever waits that long."""


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has ended)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone (ProcessLookupError), or going while its stat was read
        return False


def until(condition: Callable[[], bool], patience: float = PATIENCE) -> bool:
    """Poll `condition` until it holds or `patience` seconds pass; whether it held."""
    deadline = time.monotonic() + patience
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Scripted(TaskProcessor):
    """Does what the task's spec says, and logs every attempt to a JSON-lines file.

    spec keys: `publish` (dict to return), `sleep` (seconds), `fail` (message to
    raise), `fail_attempts` (fail the first N attempts), `save_state` (dict saved
    under the task id), `await_start` (names: wait until each has started, a barrier
    that proves tasks ran at once), `release` (a path: wait until that file exists),
    `say` (text to print, write to stderr, log through the processor's logger and
    through Python's `logging`, each with the attempt's number).
    The waits give up after `PATIENCE` seconds and go on, so that a broken order fails
    the test's assertions instead of hanging it.
    """

    kind = "Scripted"

    def __init__(self, log: Path) -> None:
        super().__init__(logger=LoggerWrapper("WARNING"))
        self.log = log

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        complete = self.log.read_text().split("\n")[:-1]  # a line still being written is left out
        return [json.loads(line) for line in complete]

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        spec = task.spec
        attempt = 1 + sum(
            1 for e in self.events() if e["task"] == task.task_id and e["event"] == "start"
        )
        self._write(
            task,
            "start",
            attempt=attempt,
            seen=dict(key_value_store.store),
            spec=spec,
            command=command,
            context=context,
        )
        if "say" in spec:
            said = f"{spec['say']} (attempt {attempt})"
            print(f"out: {said}")
            print(f"err: {said}", file=sys.stderr)
            self.logger.warning(f"opus log: {said}")
            logging.getLogger("scripted").warning(f"python log: {said}")
        time.sleep(spec.get("sleep", 0))
        if "await_start" in spec:
            waiting = set(spec["await_start"])
            until(lambda: waiting <= {e["task"] for e in self.events() if e["event"] == "start"})
        if "release" in spec:
            until(Path(spec["release"]).exists)
        if attempt <= spec.get("fail_attempts", 0):
            raise RuntimeError(f"{task.task_id} failed attempt {attempt}")
        if "fail" in spec:
            raise RuntimeError(spec["fail"])
        if "save_state" in spec:
            state_persistence.save_object_state(task.task_id, spec["save_state"])
        self._write(task, "end")
        return dict(spec.get("publish", {}))

    def _write(self, task: Task, event: str, **fields: Any) -> None:
        line = json.dumps({"task": task.task_id, "event": event, "t": time.time(), **fields})
        # One write(2) on an O_APPEND file: lines from threads and processes never interleave.
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


class Harness:
    """A `Tasks` with the scripted processor and helpers to add tasks and read the log."""

    def __init__(self, tmp_path: Path, runner: str = "sequential", **options: Any) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.processor = Scripted(tmp_path / "events.jsonl")
        self.tasks = Tasks(logger=LoggerWrapper("CRITICAL"), runner=runner, **options)
        self.tasks.register_task_processor(self.processor)

    def add(
        self, name: str | None = None, spec: dict[str, Any] | None = None, **metadata: Any
    ) -> Task:
        if name is not None:
            metadata["name"] = name
        task = Task(kind="Scripted", version="v1", spec=spec or {}, metadata=metadata)
        self.tasks.add_task(task)
        return task

    def run(self, command: str = "apply", context: str = "default"):  # type: ignore[no-untyped-def]
        return self.tasks.process_context(command=command, context=context)

    def run_and_stop(self, running: int, release: Path | None = None) -> RunReport:
        """Start a run in a thread, stop it once `running` attempts have started (then create
        `release`, the file tasks with that `release` wait for); its report."""
        reports: list[RunReport] = []
        worker = threading.Thread(target=lambda: reports.append(self.run()))
        worker.start()
        until(lambda: len(self.started()) >= running)
        self.tasks.stop()
        if release is not None:
            release.touch()
        worker.join(10)
        assert not worker.is_alive(), "the run did not stop"
        return reports[0]

    def started(self) -> list[str]:
        """Task ids in the order their attempts started."""
        return [e["task"] for e in self.processor.events() if e["event"] == "start"]

    def seen(self, name: str) -> dict[str, Any]:
        """What `name` saw in its key-value store on its last attempt."""
        return [e for e in self.processor.events() if e["task"] == name and e["event"] == "start"][
            -1
        ]["seen"]

    def event(self, name: str, kind: str) -> dict[str, Any]:
        return [e for e in self.processor.events() if e["task"] == name and e["event"] == kind][-1]
