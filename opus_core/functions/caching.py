"""`@task(cache=True)`: a function task's result reused for the same inputs and source.

A call's **key** is the sha256 of the function's identity (module, qualified name and
source: editing the function is a new key) and of its arguments hashed by value, runs
among them replaced by their results: JSON's types, tuples, sets, frozensets, bytes and
dicts with any such keys (sets and dicts in a canonical order, so equal values hash the
same in every process). Any other argument is an error naming it, unless the task has a
`cache_key_fn(args, kwargs) -> str`, whose string then stands for the arguments.

Results live in the configured persistence (`opus.toml`'s, else `sqlite`), one entry
per function and key (`opus-cache:function:<name>:<key>`), saved when a call succeeds
with a value opus can store faithfully (`opus_core.records.encode`; anything else is
not cached, with a warning). A cached call returns a run whose status is `restored`,
unless the entry is older than `cache_expiration` seconds. Two processes computing one
key at once both compute, and each save is one write: the entry is whole, and the
last one wins.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import threading
import time
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from opus_core.errors import OpusError
from opus_core.results import TaskStatus

if TYPE_CHECKING:
    from opus_core.persistence import StatePersistence
    from opus_core.runners import BaseTaskRun

FUNCTION_PREFIX = "opus-cache:function:"
"""The state identifiers of cached function results start with this."""

KeyFunction = Callable[[tuple[Any, ...], dict[str, Any]], str]

_persistence: list[StatePersistence] = []
_persistence_lock = threading.Lock()


def configured_persistence() -> StatePersistence:
    """The persistence cached results live in: the configured one (`opus.toml` found from
    `$OPUS_CONFIG` or the current directory; `sqlite` by default), one for the process."""
    with _persistence_lock:
        if not _persistence:
            from opus_core.assembly import Assembly
            from opus_core.config import load_config

            _persistence.append(Assembly(load_config()).persistence())
        return _persistence[0]


def reset_caches() -> None:
    """Forget the persistence found: the next cached call looks the configuration up again."""
    with _persistence_lock:
        _persistence.clear()


class Unhashable(TypeError):
    """An argument of a cached call that the cache cannot hash by value."""


def canonical(value: Any, where: str) -> Any:
    """`value` as JSON data that is the same for equal values in every process; raises
    `Unhashable` naming `where` for a value of any other type."""
    kind = type(value)
    if kind is int and value.bit_length() > 4000:  # past what JSON writes in decimal
        return {"int": hex(value)}
    if value is None or kind in (str, bool, int):
        return value
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if kind in (bytes, bytearray):
        return {kind.__name__: value.hex()}
    if kind in (list, tuple):
        items = [canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if kind is list else {"tuple": items}
    if kind in (set, frozenset):
        items = [canonical(item, f"{where} item") for item in value]
        return {kind.__name__: sorted(items, key=_text)}
    if kind is dict:
        pairs = [
            [canonical(key, f"{where} key"), canonical(item, f"{where}[{key!r}]")]
            for key, item in value.items()
        ]
        return {"dict": sorted(pairs, key=lambda pair: _text(pair[0]))}
    raise Unhashable(f"{where} is a {kind.__module__}.{kind.__qualname__}")


def _text(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def function_identity(fn: Callable[..., Any]) -> str:
    """The sha256 of what `fn` is: its module and qualified name, its source (as the file
    reads now), its compiled code (bytecode, names and constants, nested functions'
    included: what the source cannot show, or shows alike for two lambdas on a line), and
    the values its closure holds (by value where the cache can hash them, else by type)."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = ""
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: what its class's __call__ is
        call = type(fn).__dict__.get("__call__")
        code = getattr(call, "__code__", None)
    cells = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            cells.append(_text(canonical(cell.cell_contents, "closure")))
        except (Unhashable, ValueError):
            cells.append(type(cell.cell_contents).__qualname__)
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    compiled = _code_text(code) if code is not None else ""
    text = "\n".join([name, source, compiled, *cells])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _code_text(code: Any) -> str:
    """A code object as text that is the same in every process: no memory addresses, and
    constants (frozensets of strings included) in a canonical form."""
    constants = []
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            constants.append(_code_text(constant))
            continue
        try:
            constants.append(_text(canonical(constant, "constant")))
        except (Unhashable, ValueError):
            constants.append(type(constant).__qualname__)
    return repr((code.co_code.hex(), code.co_names, code.co_varnames, constants))


