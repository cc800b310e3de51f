"""`Command` tasks: a shell step as a manifest task, with no Python to write.

```toml
[[tasks]]
kind = "Command"
version = "v1"
metadata = { name = "build", depends_on = ["fetch"], timeout = 600 }
spec = { run = "make -C site", env = { MODE = "${mode}" }, cwd = "web" }
```

`spec.run` is a string run by `/bin/sh -c`, or a list of strings run as the
command's argv without a shell; `spec.env` adds variables to the environment the
command inherits; `spec.cwd` is a folder relative to the project folder (the
default). `${KEY}` in any of them is substituted as in every spec. Each line the
command writes is logged under the task's name; a non-zero exit fails the task
with the exit status and the last lines of stderr. The command leads a process
group of its own: when the command ends, times out or is interrupted, the whole
group is killed (SIGKILL) — whatever the command started and left running with it.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import os
import select
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from opus_core.capture import current as current_output
from opus_core.config import project_folder
from opus_core.errors import ManifestError, TaskFailedError, TaskTimeoutError
from opus_core.logger import INFO, logs_at
from opus_core.printable import printable
from opus_core.processor import TaskProcessor

if TYPE_CHECKING:
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.store import KeyValueStore

STDERR_LINES = 20
"""How many of the last lines of stderr a failed command's error shows."""

LINE_BYTES = 64 * 1024
"""A longer line is logged in pieces of this many bytes (no line is held whole in memory)."""


OUTPUT_DRAIN = 5.0
"""Seconds to wait, once the command has ended, for the rest of its output: a process it
started that left its process group (a daemon) may keep the output open for ever."""

COMMAND_ENVIRONMENT: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "opus_command_environment", default=None
)
"""Variables a command started in this context gets on top of opus's own environment (a
task's `spec.env` still wins): a plugin's `opus_attempt_context` sets them for its attempt
(the otel plugin's `TRACEPARENT`)."""


_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def kill_running_commands() -> int:
    """Kill the process group of every `Command` task's command still running in this
    process; how many. `opus` calls it before it exits without waiting for task threads
    (a timed-out task on `threadpool`), so that no command outlives it."""
    with _running_lock:
        running = list(_running)
    for process in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    return len(running)


class CommandFailedError(TaskFailedError):
    """A `Command` task's command exited with a non-zero status (or was killed by a signal),
    or could not start: the task fails with this message, the end of stderr in it."""


class CommandProcessor(TaskProcessor):
    """Runs the `Command` tasks (`kind = "Command"`, `version = "v1"`) for `apply`."""

    kind = "Command"
    versions = ("v1",)
    commands = ("apply",)

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> dict[str, Any]:
        """Run the task's command to its end; publishes nothing."""
        name = task.name or task.kind
        argv, shell = command_line(name, task.spec.get("run"))
        env = dict(os.environ)
        env.update(COMMAND_ENVIRONMENT.get() or {})
        env.update(environment(name, task.spec.get("env", {})))
        cwd = working_folder(name, task.spec.get("cwd"))
        timeout = task.meta.timeout
        self.logger.debug(f"{name}: running {printable(repr(argv))} in {cwd}")
        try:
            process = subprocess.Popen(
                argv,
                shell=shell,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as one
            )
        except OSError as exc:  # no such program, not executable
            raise CommandFailedError(f"command of task {name!r} could not start: {exc}") from None
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        readers: list[threading.Thread] = []
        try:  # from here on, a Ctrl-C (or a timeout's alarm) kills the command's group
            with _running_lock:
                _running.add(process)
            readers.append(_reader(process.stdout, lambda line: _line(self, f"{name}: {line}")))
            readers.append(
                _reader(process.stderr, lambda line: _stderr_line(self, name, line, tail))
            )
            _wait(process, timeout, name)
        finally:  # ended, timed out, Ctrl-C, stopped: what it left running in its group goes
            _kill_group(process)
            with _running_lock:
                _running.discard(process)
            for reader in readers:  # a process that left the group may hold a pipe open
                reader.join(OUTPUT_DRAIN)
        if process.returncode:
            raise CommandFailedError(failure(name, process.returncode, list(tail)))
        return {}


