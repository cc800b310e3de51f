"""Checking options against type hints: the options of `[plugins.NAME]`, `[runners.NAME]`
and the other sections, as TOML gives them, against the keyword arguments of the class
that receives them (`accepted_options`), with the messages that name what was expected
(`describe_type`).
"""

from __future__ import annotations

import collections.abc
import inspect
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

NOT_OPTIONS = frozenset({"self", "logger"})
"""Parameters of `__init__` that are never options: opus passes the logger itself."""


def accepted_options(cls: type) -> tuple[dict[str, Any], bool]:
    """The keyword options `cls(...)` takes with their type hints, and whether it takes any."""
    init = cls.__init__  # type: ignore[misc]
    try:
        signature = inspect.signature(init)
    except (TypeError, ValueError):
        return {}, True
    try:
        hints = typing.get_type_hints(init)
    except Exception:
        hints = {}
    options: dict[str, Any] = {}
    open_ended = False
    for name, parameter in signature.parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            open_ended = True
        elif parameter.kind is not parameter.VAR_POSITIONAL and name not in NOT_OPTIONS:
            options[name] = hints.get(name, Any)
    return options, open_ended


_SCALARS: dict[Any, Callable[[Any], bool]] = {
    type(None): lambda value: value is None,
    bool: lambda value: isinstance(value, bool),
    int: lambda value: isinstance(value, int) and not isinstance(value, bool),
    float: lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    str: lambda value: isinstance(value, str),
}
"""How a value read from TOML is checked against each scalar type hint."""

_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set)
_MAPPINGS = (dict, collections.abc.Mapping)


def matches(value: Any, hint: Any) -> bool:
    """Whether `value`, as TOML gives it, fits the type hint `hint` (what cannot be checked
    from TOML is let through, for the class to judge)."""
    if hint is Any or hint is object:
        return True
    scalar = _SCALARS.get(hint)
    if scalar is not None:
        return scalar(value)
    if _is_path(hint):
        return isinstance(value, str)
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in _SEQUENCES:
        return isinstance(value, list) and _items_match(value, origin, args)
    if origin in _MAPPINGS:
        item = args[1] if len(args) == 2 else Any
        return isinstance(value, dict) and all(matches(v, item) for v in value.values())
    return True


def _items_match(items: list[Any], origin: Any, args: tuple[Any, ...]) -> bool:
    """The items of a TOML list against `list[X]`, `set[X]`, `tuple[X, ...]` or
    `tuple[A, B]` (one hint per position)."""
    if origin is tuple and args and args[-1] is not Ellipsis:
        return len(items) == len(args) and all(map(matches, items, args))
    item = args[0] if args else Any
    return all(matches(v, item) for v in items)


def _is_path(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, (Path, os.PathLike))


def wants_path(hint: Any) -> bool:
    """Whether an option of type `hint` takes a path: a relative one is resolved against
    the file that set it."""
    return _is_path(hint) or any(_is_path(arg) for arg in typing.get_args(hint))


def describe_type(hint: Any) -> str:
    """How an error message names what an option expects."""
    names = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a string",
        dict: "a table",
        list: "a list",
        type(None): "nothing",
    }
    if hint in names:
        return names[hint]
    if _is_path(hint):
        return "a path"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in _SEQUENCES:
        return f"a list of {describe_type(args[0]).removeprefix('a ')}s" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a table"
    return getattr(hint, "__name__", str(hint))
