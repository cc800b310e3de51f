"""`--resume`: the core's `opus_task_restore`, registered for a run as `builtin.resume`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.records import RunRecords


class Resume:
    """`--resume`: restore a named task whose last record for the same command and context
    succeeded with the same checksum, and whose dependencies were all restored. The engine
    registers it, as `builtin.resume`, for a run."""

    def __init__(self) -> None:
        self._records: dict[tuple[int, str, str], RunRecords] = {}

    @hookimpl
    def opus_task_restore(
        self,
        task: Task,
        command: str,
        context: str,
        persistence: StatePersistence,
        upstream: Mapping[str, str],
    ) -> dict[str, Any] | None:
        from opus_core.records import RunRecords

        if task.meta.cached:  # the file cache's to decide: it knows what it is made from
            return None
        if not task.meta.name or any(status != "restored" for status in upstream.values()):
            return None
        key = (id(persistence), command, context)
        records = self._records.get(key)
        if records is None:
            records = self._records[key] = RunRecords(persistence, command, context)
        record = records.resumable(task)
        return None if record is None else dict(record.published or {})
