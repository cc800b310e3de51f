"""What runs on the Ray workers: `execute`, the one remote function every task goes through.

A task travels as bytes the runner made with `opus_core.runners.remote.dumps_work`, so
Ray never unpickles anything of the user's itself: `execute` does, on the worker, once
the job's `runtime_env` (the user's modules) is in place. It returns two objects:

* the *status*, small, which the driver fetches as soon as the task ends: whether it
  succeeded, its attempt count, the exception it raised (with its traceback), what it
  printed and logged meanwhile, and — for the engine's attempts, whose values the driver
  needs at once — the value itself;
* the *value*, pickled, which stays in the object store for the tasks it feeds and for
  `get_result()` (empty for the engine's attempts, and for a task that failed).

A run passed to another task travels as `RayInput`: pickled with the task while the
runner collects them, it becomes a placeholder, and its value's `ObjectRef` is passed
to Ray as an argument of its own — Ray then starts the task once that value exists,
on any node, and hands `execute` its bytes.
"""

from __future__ import annotations

import contextvars
import logging
import pickle
import sys
import threading
from typing import Any, TextIO

from opus_core.errors import OpusError
from opus_core.runners.base import Attempted
from opus_core.runners.remote import loads_work, portable_exception

FAILED = b""
"""The value object of a task that failed: a task given it fails without running."""

_given: contextvars.ContextVar[tuple[bytes, ...]] = contextvars.ContextVar("opus_ray_inputs")
_said: contextvars.ContextVar[list[tuple[str, Any]] | None] = contextvars.ContextVar(
    "opus_ray_said", default=None
)
_collecting = threading.local()


class UpstreamValueMissing(OpusError):
    """A task was given the value of a task that failed (the driver names which)."""


# -- on the driver: runs passed to other tasks ----------------------------------------


class RayInput:
    """What a run of the `ray` runner stands for when passed to another task of it.

    `ref` is the `ObjectRef` of the run's value, `run` the run itself. Pickled while
    `InputCollector()` is active it becomes a placeholder for the value, and its `ref`
    is added to the list the runner passes to Ray beside the task.
    """

    __slots__ = ("ref", "run")

    def __init__(self, ref: Any, run: Any = None) -> None:
        self.ref = ref
        self.run = run

    def __reduce__(self) -> tuple[Any, ...]:
        found: dict[str, tuple[int, RayInput]] | None = getattr(_collecting, "found", None)
        if found is None:
            raise TypeError(
                "a run of the ray runner can be passed only to another task of the same "
                "ray runner; call get_result() to pass its value elsewhere"
            )
        key = self.ref.hex()
        index = found.setdefault(key, (len(found), self))[0]
        return (given_input, (index,))


class InputCollector:
    """While active (in one thread), pickled `RayInput`s become placeholders; `inputs`
    lists them afterwards, in the order of their placeholders' indexes."""

    def __init__(self) -> None:
        self.found: dict[str, tuple[int, RayInput]] = {}

    def __enter__(self) -> InputCollector:
        _collecting.found = self.found
        return self

    def __exit__(self, *exc: object) -> None:
        _collecting.found = None

    @property
    def inputs(self) -> list[RayInput]:
        """The inputs pickled, by index."""
        return [given for _, given in sorted(self.found.values(), key=lambda item: item[0])]


def given_input(index: int) -> Any:
    """On the worker, while unpickling a task: the value of its input number `index`."""
    data = _given.get()[index]
    if data == FAILED:
        raise UpstreamValueMissing("a task this one was given the result of did not succeed")
    return loads_value(data)


# -- values -----------------------------------------------------------------------------


def dumps_value(value: Any) -> bytes:
    """A task's value as bytes (cloudpickle: classes made on the worker travel too)."""
    import cloudpickle  # type: ignore[import-untyped, unused-ignore]

    return cloudpickle.dumps(value, pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]


def loads_value(data: bytes) -> Any:
    """The value `dumps_value` packed."""
    return pickle.loads(data)


# -- what tasks print and log -----------------------------------------------------------


class _Said(logging.Handler):
    """Keeps the log records of the task running in this thread, to send to the driver."""

    def __init__(self, skip_opus: bool) -> None:
        super().__init__()
        self.skip_opus = skip_opus  # on the root logger: `opus` records have their own

    def emit(self, record: logging.LogRecord) -> None:
        said = _said.get()
        if said is None:
            return
        if self.skip_opus and (record.name == "opus" or record.name.startswith("opus.")):
            return
        said.append(("log", record_fields(record)))


