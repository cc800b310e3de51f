"""The file cache: a task with `metadata.outputs` that is up to date is restored, not run.

A task's **fingerprint** is the sha256 of its parts: its kind and version, the hash of
each top-level key of its spec (after `${KEY}` substitution), its declared inputs and
outputs, the content hash of every file its inputs name, and the fingerprint of each
task it depends on. A cached task (`TaskMetadata.cached`: it has outputs, or says
`cache = true`) is **up to date** when every output exists, its fingerprint equals
the one saved when it last succeeded, its record says it succeeded, and its outputs are
the files it made then (their content hashes, saved with the fingerprint): it is then
restored with the values it published, through the `opus_task_restore` hook.

The engine registers `FileCache` for a run whose plan has a cached task, as
`builtin.cache`. Asked first (tryfirst) about every task when it is ready, it learns
every task's fingerprint, so a dependent is decided after what it depends on ran: a
task whose upstream ran again but made the same files is still up to date.

What it keeps, in the persistence: per cached task the parts of its fingerprint
(`opus-cache:<command>:<context>:<task>`), removed before the task runs and saved when
it succeeds — a run that fails or is killed midway leaves no entry, so a half-made
output is never taken for a finished one; each cached task's last decision and its
reason, with the run that made it (`WHY_ID`, for `opus why`); and the file hashes
(`opus_core.file_hashes`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opus_core.errors import OpusError
from opus_core.file_hashes import FileHashes
from opus_core.plugin import hookimpl
from opus_core.results import TaskStatus

if TYPE_CHECKING:
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.records import TaskRecord
    from opus_core.results import RunReport, TaskResult

CACHE_PREFIX = "opus-cache:"
"""The state identifiers of the file cache start with this."""

WHY_ID = "opus-cache:why"
"""The state identifier of each cached task's last decision (`opus why`)."""

UP_TO_DATE = "up to date"
"""The reason of every restored task."""

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr)


def cache_id(command: str, context: str, task_id: str) -> str:
    """The state identifier of a task's cache entry (`opus-cache:<command>:<context>:<task>`)."""
    return f"{CACHE_PREFIX}{command}:{context}:{task_id}"


def _sha256(value: object) -> str:
    return hashlib.sha256(_CANONICAL.encode(value).encode()).hexdigest()


def _short(digest: object) -> str:
    return f"{str(digest)[:8]}…" if digest else "none"


