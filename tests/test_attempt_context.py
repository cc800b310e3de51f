"""`opus_attempt_context`: what a plugin wraps around each attempt, where it runs."""

from __future__ import annotations

import contextvars
import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks, hookimpl
from opus_core.command_tasks import COMMAND_ENVIRONMENT
from opus_core.history import find_run

TAG: contextvars.ContextVar[str] = contextvars.ContextVar("tag", default="untagged")


@dataclasses.dataclass
class Tagged:
    """Sets `TAG` and the commands' `BUILD_TAG` for the attempt; notes its exit in `log`."""

    tag: str
    log: str

    def __enter__(self) -> Tagged:
        self.tokens = (TAG.set(self.tag), COMMAND_ENVIRONMENT.set({"BUILD_TAG": self.tag}))
        return self

    def __exit__(self, *exc_info: object) -> None:
        TAG.reset(self.tokens[0])
        COMMAND_ENVIRONMENT.reset(self.tokens[1])
        with open(self.log, "a") as log:
            log.write(f"{self.tag} exited in {os.getpid()}\n")


class Tagging:
    def __init__(self, log: Path) -> None:
        self.log = str(log)
        self.runners: list[str] = []

    @hookimpl
    def opus_attempt_context(self, task: Task, attempt: int, runner: Any) -> Tagged:
        self.runners.append(runner.name)
        return Tagged(f"{task.name}#{attempt}", self.log)


class ReadTag(TaskProcessor):
    kind = "ReadTag"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        if task.spec.get("fail") and TAG.get().endswith("#1"):
            raise RuntimeError(f"failed under {TAG.get()}")
        return {task.name: TAG.get()}


@pytest.mark.parametrize("runner", ["sequential", "threadpool", "process", "processpool"])
def test_each_attempt_runs_inside_what_the_plugin_returned_on_every_runner(
    runner: str, tmp_path: Path
) -> None:
    plugin = Tagging(tmp_path / "exits.log")
    tasks = Tasks(plugins=[plugin], logger=LoggerWrapper("INFO"), runner=runner)
    tasks.register_task_processor(ReadTag())
    tasks.add_task(Task("ReadTag", "v1", {}, {"name": "plain"}))
    tasks.add_task(Task("ReadTag", "v1", {"fail": True}, {"name": "flaky", "retries": 1}))
    tasks.add_task(Task("Command", "v1", {"run": 'echo "tag=$BUILD_TAG"'}, {"name": "shell"}))
    report = tasks.process_context()
    assert report.ok, report.summary()
    assert tasks.key_value_store.store["plain"] == "plain#1"
    assert tasks.key_value_store.store["flaky"] == "flaky#2"  # a new context per attempt
    run = find_run(tasks.state_persistence, report.run_id or "latest")
    [shell] = [t for t in run["tasks"] if t["name"] == "shell"]
    assert "shell: tag=shell#1" in shell["attempt_log"][0]["output"]["log"]
    exits = sorted(
        line.split(" exited")[0]
        for line in (tmp_path / "exits.log").read_text().split("\n")
        if line
    )
    assert exits == ["flaky#1", "flaky#2", "plain#1", "shell#1"]  # left after a failure too
    assert set(plugin.runners) == {runner}
    assert TAG.get() == "untagged" and COMMAND_ENVIRONMENT.get() is None  # nothing leaks


def test_a_spec_env_wins_over_what_a_plugin_sets(tmp_path: Path) -> None:
    tasks = Tasks(plugins=[Tagging(tmp_path / "exits.log")], logger=LoggerWrapper("INFO"))
    tasks.add_task(
        Task(
            "Command",
            "v1",
            {"run": 'echo "tag=$BUILD_TAG"', "env": {"BUILD_TAG": "mine"}},
            {"name": "shell"},
        )
    )
    report = tasks.process_context()
    assert report.ok
    run = find_run(tasks.state_persistence, report.run_id or "latest")
    assert "shell: tag=mine" in run["tasks"][0]["attempt_log"][0]["output"]["log"]
