"""Resources and priorities: which ready task starts next, and only when what it needs is free.

Capacities come from the `[resources]` table of `opus.toml` (`db = 2`); a task declares
its needs in `metadata.resources` (`{ db = 1 }`) and its `metadata.priority` (an int,
default 0). A task with no `cpu` need takes 1 `cpu` when `cpu` has a capacity; without
one, `cpu` is not limited (only the runner's workers are).

Which ready task starts next (`ReadyQueue`), among those whose needs are free:

1. the highest `priority`;
2. then the one with the longest chain of tasks after it (the critical path);
3. then the one that needs the most, as a share of the capacities (the large ones first,
   while there is room for them; the small ones fill what is left);
4. then the one ready first.

So that no task waits for ever behind a stream of others (higher priorities, or smaller
needs that keep fitting where its own do not), a task passed over `PATIENCE` times
starts next: nothing else starts until what it needs is free.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from opus_core.errors import ManifestError, did_you_mean

if TYPE_CHECKING:
    from opus_core.graph import Plan
    from opus_core.leases import MachineLeases

CPU = "cpu"
"""The resource every task takes 1 of, unless it says otherwise, when it has a capacity."""

PATIENCE = 64
"""How many other tasks may start before a ready task: then it starts next. While it waits
for its needs nothing else starts, so a small number costs time (`benchmarks/RESULTS.md`,
Resources)."""

EPSILON = 1e-9
"""How far sums of amounts may stray, in floating point, from what they add up to."""

Needs = tuple[tuple[str, float], ...]
"""A task's needs, sorted by resource name."""


def needs_of(plan: Plan, capacities: Mapping[str, float]) -> list[Needs]:
    """Each task's needs, checked against `capacities`: an unknown resource, or a need
    above its capacity, is a `ManifestError` naming the task, before anything runs."""
    from opus_core.manifest import display_name

    found: list[Needs] = []
    default_cpu = {CPU: 1.0} if CPU in capacities else {}
    for task in plan.tasks:
        wanted = {**default_cpu, **task.meta.resources}
        for name, need in wanted.items():
            capacity = capacities.get(name)
            if capacity is None:
                if name == CPU:
                    continue  # cpu without a capacity: not limited
                known = sorted({*capacities, CPU})
                raise ManifestError(
                    f"task {display_name(task)!r} needs resource {name!r}, which [resources] "
                    f"of opus.toml does not declare{did_you_mean(name, known)}; declared: "
                    f"{', '.join(sorted(capacities)) or 'none'}"
                )
            if need > capacity:
                raise ManifestError(
                    f"task {display_name(task)!r} needs {need:g} of resource {name!r}, whose "
                    f"capacity is {capacity:g} ([resources] {name} in opus.toml): it could "
                    "never start"
                )
        found.append(tuple(sorted((k, v) for k, v in wanted.items() if k in capacities)))
    return found


def chain_lengths(dependents: Sequence[Sequence[int]]) -> list[int]:
    """Per task (in dependency order), how many tasks the longest chain after it holds."""
    lengths = [0] * len(dependents)
    for index in range(len(dependents) - 1, -1, -1):
        after = dependents[index]
        if after:
            lengths[index] = 1 + max(lengths[d] for d in after)
    return lengths


class ResourcePool:
    """What is free of each resource, as tasks take and give back their needs."""

    def __init__(self, capacities: Mapping[str, float]) -> None:
        self.capacity = dict(capacities)
        self.free = dict(capacities)

    def fits(self, needs: Needs) -> bool:
        """Whether `needs` are free now."""
        free = self.free  # (EPSILON: three needs of 0.1 fit a capacity of 0.3)
        return all(free[name] + EPSILON >= need for name, need in needs)

    def take(self, needs: Needs) -> None:
        """Count `needs` as held."""
        for name, need in needs:
            self.free[name] -= need

    def give(self, needs: Needs) -> None:
        """Count `needs` as free again."""
        for name, need in needs:
            self.free[name] = min(self.free[name] + need, self.capacity[name])

    def acquire(self, needs: Needs) -> object | None:
        """Take `needs` if they are free now: a token for `release`, else None."""
        if not self.fits(needs):
            return None
        self.take(needs)
        return needs

    def release(self, needs: Needs, token: object) -> None:
        """Give back what `acquire` took (`token` is what it returned)."""
        self.give(needs)


class MachinePool(ResourcePool):
    """A run's resources, shared with every `opus` process of the project on this machine
    (`[opus] resources_scope = "machine"`): what the run takes is leased too
    (`opus_core.leases`), and a need is free only when both have room."""

    def __init__(self, capacities: Mapping[str, float], leases: MachineLeases) -> None:
        super().__init__(capacities)
        self.leases = leases

    def acquire(self, needs: Needs) -> object | None:
        """Take `needs` if they are free here and on the machine: the lease, else None."""
        if not self.fits(needs):
            return None
        lease = self.leases.take(needs)
        if lease is None:  # other processes hold it
            return None
        self.take(needs)
        return lease

    def release(self, needs: Needs, token: object) -> None:
        """Give back `needs` here and the lease `token` on the machine."""
        self.give(needs)
        self.leases.give(str(token))