class _Stream:
    """`sys.stdout` or `sys.stderr` on a worker: writes through, and keeps a copy of what
    the running task writes (whole text, sent to the driver when the task ends)."""

    def __init__(self, name: str, stream: TextIO) -> None:
        self.stream_name = name
        self.stream = stream

    def write(self, text: str) -> int:
        said = _said.get()
        if said is not None and text:
            said.append((self.stream_name, text))
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


_PLAIN = (str, int, float, bool, type(None))


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What travels of a log record: its attributes, the message formatted, nothing that
    would not pickle (as `logging.handlers.SocketHandler` prepares one)."""
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    fields: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in ("args", "exc_info", "message"):
            continue
        fields[key] = value if isinstance(value, _PLAIN) else str(value)
    fields["msg"] = record.getMessage()
    fields["args"] = None
    return fields


_installed = False


def _install() -> None:
    """Once per worker process: keep what tasks write and log (see `_Stream`, `_Said`)."""
    global _installed
    if _installed:
        return
    _installed = True
    sys.stdout = _Stream("stdout", sys.stdout)
    sys.stderr = _Stream("stderr", sys.stderr)
    opus = logging.getLogger("opus")
    if opus.level == logging.NOTSET:
        opus.setLevel(logging.DEBUG)  # as in the driver: each LoggerWrapper filters
    logging.getLogger().addHandler(_Said(skip_opus=True))
    opus.addHandler(_Said(skip_opus=False))


# -- the remote function ----------------------------------------------------------------


def execute(keep: bool, head: bytes, row: bytes | None, *inputs: bytes) -> tuple[bytes, bytes]:
    """Run one task here (on a Ray worker); `(status, value)` as bytes (see the module).

    `head` is the task (a `Work`) pickled, or, with `row`, a function and keyword
    arguments pickled, shared by many tasks (a map's rows, the calls of one function),
    and `row` this task's `(args, kwargs)` pickled, which the function is called with
    (its keyword arguments over the shared ones). `inputs`
    are the values of the runs passed in, in the order of their placeholders. With
    `keep`, the value stays in the object store; without, it goes in the status.
    Never raises: what the task raised goes back in the status.
    """
    _install()
    said: list[tuple[str, Any]] = []
    token = _said.set(said)
    given = _given.set(inputs)
    attempts = 1
    try:
        if row is None:
            value = loads_work(head)()
        else:
            fn, shared = _shared(head)
            args, kwargs = loads_work(row)
            value = fn(*args, **({**shared, **kwargs} if shared else kwargs))
        if isinstance(value, Attempted) and keep:
            attempts, value = value.attempts, value.value
        ok, payload = True, value
    except BaseException as exc:
        ok, payload = False, portable_exception(exc)
    finally:
        _given.reset(given)
        _said.reset(token)
    return pack(ok, payload, attempts, said, keep)


_heads: dict[bytes, tuple[Any, dict[str, Any]]] = {}
HEADS_KEPT = 32
"""How many shared functions a worker keeps unpickled."""


def _shared(head: bytes) -> tuple[Any, dict[str, Any]]:
    """The function and keyword arguments `head` holds, unpickled once per worker."""
    found = _heads.get(head)
    if found is None:
        if len(_heads) >= HEADS_KEPT:
            _heads.clear()
        found = _heads[head] = loads_work(head)
    return found


def pack(
    ok: bool, payload: Any, attempts: int, said: list[tuple[str, Any]], keep: bool
) -> tuple[bytes, bytes]:
    """The status and the value objects of a task that ended (see `execute`)."""
    value = FAILED
    if ok and keep:
        try:
            value = dumps_value(payload)
        except Exception as exc:
            ok, payload = False, OpusError(f"the result could not be pickled: {exc}")
        payload = None
    try:
        status = pickle.dumps((ok, payload, attempts, said), pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        try:
            status = cloudpickle.dumps((ok, payload, attempts, said), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            what = "result" if ok else "exception"
            error = OpusError(f"the {what} could not be sent back from the Ray worker: {exc}")
            status = pickle.dumps((False, error, attempts, said), pickle.HIGHEST_PROTOCOL)
    return status, value
