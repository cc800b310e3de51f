"""What `@task` takes: its options checked before the function becomes a task, each error
naming the option, what was given and the task."""

from __future__ import annotations

from opus_core.runners import Runner
from opus_core.task_numbers import check_task_number

__all__ = ["check_cache_and_priority", "check_options"]


def check_options(
    fn: object,
    label: str,
    name: str | None,
    retries: int,
    retry_sleep_time: float,
    timeout: float | None,
    runner: object,
) -> None:
    """Refuse `@task` options that are not what `@task` takes, naming the task (`label`)."""
    if not callable(fn):
        raise ValueError(f"@task needs a callable, got {fn!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"@task name must be a non-empty string, got {name!r}")
    numbers = {"retries": retries, "retry_sleep_time": retry_sleep_time}
    if timeout is not None:
        numbers["timeout"] = timeout
    for key, value in numbers.items():
        try:
            check_task_number(key, value)
        except ValueError as exc:
            raise ValueError(f"@task {exc} (task {label!r})") from None
    if runner is not None and not isinstance(runner, (str, Runner, type)):
        raise ValueError(
            f"@task runner must be a runner name, a Runner, or a run class, got {runner!r}"
        )


def check_cache_and_priority(
    label: str,
    cache: object,
    cache_expiration: float | None,
    cache_key_fn: object,
    priority: object,
) -> None:
    """Refuse `@task`'s cache options and priority when they are not what it takes."""
    if not isinstance(cache, bool):
        raise ValueError(f"@task cache must be True or False, got {cache!r} (task {label!r})")
    if not cache and (cache_expiration is not None or cache_key_fn is not None):
        raise ValueError(
            f"@task cache_expiration and cache_key_fn need cache=True (task {label!r})"
        )
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(
            f"@task priority must be a whole number, got {priority!r} (task {label!r})"
        )
