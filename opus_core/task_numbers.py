"""`check_task_number`: the one check of a task's `timeout`, `retries` and
`retry_sleep_time`, shared by manifests (and so `opus.toml`) and `@task`; and
`check_amount`, of a resource's capacity or a task's need of it."""

from __future__ import annotations

import math

MAX_SECONDS = 10 * 365 * 24 * 3600
"""The longest `timeout` or `retry_sleep_time` accepted (ten years): longer ones overflow
the clocks and waits that enforce them (`time.monotonic()` arithmetic, `threading` waits)."""

TASK_NUMBERS = ("retries", "retry_sleep_time", "timeout")
"""The numbers `check_task_number` checks."""


def check_task_number(key: str, value: object) -> int | float:
    """`value` checked as a task's `key` ("retries", "retry_sleep_time" or "timeout").

    Raises `ValueError` with a message starting with `key` ("timeout must be ...");
    callers prefix where the value was written. NaN, infinities, booleans,
    negative numbers and numbers too large for a clock are refused.
    """
    if key == "retries":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"retries must be a whole number of at least 0, got {value!r}")
        return value
    if key not in TASK_NUMBERS:
        raise ValueError(f"{key} is not a task number; expected one of {', '.join(TASK_NUMBERS)}")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != value  # NaN; also safe for ints too large for a float
    ):
        raise ValueError(f"{key} must be a number of seconds, got {value!r}")
    if key == "timeout" and value <= 0:
        raise ValueError(f"timeout must be greater than 0 seconds, got {value!r}")
    if value < 0:
        raise ValueError(f"{key} must be at least 0 seconds, got {value!r}")
    if value == math.inf:
        hint = "; leave timeout out for no time limit" if key == "timeout" else ""
        raise ValueError(f"{key} must be a finite number of seconds, got {value!r}{hint}")
    if value > MAX_SECONDS:
        raise ValueError(f"{key} must be at most {MAX_SECONDS} seconds (ten years), got {value!r}")
    return float(value)


def check_amount(where: str, value: object, zero: bool = False) -> float:
    """`value` as a resource amount (a finite number above 0, or at least 0 with `zero`);
    raises `ValueError` with a message starting with `where`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        least = "0 or more" if zero else "a number above 0"
        raise ValueError(f"{where} must be {least}, got {value!r}")
    return float(value)


def check_needs(what: str, value: object) -> dict[str, float]:
    """`value` checked as a task's needs: a mapping of resource names to amounts of 0 or
    more (see `check_amount`). Raises `ValueError` with a message starting with `what`
    ("metadata.resources", "resources")."""
    from collections.abc import Mapping

    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise ValueError(f"{what} must be a table of resource names to amounts, got {value!r}")
    return {k: check_amount(f"{what}.{k}", v, zero=True) for k, v in value.items()}
