"""Sending work to another process, and its outcome back.

A runner whose work runs in another process (a fresh `python`, a pool worker, a
cluster) uses these; the built-in `process` and `processpool` runners and the `dask`
plugin do:

* `dumps_work(work)` / `loads_work(data)`: a `Work` as bytes and back. Functions of
  importable modules travel by reference (the other process imports them); functions
  defined in `__main__`, in a test, or as closures travel by value (cloudpickle), so
  `@task` functions of a script run elsewhere too.
* `run_work(work)` runs it where it is and packs what happened — the value, or the
  exception with its traceback — into bytes; `read_outcome(data, name)` unpacks them
  in the runner, ready for `BaseTaskRun.finish`.
* `portable_exception(exc)` is that exception made fit to travel: its traceback,
  formatted where it was raised, goes with it as a note that opus's reports show in
  place of the local frames; one that does not pickle becomes a `RemoteTaskError`
  with its type and message.

In the other process::

    outcome = run_work(loads_work(data))     # never raises
    ...send `outcome` back...

and in the runner::

    ok, payload = read_outcome(outcome, work.name)
    run.finish(value=payload) if ok else run.finish(exception=payload)
"""

from __future__ import annotations

import functools
import sys
from types import FunctionType
from typing import Any

from opus_core.errors import OpusError, RemoteTaskError
from opus_core.results import REMOTE_TRACEBACK
from opus_core.runners.base import Work, run_name


def _decorated(module: str, qualname: str) -> Any:
    """In the other process: the function that the decorator found at `module.qualname` wraps."""
    import importlib

    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found.__wrapped__


class _ByValue(Exception):
    """Raised while pickling by reference: something of `__main__` must travel by value."""


@functools.cache
def _pickler(main_by_value: bool) -> type[Any]:
    """`pickle.Pickler`, but a function whose name holds its decorator (`@task`, or anything
    `functools.wraps`-like) is sent by reference through the decorator, and (with
    `main_by_value`) a function or class of `__main__` stops it: another interpreter's
    `__main__` is not this one's."""
    import pickle

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if main_by_value and isinstance(obj, (FunctionType, type)):
                if getattr(obj, "__module__", None) == "__main__":
                    raise _ByValue
            if type(obj) is not FunctionType:
                return NotImplemented
            module, qualname = obj.__module__, obj.__qualname__
            found: Any = sys.modules.get(module)
            for part in qualname.split("."):
                found = getattr(found, part, None)
            if found is not obj and getattr(found, "__wrapped__", None) is obj:
                return _decorated, (module, qualname)
            return NotImplemented

    return Pickler


def dumps_work(work: Work | Any, *, main_by_value: bool = True) -> bytes:
    """`work` (a `Work`, or anything else to send) as bytes for `loads_work` in another process.

    Plain pickle first (functions by reference, a decorated function through its
    decorator); what plain pickle cannot send by reference — a closure, a lambda, and a
    function or class of the script being run (`__main__`) — by value with cloudpickle.
    `main_by_value=False` sends `__main__`'s by reference, for a process forked from this
    one (which has the same `__main__`). Raises what cloudpickle raises when neither can
    (a lock, an open file among the arguments).
    """
    import io
    import pickle

    buffer = io.BytesIO()
    try:
        _pickler(main_by_value)(buffer, pickle.HIGHEST_PROTOCOL).dump(work)
        return buffer.getvalue()
    except Exception:
        pass
    import cloudpickle  # type: ignore[import-untyped, unused-ignore]

    return cloudpickle.dumps(work, pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]


def loads_work(data: bytes) -> Any:
    """What `dumps_work` sent (importing the modules it names)."""
    import pickle

    return pickle.loads(data)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be shown>"


def portable_exception(exc: BaseException) -> BaseException:
    """`exc` ready to travel to another process: with its traceback (formatted here) as a
    note that `opus_core.results.format_traceback` shows, and `exc` itself if it survives
    pickling, else a `RemoteTaskError` with its type and message (and the same note)."""
    import pickle
    import traceback

    detail = "".join(traceback.format_exception(exc)).rstrip()
    try:
        exc.add_note(f"{REMOTE_TRACEBACK}{detail}")
        pickle.loads(pickle.dumps(exc))
    except Exception:
        kind = type(exc)
        portable = RemoteTaskError(f"{kind.__module__}.{kind.__qualname__}", _text(exc))
        portable.add_note(f"{REMOTE_TRACEBACK}{detail}")
        return portable
    return exc


def run_work(work: Any, args: Any = (), kwargs: Any = None) -> bytes:
    """Call `work(*args, **kwargs)` here and pack how it went for `read_outcome`: the value,
    or the exception made portable. Never raises (a value that cannot be pickled is
    packed as an `OpusError` saying so)."""
    import pickle

    try:
        message: tuple[bool, Any] = (True, work(*args, **(kwargs or {})))
    except BaseException as exc:
        message = (False, portable_exception(exc))
    try:
        return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        what = "result" if message[0] else "exception"
        error = OpusError(
            f"the {what} of task {run_name(work)!r} could not be sent "
            f"back from its process: {type(exc).__name__}: {exc}"
        )
        return pickle.dumps((False, error), pickle.HIGHEST_PROTOCOL)


def read_outcome(data: bytes, name: str) -> tuple[bool | None, Any]:
    """What `run_work` packed for task `name`: `(True, value)` or `(False, exception)`. Bytes
    that cannot be read give `(False, OpusError)` saying so."""
    import pickle

    try:
        return pickle.loads(data)  # type: ignore[no-any-return]
    except Exception as exc:
        return False, OpusError(
            f"the result of task {name!r} could not be read back from its "
            f"process: {type(exc).__name__}: {exc}"
        )
