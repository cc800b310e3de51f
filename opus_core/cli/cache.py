"""`opus why NAME` and `opus cache list|clear`: what the file cache (`opus_core.caching`)
decided, and what it keeps."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from opus_core.cli.commands import COMMAND_HELP
from opus_core.errors import OpusError, did_you_mean

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext
    from opus_core.persistence import StatePersistence


def add_command(commands: Commands) -> None:
    """`opus why` and `opus cache list|clear`: their arguments, and `why`, `list_cache` and
    `clear` to handle them."""
    explain = commands.add(
        "why",
        why,
        help=COMMAND_HELP["why"],
        description="Why the task NAME (one with metadata.outputs, or cache = true) ran or was "
        "restored in the last run that decided about it: `opus run --explain` says the same "
        "as it runs.",
    )
    explain.add_argument("name", metavar="NAME", help="a task's name")
    explain.add_argument("--json", action="store_true", help="print JSON")
    cache = commands.add_group("cache", COMMAND_HELP["cache"], default="list")
    listing = cache.add("list", list_cache, help="every task with a saved fingerprint")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    forget = cache.add(
        "clear",
        clear,
        help="forget cached fingerprints, so the tasks run again",
        description="Forget the fingerprints of the tasks NAME (every command and context), "
        "or without NAME everything the cache keeps: the next run runs them.",
    )
    forget.add_argument("names", nargs="*", metavar="NAME", help="tasks' names (default: all)")


def entries(persistence: StatePersistence) -> dict[str, dict[str, Any]]:
    """The cache entries `persistence` holds (one per task, command and context; one per
    call of a cached function task, whose command and context are `-`), by id, each with
    its `task`, `command` and `context` as its id says them."""
    from opus_core.caching import CACHE_PREFIX, WHY_ID
    from opus_core.file_hashes import HASHES_ID
    from opus_core.functions.caching import FUNCTION_PREFIX

    found = {}
    for key, value in persistence.retrieve_all_state_from_persistence().items():
        if key.startswith(FUNCTION_PREFIX) and isinstance(value, dict):
            name, _, call = key[len(FUNCTION_PREFIX) :].rpartition(":")
            extra = {"task": name, "command": "-", "context": "-", "fingerprint": call}
            found[key] = {**value, **extra, "inputs": {}, "outputs": []}
        elif key.startswith(CACHE_PREFIX) and key not in (WHY_ID, HASHES_ID):
            parts = key[len(CACHE_PREFIX) :].split(":", 2)
            if len(parts) == 3 and isinstance(value, dict):
                named = dict(zip(("command", "context", "task"), parts, strict=True))
                for field in named:  # what the entry says, which a ":" in a name cannot split
                    if isinstance(value.get(field), str):
                        named[field] = value[field]
                found[key] = {**value, **named}
    return found


def why(context: CommandContext) -> int:
    """Print why NAME ran or was restored in the last run that decided about it (exit 5,
    as `opus run`, where there is no `opus.toml`)."""
    from opus_core.caching import WHY_ID
    from opus_core.cli.output import to_json
    from opus_core.cli.scope import NOTHING_IN_SCOPE
    from opus_core.cli.tasks import outside_a_project

    if outside_a_project(context):
        return NOTHING_IN_SCOPE
    args = context.args
    last = context.persistence.get_object_state(WHY_ID)
    decisions = last.get("tasks") if isinstance(last, dict) else None
    decisions = decisions if isinstance(decisions, dict) else {}
    found = decisions.get(args.name)
    if not isinstance(found, dict):
        raise OpusError(_no_decision(context, args.name, decisions))
    answer = {
        "task": args.name,
        "decision": found.get("decision"),
        "reason": found.get("reason"),
        "run": found.get("run"),
        "command": found.get("command"),
        "context": found.get("context"),
    }
    if args.json:
        print(to_json(answer))
    else:
        print(f"{args.name}: {answer['decision']}: {answer['reason']}")
        print(
            f"  (run {answer['run']}, command {answer['command']!r}, context {answer['context']!r})"
        )
    return 0


def _no_decision(context: CommandContext, name: str, decisions: dict[str, Any]) -> str:
    """Why `opus why NAME` has nothing to say, and what would."""
    tasks = {task.task_id: task for task in context.tasks().tasks}
    task = tasks.get(name)
    if task is None:
        return f"no task is named {name!r}{did_you_mean(name, list(tasks))}"
    if not task.meta.cached:
        return (
            f"task {name!r} is not cached: it runs every time; give it metadata.outputs "
            "(or cache = true) for opus to restore it when it is up to date"
        )
    if not decisions:
        return (
            "no run has decided about a cached task yet: `opus run --explain` says why as it runs"
        )
    return (
        f"no run has decided about {name!r} yet (it was not in scope, or did not become "
        "ready); `opus run --explain` says why as it runs"
    )


def list_cache(context: CommandContext) -> int:
    """Every task with a saved fingerprint: its command, context, when it was saved."""
    from opus_core.cli.output import emit, iso, timestamp
    from opus_core.persistence.base import finite_number

    found = entries(context.persistence)
    as_json = context.args.json
    if not found and not as_json:
        print("nothing cached")
        return 0
    rows, records = [], []
    for _, entry in sorted(found.items()):
        saved = finite_number(entry.get("saved_at"))
        inputs = entry.get("inputs")
        inputs = inputs if isinstance(inputs, dict) else {}
        outputs = entry.get("outputs")
        outputs = outputs if isinstance(outputs, list) else []
        fingerprint = str(entry.get("fingerprint", ""))
        rows.append(
            (
                entry.get("task", "-"),
                entry.get("command", "-"),
                entry.get("context", "-"),
                timestamp(saved),
                len(inputs),
                ", ".join(map(str, outputs)) or "-",
                fingerprint[:12],
            )
        )
        records.append(
            {
                "task": entry.get("task"),
                "command": entry.get("command"),
                "context": entry.get("context"),
                "saved_at": iso(saved),
                "fingerprint": fingerprint,
                "inputs": inputs,
                "outputs": outputs,
            }
        )
    headers = ("TASK", "COMMAND", "CONTEXT", "SAVED", "INPUTS", "OUTPUTS", "FINGERPRINT")
    emit(headers, rows, records, as_json)
    return 0


def clear(context: CommandContext) -> int:
    """Forget the fingerprints of the tasks named (all, and the file hashes, without names)."""
    from opus_core.caching import WHY_ID
    from opus_core.file_hashes import HASHES_ID

    persistence = context.persistence
    found = entries(persistence)
    names = context.args.names
    if names:
        known = {str(entry.get("task")) for entry in found.values()}
        for name in names:
            if name not in known:
                raise OpusError(
                    f"nothing cached for {name!r}{did_you_mean(name, sorted(known))}; "
                    "`opus cache list` shows what is"
                )
        doomed = [key for key, entry in found.items() if entry.get("task") in names]
    else:
        doomed = [*found, WHY_ID, HASHES_ID]
    for key in doomed:
        persistence.delete_object_state(key)
    forgotten = sum(1 for key in doomed if key in found)
    sys.stderr.write(
        f"forgot {forgotten} cached fingerprint(s) of {', '.join(names) or 'every task'}\n"
    )
    return 0
