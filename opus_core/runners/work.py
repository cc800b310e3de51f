"""`Work`: what a runner is handed to run — one attempt of one task, callable and picklable,
with what a runner may read about the task."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class _NoEntries(Mapping[str, Any]):
    """An empty mapping that cannot change (and pickles as the one `NO_ENTRIES`)."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def __reduce__(self) -> str:
        return "NO_ENTRIES"

    def __repr__(self) -> str:
        return "{}"


NO_ENTRIES: Mapping[str, Any] = _NoEntries()
"""The empty mapping `Work` holds when a task declares no labels, annotations or resources."""


@dataclass(slots=True, eq=False)
class Work:
    """One attempt of one task, as the engine hands it to `Runner.submit`.

    Call it (`work()`) to do the work: it calls `fn(*args, **kwargs)` and returns what to
    hand to `BaseTaskRun.finish(value=...)` (the run's value, possibly wrapped with the
    number of attempts it took, which `finish` unwraps), or raises what the run is to fail
    with (`finish(exception=...)`). `fn` is an importable
    function (for a manifest task, the engine's; for a function task, a wrapper around the
    user's function that applies its retries), so `Work` pickles whenever `fn` and the
    arguments do; to send work to another process, `opus_core.runners.remote.dumps_work`
    pickles it whatever the function (closures and `__main__` functions by value).

    The other fields are for the runner to read (to name, group, place or limit the work);
    changing them changes nothing.
    """

    fn: Callable[..., Any]
    """What to call."""
    args: tuple[Any, ...] = ()
    """Positional arguments for `fn`."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `fn`."""
    name: str = ""
    """The task's name: a manifest task's id, a function task's name."""
    kind: str = "function"
    """A manifest task's kind, or `"function"` for a function task."""
    labels: Mapping[str, str] = NO_ENTRIES
    """The task's labels (`metadata.labels`)."""
    annotations: Mapping[str, Any] = NO_ENTRIES
    """The task's annotations (`metadata.annotations`)."""
    resources: Mapping[str, float] = NO_ENTRIES
    """What the task holds while it runs, when it declares it (`metadata.resources`)."""
    attempt: int = 1
    """Which attempt this is (1, then 2, ... as the engine retries a manifest task; a function
    task's retries happen inside `fn`)."""
    timeout: float | None = None
    """The task's timeout in seconds. The engine enforces it (with `BaseTaskRun.time_out`,
    or inside `fn` for a `blocking` runner); a runner may pass it on to where the work runs."""

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)

    @classmethod
    def of(cls, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Work:
        """What `Runner.submit(fn, *args, **kwargs)` is asked to run, as a `Work`: `fn` itself
        when the engine passed a `Work` (and nothing else), else a `Work` calling `fn` with
        the arguments, named after it."""
        if isinstance(fn, Work) and not args and not kwargs:
            return fn
        return cls(fn, args, kwargs, run_name(fn))


def run_name(fn: Callable[..., Any]) -> str:
    """The name a run of `fn` is known by: a `Work`'s `name`, else `fn`'s `opus_name` or
    `__name__`."""
    if isinstance(fn, Work):
        return fn.name
    name = getattr(fn, "opus_name", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__
