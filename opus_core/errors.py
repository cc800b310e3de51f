"""The exception hierarchy: everything opus raises on purpose derives from `OpusError`.

Every message names the thing at fault (file, key, task, plugin) and, where it can,
what would fix it.
"""

from __future__ import annotations

from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` when a choice is close to `word` (difflib), else `""`."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class OpusError(Exception):
    """Root of every error opus raises on purpose."""


class ConfigError(OpusError):
    """`opus.toml` (or a value passed in its place) is malformed or names something unknown."""


class PluginError(OpusError):
    """A plugin failed to load, conflicts with another, or returned something unusable."""


class ManifestError(OpusError):
    """A task manifest is malformed: missing kind or version, bad metadata, a duplicate name."""


class DependencyError(OpusError):
    """A dependency names a task that does not exist or is not in scope."""


class CycleError(DependencyError):
    """The dependencies form a cycle; `tasks` lists the task ids along it, in order."""

    def __init__(self, tasks: list[str]) -> None:
        self.tasks = tasks
        loop = " -> ".join([*tasks, tasks[0]])
        super().__init__(f"dependency cycle: {loop}; remove one of these dependencies")


class MissingValueError(OpusError):
    """A spec refers to `${KEY}` but no task it depends on published `KEY`."""


class TaskFailedError(OpusError):
    """A task failed for a reason its message says whole: raise it from a processor (as the
    `Command` tasks do with a command's exit status and the end of its stderr) and the
    task fails with the message alone, no traceback — whose frames would be the
    processor's own bookkeeping, not where anything went wrong."""


class TaskTimeoutError(OpusError, TimeoutError):
    """A task ran longer than its `timeout`."""


class TaskCancelledError(OpusError):
    """A task was stopped before it finished."""


class ProcessDiedError(OpusError):
    """A task's process ended without sending back a result (killed, `os._exit`, a crash)."""


class RemoteTaskError(OpusError):
    """A task raised an exception that could not be sent back as itself.

    `remote_type` is the qualified name of the original exception's type.
    """

    def __init__(self, remote_type: str, message: str) -> None:
        self.remote_type = remote_type
        super().__init__(f"{remote_type}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.remote_type, str(self).partition(": ")[2]), self.__dict__)


class UpstreamFailedError(OpusError):
    """A function task did not run because a run it was given failed, timed out or was stopped.

    `input_name` is the input run that did not succeed; `origin` says which run
    failed first and how, when that input itself did not run for the same
    reason. The original failure is chained as `__cause__`.
    """

    def __init__(self, task_name: str, input_name: str, origin: str) -> None:
        self.task_name = task_name
        self.input_name = input_name
        self.origin = origin
        if origin.startswith(f"{input_name!r} "):
            message = f"task {task_name!r} did not run: its input {origin}"
        else:
            message = (
                f"task {task_name!r} did not run: its input {input_name!r} did not run, as {origin}"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.task_name, self.input_name, self.origin))


class RunFailedError(OpusError):
    """Raised by `RunReport.raise_on_failure()` when any task did not succeed."""


def describe_exception(exc: BaseException) -> str:
    """`Type: message` for one line of a report, whatever the exception does.

    An `OpusError` is its message alone. An exception whose `__str__` raises (or
    returns something that is not a string) is described by its type name,
    saying its message could not be shown: describing a failure never fails.
    """
    name = type(exc).__name__
    try:
        text = str(exc)
    except KeyboardInterrupt:
        raise
    except BaseException as failure:
        return f"{name} (its message could not be shown: {type(failure).__name__})"
    if isinstance(exc, OpusError):
        return text
    return f"{name}: {text}" if text else name
