"""One attempt of one manifest task: what the engine's `Work` calls, wherever it runs.

`run_attempt` calls the task's processor with the values the task sees and returns an
`AttemptOutcome`: the values it published (`published_values`) and, when the work ran on
a copy of the persistence (another process, another machine), the state it wrote, which
`RecordingPersistence` recorded for the engine to replay into the real persistence.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

from opus_core.aio import is_async, run_coroutine
from opus_core.capture import AttemptOutput, keep_output, send_output, stop_keeping
from opus_core.errors import OpusError
from opus_core.manifest import Task, display_name
from opus_core.persistence import StatePersistence, check_state, json_copy
from opus_core.processor import TaskProcessor
from opus_core.runners.base import Runner
from opus_core.runners.work import Work
from opus_core.store import KeyValueStore
from opus_core.timeouts import call_with_alarm


class RecordingPersistence(StatePersistence):
    """Persistence for work that runs on copies: reads go to the copy, writes are recorded.

    The engine replays `writes` into the real persistence when the attempt ends.
    """

    name = "recording"

    def __init__(self, inner: StatePersistence) -> None:
        super().__init__()
        self.inner = inner
        self.writes: dict[str, dict[str, Any] | None] = {}

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        state = self.inner.retrieve_all_state_from_persistence()
        for key, value in self.writes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        return state

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        if object_identifier in self.writes:
            return dict(self.writes[object_identifier] or {})
        return self.inner.get_object_state(object_identifier)

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        check_state(object_identifier, data)
        self.writes[object_identifier] = json_copy(object_identifier, data)

    def delete_object_state(self, object_identifier: str) -> bool:
        existed = bool(self.get_object_state(object_identifier))
        self.writes[object_identifier] = None
        return existed


class AttemptOutcome:
    """What one successful attempt sends back: published values, recorded state writes, and
    what it printed and logged (`opus_core.capture.AttemptOutput.kept`), if anything."""

    __slots__ = ("output", "published", "writes")

    def __init__(
        self,
        published: dict[str, Any],
        writes: dict[str, dict[str, Any] | None] | None,
        output: dict[str, str] | None = None,
    ):
        self.published = published
        self.writes = writes
        self.output = output

    def __reduce__(self) -> tuple[object, ...]:
        return (AttemptOutcome, (self.published, self.writes, self.output))


def published_values(returned: object, given: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `returned` that are new or changed compared to `given`."""
    if type(returned) is not dict and isinstance(returned, KeyValueStore):
        returned = returned.store
    if type(returned) is not dict and not isinstance(returned, Mapping):
        raise OpusError(
            "process_task must return a dict, a KeyValueStore or None, "
            f"got {type(returned).__name__}"
        )
    published: dict[str, Any] = {}
    for key, value in returned.items():
        if key in given and _unchanged(given[key], value):
            continue
        published[key] = value
    return published


def _unchanged(old: Any, new: Any, depth: int = 0) -> bool:
    """Whether `new` is `old` again: equal, and of the same types all the way down (`True`
    after `1`, `2.0` after `2` or a tuple after a list is a change a dependent must see).
    A value whose `==` raises, or nested too deep to compare, counts as changed."""
    if old is new:
        return True
    if type(old) is not type(new) or depth > 100:
        return False
    try:
        if isinstance(old, dict):
            return old.keys() == new.keys() and all(
                _unchanged(old[k], new[k], depth + 1) for k in old
            )
        if isinstance(old, (list, tuple)):
            return len(old) == len(new) and all(
                _unchanged(a, b, depth + 1) for a, b in zip(old, new, strict=True)
            )
        return bool(old == new)
    except Exception:
        return False


def run_attempt(
    processor: TaskProcessor,
    task: Task,
    command: str,
    context: str,
    values: dict[str, Any],
    persistence: StatePersistence,
    record: bool,
    alarm: float | None,
    asynchronous: bool | None = None,
    output: AttemptOutput | None = None,
    contexts: tuple[Any, ...] = (),
) -> AttemptOutcome:
    """One attempt of one manifest task: what the engine's `Work` calls, wherever it runs.

    `values` is what the task sees; `record`: the work runs on a copy of `persistence`,
    so its writes are recorded and sent back; `alarm`: the timeout to enforce inside the
    call (for a blocking runner); `asynchronous`: whether `process_task` is `async def`
    (None: found out here); `output`: where what it prints and logs is kept (a new one
    when None: the work runs in another process, and sends it back with its outcome, or
    on its exception as `opus_output`); `contexts`: what plugins' `opus_attempt_context`
    returned, entered around the call, the first outermost.
    """
    name = task.meta.name or display_name(task)
    store = KeyValueStore(dict(values))
    state = RecordingPersistence(persistence) if record else persistence

    def process() -> Any:
        return processor.process_task(
            task=task,
            command=command,
            context=context,
            key_value_store=store,
            state_persistence=state,
        )

    if asynchronous is None:
        asynchronous = is_async(processor.process_task)
    here = output is not None  # the caller has it: nothing to send back
    if output is None:
        output = AttemptOutput()
    token = keep_output(output)
    entered = ExitStack() if contexts else None  # most runs have no plugin asking
    try:
        if entered is not None:
            for wrapper in contexts:
                entered.enter_context(wrapper)
        if asynchronous:  # cancelled on timeout, on any runner
            returned = run_coroutine(process(), task.meta.timeout, name)
        elif alarm is None:
            returned = process()
        else:
            returned = call_with_alarm(process, alarm, name)
    except SystemExit as exc:
        # A failure of the task, not the end of opus; it keeps the processor's frames (where
        # `sys.exit` was called), as every other exception of a processor does.
        error = OpusError(f"processor of task {name!r} raised SystemExit({exc.code!r})")
        send_output(error, output)
        raise error.with_traceback(exc.__traceback__) from None
    except BaseException as exc:
        send_output(exc, output)
        raise
    finally:
        if entered is not None:
            entered.close()
        stop_keeping(token)
    published = published_values(store if returned is None else returned, values)
    writes = state.writes if isinstance(state, RecordingPersistence) else None
    return AttemptOutcome(published, writes, None if here else output.kept() or None)


def attempt_work(
    processor: TaskProcessor,
    task: Task,
    command: str,
    context: str,
    values: Mapping[str, Any],
    persistence: StatePersistence,
    runner: Runner,
    asynchronous: bool,
    attempt: int,
    output: AttemptOutput | None = None,
    contexts: tuple[Any, ...] = (),
) -> Work:
    """What `runner` is handed for attempt number `attempt` of the manifest task `task`
    (its spec substituted): `run_attempt` and its arguments, and the fields a runner
    reads to name, place or limit the work."""
    meta = task.meta
    timeout = meta.timeout
    return Work(
        run_attempt,
        (
            processor,
            task,
            command,
            context,
            values,
            persistence,
            not runner.shares_memory,
            timeout if runner.blocking else None,
            asynchronous,
            output,
            contexts,
        ),
        {},
        meta.name or display_name(task),
        task.kind,
        meta.labels,
        meta.annotations,
        meta.resources,
        attempt,
        timeout,
    )