def command_line(name: str, run: object) -> tuple[str | list[str], bool]:
    """`spec.run` as what `subprocess` takes, and whether it runs through `/bin/sh -c`. In a
    list, numbers and booleans (a whole `${KEY}` keeps its value's type) are written as text."""
    if isinstance(run, str) and run.strip():
        return run, True
    if isinstance(run, list) and run and all(type(part) in _TEXT for part in run):
        argv = [_text(part) for part in run]
        if argv[0].strip():
            return argv, False
    raise ManifestError(
        f"task {name!r}: spec.run must be a command line (a non-empty string, run by "
        f"/bin/sh -c) or a non-empty list of strings (run as argv), not {run!r}"
    )


_TEXT = (str, int, float, bool)


def _text(value: str | float | bool) -> str:
    """A string, number or boolean as the text a command gets: `true`, `8080`, `0.5`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def environment(name: str, env: object) -> dict[str, str]:
    """`spec.env` as environment variables: strings, numbers and booleans as text."""
    if not isinstance(env, Mapping):
        raise ManifestError(f"task {name!r}: spec.env must be a table of names and values")
    out = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ManifestError(f"task {name!r}: spec.env has a bad variable name {key!r}")
        if type(value) in _TEXT:
            text = _text(value)
        else:
            raise ManifestError(
                f"task {name!r}: spec.env.{key} must be a string, a number or a boolean, "
                f"not {type(value).__name__}"
            )
        if "\0" in text:
            raise ManifestError(f"task {name!r}: spec.env.{key} holds a NUL character")
        out[key] = text
    return out


def working_folder(name: str, cwd: object) -> Path:
    """`spec.cwd` resolved against the project folder (the project folder when unset)."""
    folder = project_folder()
    if cwd is None:
        return folder
    if not isinstance(cwd, str) or not cwd:
        raise ManifestError(f"task {name!r}: spec.cwd must be a folder's path, not {cwd!r}")
    path = folder / cwd
    if not path.is_dir():
        raise ManifestError(
            f"task {name!r}: spec.cwd {cwd!r} is not a folder ({path}); create it or fix "
            "the path, which is relative to the project folder"
        )
    return path


def failure(name: str, status: int, stderr: list[str]) -> str:
    """The error of a command that ended with `status` (negative: killed by that signal)."""
    if status < 0:
        try:
            how = f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            how = f"was killed by signal {-status}"
    else:
        how = f"exited with status {status}"
    if not stderr:
        return f"command of task {name!r} {how}"
    return f"command of task {name!r} {how}; last lines of stderr:\n" + "\n".join(stderr)


def _stderr_line(
    processor: TaskProcessor, name: str, line: str, tail: collections.deque[str]
) -> None:
    tail.append(line)
    _line(processor, f"{name}: {line}")


def _line(processor: TaskProcessor, text: str) -> None:
    """Log a line of the command's output at INFO; it is the attempt's output, so it is
    kept (`opus_core.capture`) even where the logger's level does not show it."""
    logger = processor.logger
    if not logs_at(logger, INFO):
        output = current_output()
        if output is not None:
            output.log(INFO, text)
        return
    logger.info(text)


def _reader(stream: IO[bytes] | None, line: Callable[[str], None]) -> threading.Thread:
    """A thread that hands each line of `stream` (decoded, made printable) to `line`."""

    def read() -> None:
        assert stream is not None
        with stream:
            while chunk := stream.readline(LINE_BYTES):
                line(printable(chunk.decode(errors="replace").rstrip("\r\n")))

    context = contextvars.copy_context()  # its lines are kept as the attempt's log
    thread = threading.Thread(
        target=context.run, args=(read,), name="opus-command-output", daemon=True
    )
    thread.start()
    return thread


def _wait(process: subprocess.Popen[bytes], timeout: float | None, name: str) -> None:
    """Wait for the command to end, leaving it unreaped (so that its process group cannot
    be taken by another before `_kill_group`). With a timeout, the command is killed
    when it passes: on a runner whose timeout cannot interrupt the task (a thread's) this
    is what ends it; elsewhere the runner's own timeout comes first."""
    pidfd = os.pidfd_open(process.pid)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            raise TaskTimeoutError(f"task {name!r} timed out after {timeout:g}s")
    finally:
        os.close(pidfd)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the command's process group (the command and what it started), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