class FileCache:
    """The core's make-style cache (see the module), registered for one run.

    `force` is True (every cached task runs) or the names of the tasks that run
    regardless (`opus run --force [NAME…]`); `explain` logs every decision at INFO
    (at DEBUG without it). With `dry_run` it only answers: it changes nothing it keeps.
    """

    def __init__(
        self,
        root: Path,
        persistence: StatePersistence,
        logger: LoggerWrapper,
        force: bool | Iterable[str] = False,
        explain: bool = False,
        dry_run: bool = False,
    ) -> None:
        self.persistence = persistence
        self.logger = logger
        self.hashes = FileHashes(root, persistence)
        self.force: bool | frozenset[str] = force if isinstance(force, bool) else frozenset(force)
        self.explain = explain
        self.dry_run = dry_run
        self.fingerprints: dict[str, str] = {}
        """Every task's fingerprint in this run, by task id, learnt as each was ready."""
        self.decisions: dict[str, dict[str, str]] = {}
        """Per cached task, `{"decision": "ran" | "restored", "reason": ...}`."""
        self._prefetched: dict[str, dict[str, Any]] = {}
        self._looked_up: set[str] = set()
        self._pending: dict[str, tuple[str, dict[str, Any], Task]] = {}
        """Tasks that run: the id and entry to save if they succeed, and their manifest."""

    def prefetch(self, command: str, context: str, tasks: Iterable[Task]) -> None:
        """Read the entries and records of the cached ones of `tasks` in one call
        (`StatePersistence.get_object_states`), for the run of `command` in `context`:
        each is then looked up here, not in the persistence, when its task is ready. Only
        a task's own run changes them, and that comes after."""
        from opus_core.records import record_id

        ids = []
        for task in tasks:
            if task.meta.cached and task.meta.name:
                ids += [
                    cache_id(command, context, task.task_id),
                    record_id(command, context, task.task_id),
                ]
        self._prefetched = self.persistence.get_object_states(ids)
        self._looked_up = set(ids)

    def _state(self, key: str) -> dict[str, Any]:
        """The state of `key`: prefetched, or read now (empty if none, or unreadable)."""
        if key in self._looked_up:
            self._looked_up.discard(key)
            return self._prefetched.pop(key, {})
        try:
            found = self.persistence.get_object_state(key)
        except OpusError:
            return {}  # unreadable: as if there were none (the task runs)
        return found if isinstance(found, dict) else {}

    # -- the hooks ------------------------------------------------------------------------

    @hookimpl(tryfirst=True)
    def opus_task_restore(
        self,
        task: Task,
        command: str,
        context: str,
        values: Mapping[str, Any],
        upstream: Mapping[str, str],
    ) -> dict[str, Any] | None:
        """The values `task` published when it made its outputs, if it is up to date; None
        to run it (its entry is then removed until it succeeds again)."""
        parts = self.parts(task, values, upstream)
        if parts is None:
            return None  # a ${KEY} nothing published: the task fails as it starts
        digest = _sha256(parts)
        self.fingerprints[task.task_id] = digest
        if not task.meta.cached or not task.meta.name:
            return None
        key = cache_id(command, context, task.task_id)
        entry = self._state(key)
        reason = self._stale(task, entry, digest, parts)
        restored = None
        if reason is None:
            restored = self._published(task, command, context, entry)
            if restored is None:
                reason = "it ran since without the cache, or its last run did not succeed"
        if restored is not None:
            self._decided(task, "restored", UP_TO_DATE)
            return restored
        assert reason is not None
        self._decided(task, "ran", reason)
        if self.dry_run:
            return None
        if entry:
            self.persistence.delete_object_state(key)
        entry = {"task": task.task_id, "command": command, "context": context}
        self._pending[task.task_id] = (key, {**entry, "fingerprint": digest, **parts}, task)
        return None

    @hookimpl
    def opus_task_finished(self, task: Task, result: TaskResult) -> None:
        """Save the fingerprint of a task that ran and succeeded, with what it made."""
        pending = self._pending.pop(task.task_id, None)
        if pending is None or result.status is not TaskStatus.SUCCEEDED:
            return
        key, entry, manifest = pending
        missing = [p for p in manifest.meta.outputs if not self.hashes.exists(p)]
        if missing:
            self.logger.warning(
                f"task {task.task_id!r} succeeded without making its output "
                f"{', '.join(missing)}; it will run again next time"
            )
            return
        record = self._record(task, entry["command"], entry["context"], fresh=True)
        if record is None or record.status != TaskStatus.SUCCEEDED:
            return  # no record to restore from (a persistence that keeps none)
        entry["saved_at"] = time.time()
        entry["record_finished_at"] = record.finished_at
        entry["made"] = self.hashes.digests(manifest.meta.outputs)  # what it left behind
        self.persistence.save_object_state(key, entry)

    @hookimpl
    def opus_run_finished(self, report: RunReport) -> None:
        """Keep the file hashes learnt, and each decision for `opus why`."""
        self.hashes.save()
        if self.decisions:  # each task's last decision, whichever run made it
            try:
                known = self.persistence.get_object_state(WHY_ID).get("tasks")
            except OpusError:
                known = None  # unreadable: begun again
            tasks = dict(known) if isinstance(known, dict) else {}
            made_by = {"run": report.run_id, "command": report.command, "context": report.context}
            for name, decision in self.decisions.items():
                tasks[name] = {**decision, **made_by}
            self.persistence.save_object_state(WHY_ID, {"tasks": tasks})

    # -- fingerprints ------------------------------------------------------------------

    def parts(
        self, task: Task, values: Mapping[str, Any], upstream: Mapping[str, str]
    ) -> dict[str, Any] | None:
        """What `task`'s fingerprint is made of (see the module); None when its spec has a
        `${KEY}` that nothing published."""
        from opus_core.errors import MissingValueError
        from opus_core.manifest import display_name
        from opus_core.substitution import substitute

        spec = task.spec
        if task.has_placeholders:
            try:
                spec = substitute(spec, values, display_name(task))
            except MissingValueError:
                return None
        meta = task.meta
        return {
            "kind": f"{task.kind}/{task.version}",
            "spec": {key: _sha256(value) for key, value in spec.items()},
            "inputs": self.hashes.digests(meta.inputs),
            "outputs": list(meta.outputs),
            "upstream": {name: self.fingerprints.get(name) for name in sorted(upstream)},
        }

    def _stale(
        self, task: Task, entry: dict[str, Any], digest: str, parts: dict[str, Any]
    ) -> str | None:
        """Why `task` must run, or None when it is up to date (as far as files say)."""
        if self.force is True or (self.force and task.task_id in self.force):
            return "--force"
        unknown = [name for name, found in parts["upstream"].items() if found is None]
        if unknown:  # another plugin restored it before the cache saw it
            return f"upstream {unknown[0]} was not fingerprinted"
        if not entry:
            return "no saved fingerprint (no earlier successful run)"
        missing = [p for p in task.meta.outputs if not self.hashes.exists(p)]
        if missing:
            return f"output {missing[0]} missing"
        if entry.get("fingerprint") != digest:
            return changes(entry, parts) or "fingerprint changed"
        made = _table(entry, "made")
        now = self.hashes.digests(task.meta.outputs)
        for path in sorted(set(made) | set(now)):
            if made.get(path) != now.get(path):  # rewritten since: by another build, say
                return f"output {path} is not what it made"
        return None

    def _record(
        self, task: Task, command: str, context: str, fresh: bool = False
    ) -> TaskRecord | None:
        """The task's record for `command` and `context`: prefetched, or (`fresh`, or
        not prefetched) read now."""
        from opus_core.records import TaskRecord, record_id

        key = record_id(command, context, task.task_id)
        if fresh:
            self._looked_up.discard(key)
            self._prefetched.pop(key, None)
        data = self._state(key)
        return TaskRecord.from_state(data) if data else None

    def _published(
        self, task: Task, command: str, context: str, entry: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The values `task` published in the run that saved `entry`, or None when its
        record is another run's since (one without the cache: `--resume`, or while the task
        had no outputs) or says it did not succeed."""
        record = self._record(task, command, context)
        if (
            record is None
            or record.status != TaskStatus.SUCCEEDED
            or record.published is None
            or record.finished_at != entry.get("record_finished_at")
        ):
            return None
        return dict(record.published)

    def _decided(self, task: Task, decision: str, reason: str) -> None:
        self.decisions[task.task_id] = {"decision": decision, "reason": reason}
        if self.dry_run:
            if not self.explain:
                return
            decision = "would run" if decision == "ran" else "would be restored"
        message = f"cache: {task.task_id!r} {decision}: {reason}"
        if self.explain:
            self.logger.info(message)
        else:
            self.logger.debug(message)


def changes(entry: Mapping[str, Any], parts: Mapping[str, Any]) -> str | None:
    """What differs between a saved fingerprint's parts and `parts`, in words; None if
    nothing does."""
    found: list[str] = []
    if entry.get("kind") != parts["kind"]:
        found.append(f"kind changed: {entry.get('kind')} → {parts['kind']}")
    old_spec = _table(entry, "spec")
    spec = parts["spec"]
    found.extend(
        f"spec changed: spec.{key}"
        for key in sorted(set(old_spec) | set(spec))
        if old_spec.get(key) != spec.get(key)
    )
    if entry.get("outputs") != parts["outputs"]:
        found.append("outputs changed")
    old_inputs = _table(entry, "inputs")
    inputs = parts["inputs"]
    for path in sorted(set(old_inputs) | set(inputs)):
        before, now = old_inputs.get(path, ""), inputs.get(path, "")
        if before == now:
            continue
        if path not in old_inputs or before is None:
            found.append(f"input {path} added")
        elif path not in inputs:
            found.append(f"input {path} removed")
        elif now is None:
            found.append(f"input {path} missing")
        else:
            found.append(f"input {path} changed (sha256 {_short(before)} → {_short(now)})")
    old_upstream = _table(entry, "upstream")
    upstream = parts["upstream"]
    if set(old_upstream) != set(upstream):
        found.append("dependencies changed")
    else:
        found.extend(
            f"upstream {name} changed"
            for name in sorted(upstream)
            if old_upstream.get(name) != upstream[name]
        )
    if not found:
        return None
    if len(found) > 3:
        found[3:] = [f"and {len(found) - 3} more"]
    return "; ".join(found)


def _table(entry: Mapping[str, Any], key: str) -> dict[str, Any]:
    """`entry[key]` if it is a table, else an empty one (an entry written otherwise)."""
    found = entry.get(key)
    return found if isinstance(found, dict) else {}


def check_outputs(tasks: Iterable[Task]) -> None:
    """Refuse two tasks that declare one output (each would be taken for its maker): a
    `ManifestError` naming both, before anything runs."""
    from opus_core.errors import ManifestError
    from opus_core.manifest import display_name

    makers: dict[str, Task] = {}
    for task in tasks:
        for output in task.meta.outputs:
            path = os.path.normpath(output)
            other = makers.setdefault(path, task)
            if other is not task:
                raise ManifestError(
                    f"tasks {display_name(other)!r} and {display_name(task)!r} both declare "
                    f"the output {output}: a file is made by one task (give one of them "
                    "another output, or merge them)"
                )