class FunctionCache:
    """The cache of one `@task(cache=True)`: keys, lookups and saves (see the module)."""

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        expiration: float | None,
        key_fn: KeyFunction | None,
    ) -> None:
        if expiration is not None and (
            isinstance(expiration, bool)
            or not isinstance(expiration, (int, float))
            or not math.isfinite(expiration)
            or expiration <= 0
        ):
            raise ValueError(
                f"@task cache_expiration must be a positive number of seconds, "
                f"got {expiration!r} (task {name!r})"
            )
        if key_fn is not None and not callable(key_fn):
            raise ValueError(f"@task cache_key_fn must be callable, got {key_fn!r} (task {name!r})")
        self.name = name
        self.fn = fn
        self.expiration = None if expiration is None else float(expiration)
        self.key_fn = key_fn
        self._identity = function_identity(fn)  # as it is defined, not when first called

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key of a call with these argument values (see the module)."""
        if self.key_fn is not None:
            custom = self.key_fn(args, kwargs)
            if not isinstance(custom, str) or not custom:
                raise TypeError(
                    f"cache_key_fn of task {self.name!r} returned {custom!r}; "
                    "it must return a non-empty string"
                )
            arguments: Any = {"key": custom}
        else:
            try:
                arguments = {
                    "args": [canonical(a, f"argument {i}") for i, a in enumerate(args)],
                    "kwargs": {k: canonical(v, f"argument {k!r}") for k, v in kwargs.items()},
                }
            except Unhashable as exc:
                raise Unhashable(
                    f"task {self.name!r} (cache=True): {exc}, which the cache cannot hash by "
                    "value; pass cache_key_fn=... to @task to key its calls yourself"
                ) from None
        text = _text({"function": self._identity, "arguments": arguments})
        return hashlib.sha256(text.encode()).hexdigest()

    def state_id(self, key: str) -> str:
        """The state identifier of the result saved under `key`."""
        return f"{FUNCTION_PREFIX}{self.name}:{key}"

    def lookup(self, key: str) -> tuple[bool, Any]:
        """`(True, value)` for a result saved under `key` and not expired; `(False, None)`
        otherwise (an unreadable entry included)."""
        from opus_core.records import decode

        try:
            entry = configured_persistence().get_object_state(self.state_id(key))
        except OpusError:
            return False, None
        if not isinstance(entry, Mapping) or "value" not in entry:
            return False, None
        saved = entry.get("saved_at")
        if self.expiration is not None and (
            not isinstance(saved, (int, float)) or time.time() - saved >= self.expiration
        ):
            return False, None
        try:
            return True, decode(entry["value"])
        except ValueError:
            return False, None

    def save(self, key: str, run: BaseTaskRun) -> None:
        """Keep `run`'s value under `key`, if it succeeded with a value opus can store."""
        from opus_core.records import NotStorable, encode

        if run.status is not TaskStatus.SUCCEEDED:
            return
        try:
            stored = encode(run.get_result(0))
        except (NotStorable, RecursionError, Exception) as exc:
            logging.getLogger("opus").warning(
                f"task {self.name!r}: its result is not cached: opus cannot store {exc} faithfully"
            )
            return
        entry = {"function": self.name, "key": key, "saved_at": time.time(), "value": stored}
        try:
            configured_persistence().save_object_state(self.state_id(key), entry)
        except OpusError as exc:
            logging.getLogger("opus").warning(f"task {self.name!r}: result not cached: {exc}")