class ReadyQueue:
    """The ready tasks, in the order they start (see the module), holding back those whose
    needs are not free. `append` a task as it becomes ready; `bool(queue)` says whether
    one can start now; `popleft()` takes it and its needs from the pool; `release(index)`
    gives them back when its attempt ends."""

    def __init__(
        self,
        priorities: Sequence[int],
        chains: Sequence[int],
        needs: Sequence[Needs],
        pool: ResourcePool,
    ) -> None:
        self.priorities = priorities
        self.chains = chains
        self.needs = needs
        self.pool = pool
        self.holding: dict[int, tuple[Needs, object]] = {}
        self._granted: tuple[int, object] | None = None  # the next to start, its needs taken
        self._heaps: dict[Needs, list[tuple[int, int, float, int, int]]] = {}
        self._shares: dict[Needs, float] = {}  # needs -> minus their share of the capacities
        self._arrivals: deque[tuple[int, int]] = deque()  # (seq, index), oldest first
        self._queued: dict[int, int] = {}  # index -> seq of its entry
        self._seq = 0
        self._starts = 0
        self._passed_from: dict[int, int] = {}  # index -> starts when it arrived

    def append(self, index: int) -> None:
        """The task at `index` is ready."""
        seq = self._seq = self._seq + 1
        self._queued[index] = seq
        self._passed_from[index] = self._starts
        needs = self.needs[index]
        share = self._shares.get(needs)
        if share is None:
            capacity = self.pool.capacity
            share = self._shares[needs] = -sum(
                need / capacity[name] for name, need in needs if capacity[name]
            )
        entry = (-self.priorities[index], -self.chains[index], share, seq, index)
        heapq.heappush(self._heaps.setdefault(needs, []), entry)
        self._arrivals.append((seq, index))

    def __len__(self) -> int:
        return len(self._queued)

    def __bool__(self) -> bool:
        if self._granted is None:
            for index in self._candidates():
                needs = self.needs[index]
                token = self.pool.acquire(needs) if needs else needs
                if token is not None:  # (None: free here, held by other processes)
                    self._granted = (index, token)
                    return True
            return False
        return True

    def clear(self) -> None:
        """Forget every ready task (the run stops); what was taken for the next is given back."""
        if self._granted is not None:
            index, token = self._granted
            self._granted = None
            if self.needs[index]:
                self.pool.release(self.needs[index], token)
        self._heaps.clear()
        self._arrivals.clear()
        self._queued.clear()
        self._passed_from.clear()

    def popleft(self) -> int:
        """The task that starts now (see the module); its needs are taken from the pool."""
        if not self:
            raise IndexError("no ready task can start now")
        assert self._granted is not None
        (index, token), self._granted = self._granted, None
        heap = self._heaps[self.needs[index]]
        self._drop_stale(heap)
        if heap and heap[0][-1] == index:
            heapq.heappop(heap)
        del self._queued[index]
        del self._passed_from[index]
        self._starts += 1
        needs = self.needs[index]
        if needs:
            self.holding[index] = (needs, token)
        return index

    def blocked(self) -> int:
        """How many ready tasks wait for a resource (their needs are not free now). Any
        thread may ask, as the progress line does: the answer may be a moment old."""
        queued, pool = self._queued, self.pool
        count = 0
        for needs, heap in list(self._heaps.items()):
            if needs and not pool.fits(needs):
                count += sum(1 for entry in list(heap) if queued.get(entry[-1]) == entry[-2])
        return count

    def release(self, index: int) -> None:
        """The attempt of `index` ended: what it held is free again."""
        held = self.holding.pop(index, None)
        if held is not None:
            self.pool.release(*held)

    def _oldest(self) -> int | None:
        arrivals, queued = self._arrivals, self._queued
        while arrivals and queued.get(arrivals[0][1]) != arrivals[0][0]:
            arrivals.popleft()
        return arrivals[0][1] if arrivals else None

    def _drop_stale(self, heap: list[tuple[int, int, float, int, int]]) -> None:
        queued = self._queued
        while heap and queued.get(heap[0][-1]) != heap[0][-2]:
            heapq.heappop(heap)

    def _candidates(self) -> list[int]:
        """The tasks that may start now, best first: those whose needs are free in this run
        (the machine's leases may still refuse them), one per kind of needs (the others of
        a kind wait behind the first); only the oldest when its patience is spent."""
        oldest = self._oldest()
        if oldest is None:
            return []
        pool = self.pool
        if self._starts - self._passed_from[oldest] >= PATIENCE:  # its turn, come what may
            return [oldest] if pool.fits(self.needs[oldest]) else []
        heads = []
        for needs, heap in self._heaps.items():
            self._drop_stale(heap)
            if heap and pool.fits(needs):
                heads.append(heap[0])
        heads.sort()
        return [head[-1] for head in heads]


class Resources:
    """The capacities of one run and each task's needs, checked against them."""

    def __init__(
        self,
        capacities: Mapping[str, float],
        needs: Sequence[Needs],
        leases: MachineLeases | None = None,
    ) -> None:
        self.capacities = dict(capacities)
        self.needs = needs
        self.leases = leases
        """Where the machine's leases are kept, with `[opus] resources_scope = "machine"`."""

    @classmethod
    def for_plan(
        cls, plan: Plan, capacities: Mapping[str, float], leases: MachineLeases | None = None
    ) -> Resources | None:
        """The resources of a run of `plan`, checked before anything runs (see `needs_of`);
        None when it has no capacity, no need and no priority: its ready tasks then start
        in the order they became ready, with nothing to count."""
        tasks = plan.tasks
        if not capacities and not any(t.meta.resources or t.meta.priority for t in tasks):
            return None
        return cls(capacities, needs_of(plan, capacities), leases)

    def queue(self, plan: Plan, ready: Iterable[int]) -> ReadyQueue:
        """The `ReadyQueue` of a run of `plan`, holding the tasks `ready` at its start."""
        priorities = [task.meta.priority for task in plan.tasks]
        chains = chain_lengths(plan.dependents)
        pool = (
            ResourcePool(self.capacities)
            if self.leases is None
            else MachinePool(self.capacities, self.leases)
        )
        queue = ReadyQueue(priorities, chains, self.needs, pool)
        for index in ready:
            queue.append(index)
        return queue
