"""Resources for function tasks: `@task(resources={"db": 1}, priority=5)`.

A call that declares needs starts only when they are free, against the capacities of
`[resources]` in `opus.toml` (one `ResourceGate` for the process); until then it waits,
without holding a thread, and the calls waiting start by priority (higher first), then
in the order they were made — a call passed over `PATIENCE` times starts next. What a
call holds is given back when its run ends, however it ends.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Mapping

from opus_core.errors import did_you_mean
from opus_core.resources import CPU, PATIENCE, Needs, ResourcePool
from opus_core.task_numbers import check_needs

_gate: list[ResourceGate] = []
_gate_lock = threading.Lock()


def configured_gate() -> ResourceGate:
    """The gate of this process, with the capacities of `[resources]` in the `opus.toml`
    found from `$OPUS_CONFIG` or the current directory."""
    with _gate_lock:
        if not _gate:
            from opus_core.config import load_config

            _gate.append(ResourceGate(load_config().data.get("resources") or {}))
        return _gate[0]


def reset_caches() -> None:
    """Forget the gate: the next call that declares needs reads the capacities again."""
    with _gate_lock:
        _gate.clear()


class ResourceGate:
    """Admits calls whose needs are free, and holds back the others (see the module)."""

    def __init__(self, capacities: Mapping[str, float]) -> None:
        self.capacities = dict(capacities)
        self.pool = ResourcePool(capacities)
        self._waiting: list[tuple[int, int, Needs, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._admitted = 0
        self._since: dict[int, int] = {}  # seq -> admissions when it began to wait
        self._starting = threading.local()  # the calls this thread is starting, in order

    def needs(self, name: str, wanted: Mapping[str, float]) -> Needs:
        """`wanted` checked against the capacities (cpu 1 by default when `cpu` has one);
        raises `ValueError` naming the task for an unknown resource or a need above its
        capacity."""
        merged = {**({CPU: 1.0} if CPU in self.capacities else {}), **wanted}
        for resource, need in merged.items():
            capacity = self.capacities.get(resource)
            if capacity is None:
                if resource == CPU:
                    continue
                raise ValueError(
                    f"task {name!r} needs resource {resource!r}, which [resources] of "
                    f"opus.toml does not declare{did_you_mean(resource, list(self.capacities))}"
                    f"; declared: {', '.join(sorted(self.capacities)) or 'none'}"
                )
            if need > capacity:
                raise ValueError(
                    f"task {name!r} needs {need:g} of resource {resource!r}, whose capacity "
                    f"is {capacity:g} ([resources] {resource} in opus.toml)"
                )
        return tuple(sorted((k, float(v)) for k, v in merged.items() if k in self.capacities))

    def admit(self, needs: Needs, priority: int, start: Callable[[], None]) -> None:
        """Call `start()` once `needs` are free (now, or when a run gives some back); they
        are taken for it first. `start` must see that `release(needs)` is called when
        what it starts ends."""
        with self._lock:
            if not self._waiting and self.pool.fits(needs):
                self.pool.take(needs)
                self._admitted += 1
                ready = [start]
            else:  # in line; it may still start now, in the place of one that does not fit
                self._seq += 1
                self._since[self._seq] = self._admitted
                heapq.heappush(self._waiting, (-priority, self._seq, needs, start))
                ready = self._admissible()
        self._start(ready)

    def release(self, needs: Needs) -> None:
        """What a call held is free again: start what waited for it."""
        with self._lock:
            self.pool.give(needs)
            ready = self._admissible()
        self._start(ready)

    def _start(self, ready: list[Callable[[], None]]) -> None:
        """Start the calls admitted, outside the lock, one after another: a call that
        runs where it starts (`sequential`) and gives its needs back as it ends has what
        that admits started by the loop that started it, not one level deeper."""
        if not ready:
            return
        queue = getattr(self._starting, "queue", None)
        if queue is not None:  # inside a start on this thread: that loop starts these
            queue.extend(ready)
            return
        queue = self._starting.queue = list(ready)
        try:
            while queue:
                queue.pop(0)()
        finally:
            self._starting.queue = None

    def waiting(self) -> int:
        """How many calls wait for a resource now."""
        return len(self._waiting)

    def _admissible(self) -> list[Callable[[], None]]:
        """Under the lock: take the waiting calls that fit now, in their order."""
        ready = []
        waiting = self._waiting
        while waiting:
            oldest = min(waiting, key=lambda entry: entry[1])
            if self._admitted - self._since[oldest[1]] >= PATIENCE:
                chosen = oldest  # its turn: nothing passes it
                if not self.pool.fits(chosen[2]):
                    break
            else:
                fitting = [entry for entry in waiting if self.pool.fits(entry[2])]
                if not fitting:
                    break
                chosen = min(fitting)
            waiting.remove(chosen)
            heapq.heapify(waiting)
            del self._since[chosen[1]]
            self.pool.take(chosen[2])
            self._admitted += 1
            ready.append(chosen[3])
        return ready


def checked_needs(name: str, resources: object) -> dict[str, float]:
    """`resources` checked as the needs of the function task `name` (`check_needs`)."""
    try:
        return check_needs("resources", resources)
    except ValueError as exc:
        raise ValueError(f"@task {exc} (task {name!r})") from None
