"""`${KEY}` substitution of published values into a task's spec."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opus_core.errors import MissingValueError

_PATTERN = re.compile(r"\$(\$|\{([^}]*)\})")


_SCALARS = frozenset((int, float, bool, type(None)))


def needs_substitution(value: Any) -> bool:
    """Whether `value` holds a string with a `$` that substitution may rewrite."""
    kind = type(value)
    if kind is str or (kind not in _SCALARS and isinstance(value, str)):
        return "$" in value
    if kind is dict or (kind not in _SCALARS and isinstance(value, Mapping)):
        items: Any = value.values()
    elif kind is list or kind is tuple or isinstance(value, (list, tuple)):
        items = value
    else:
        return False
    for item in items:
        if type(item) in _SCALARS:
            continue
        if needs_substitution(item):
            return True
    return False


def substitute(value: Any, values: Mapping[str, Any], task_id: str) -> Any:
    """Replace every `${KEY}` in the strings of `value` by `values[KEY]`.

    A string that is exactly `${KEY}` becomes the value itself (keeping its type);
    elsewhere the value is formatted with `str()`. `$$` stands for a literal `$`.
    A key that is not in `values` raises `MissingValueError` naming it and the task.
    """
    if isinstance(value, str):
        whole = _PATTERN.fullmatch(value)
        if whole and whole.group(2) is not None:
            return _lookup(whole.group(2), values, task_id)

        def replace(match: re.Match[str]) -> str:
            if match.group(1) == "$":
                return "$"
            return str(_lookup(match.group(2), values, task_id))

        return _PATTERN.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: substitute(v, values, task_id) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, values, task_id) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, values, task_id) for v in value)
    return value


def _lookup(key: str, values: Mapping[str, Any], task_id: str) -> Any:
    try:
        return values[key]
    except KeyError:
        raise MissingValueError(
            f"task {task_id!r} uses ${{{key}}} but no task it depends on published {key!r}; "
            f"add a dependency on the task that publishes it, or give it a value "
            f"(opus run --set {key}=VALUE)"
        ) from None
