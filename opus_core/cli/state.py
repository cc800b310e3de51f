"""`opus state list|show|clear` over the configured persistence."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from opus_core.cli.commands import COMMAND_HELP
from opus_core.errors import OpusError
from opus_core.persistence import RUN_HISTORY, RUN_RECORDS, MemoryPersistence, StatePersistence
from opus_core.persistence.base import finite_number

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext


def add_command(commands: Commands) -> None:
    """`opus state list|show|clear`: their arguments, and `list_state`, `show` and `clear` to
    handle them."""
    state = commands.add_group("state", COMMAND_HELP["state"], default="list")
    state_list = state.add("list", list_state, help="every identifier with state")
    state_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    state_show = state.add(
        "show",
        show,
        help="the state of one id, or the record of one task",
        description="The state of ID, or the last record of the task NAME for a command and "
        "context (the id opus-run:COMMAND:CONTEXT:NAME).",
    )
    state_show.add_argument("id", metavar="ID|NAME", help="a state id, or a task's name")
    state_show.add_argument(
        "--command", default="apply", help="the command of a task's record (default: apply)"
    )
    state_show.add_argument(
        "--context", default="default", help="the context of a task's record (default: default)"
    )
    state_show.add_argument("--json", action="store_true", help="print JSON (times in ISO 8601)")
    forget = state.add(
        "clear",
        clear,
        help="forget the state of one id, or of all",
        description="Forget the state of ID, or the last record of the task NAME; without "
        "ID, all state and task records "
        "(asked on a terminal, --yes elsewhere); the run history stays (opus runs prune).",
    )
    forget.add_argument(
        "id", metavar="ID|NAME", nargs="?", help="a state id or a task's name (default: all)"
    )
    forget.add_argument(
        "--command", default="apply", help="the command of a task's record (default: apply)"
    )
    forget.add_argument(
        "--context", default="default", help="the context of a task's record (default: default)"
    )
    forget.add_argument("-y", "--yes", action="store_true", help="forget everything without asking")


def location(persistence: StatePersistence) -> str:
    """Where `persistence` keeps state: its folder or file, else what it is."""
    for attribute in ("directory", "path"):
        where = getattr(persistence, attribute, None)
        if isinstance(where, (str, os.PathLike)):
            return f"{os.fspath(where)} (persistence {persistence.name!r})"
    if isinstance(persistence, MemoryPersistence):
        return "in memory, for this process only (persistence 'memory')"
    return f"persistence {persistence.name!r}"


# -- times: `output`'s, for values that may be anything (state is whatever was saved) ---------


def _local(value: Any) -> str:
    from opus_core.cli.output import timestamp

    try:
        return timestamp(finite_number(value))
    except (OverflowError, OSError, ValueError):
        return "-"


def _iso(value: Any) -> Any:
    from opus_core.cli.output import iso

    try:
        return iso(finite_number(value)) if finite_number(value) is not None else value
    except (OverflowError, OSError, ValueError):
        return value


def _duration(value: Any) -> str:
    from opus_core.cli.output import duration

    seconds = finite_number(value)
    return duration(seconds) if seconds is not None and 0 <= seconds < 1e9 else "-"


def _without_history(state: dict[str, Any]) -> dict[str, Any]:
    """`state` without the runs of the history some persistences keep as state
    (`opus runs` shows and prunes those)."""
    return {key: value for key, value in state.items() if not key.startswith(RUN_HISTORY)}


def _is_record(data: Any) -> bool:
    from opus_core.records import RECORD_KIND

    return isinstance(data, dict) and data.get("record") == RECORD_KIND


def _for_json(data: Any) -> Any:
    """A state as JSON output: a task record's `finished_at` in ISO 8601."""
    if _is_record(data) and "finished_at" in data:
        return {**data, "finished_at": _iso(data["finished_at"])}
    return data


# -- list -----------------------------------------------------------------------------


def list_state(context: CommandContext) -> int:
    """Every identifier that has state, with its status, finish time and duration.

    The first line, on stderr, says where the state is (stdout stays the table).
    """
    import json

    from opus_core.cli.output import emit

    args = context.args
    persistence = context.persistence
    sys.stderr.write(f"state: {location(persistence)}\n")
    state = _without_history(persistence.retrieve_all_state_from_persistence())
    as_json = getattr(args, "json", False)
    if not state and not as_json:
        print("no state")
        return 0
    rows = []
    records = []
    for key, value in sorted(state.items()):
        data = value if isinstance(value, dict) else {}
        size = len(json.dumps(value))
        rows.append(
            (
                key,
                data.get("status", "-"),
                _local(data.get("finished_at")),
                _duration(data.get("duration")),
                size,
            )
        )
        records.append(
            {
                "id": key,
                "task": data.get("task") if _is_record(data) else None,
                "command": data.get("command") if _is_record(data) else None,
                "context": data.get("context") if _is_record(data) else None,
                "status": data.get("status"),
                "attempts": data.get("attempts"),
                "finished_at": _iso(data.get("finished_at")),
                "duration": finite_number(data.get("duration")),
                "bytes": size,
            }
        )
    emit(("ID", "STATUS", "FINISHED", "DURATION", "BYTES"), rows, records, as_json)
    return 0


# -- show -----------------------------------------------------------------------------


def resolve(persistence: StatePersistence, wanted: str, command: str, context: str) -> str:
    """The state id `wanted` names: itself, else the record of the task so named.

    Raises an `OpusError` with the closest ids and task names when neither has state.
    """
    from opus_core.records import record_id

    if persistence.get_object_state(wanted):
        return wanted
    as_task = record_id(command, context, wanted)
    if persistence.get_object_state(as_task):
        return as_task
    ids = list(persistence.retrieve_all_state_from_persistence())
    raise OpusError(_not_found(wanted, ids, command, context))


def _not_found(wanted: str, ids: list[str], command: str, context: str) -> str:
    import difflib

    from opus_core.records import record_id

    prefix = record_id(command, context, "")
    names = [key[len(prefix) :] for key in ids if key.startswith(prefix)]
    message = (
        f"no state for {wanted!r}, and no task {wanted!r} has a record for command "
        f"{command!r} in context {context!r}"
    )
    # The same task under another command or context is the likeliest slip.
    elsewhere = sorted(
        key for key in ids if key.startswith(RUN_RECORDS) and key.rpartition(":")[2] == wanted
    )
    close = difflib.get_close_matches(wanted, names + ids, n=3)
    if elsewhere:
        scopes = [key[len(RUN_RECORDS) :].rsplit(":", 1)[0].split(":", 1) for key in elsewhere]
        options = "; ".join(f"--command {c} --context {x}" for c, x in scopes[:3])
        return f"{message}; it has records with {options}"
    if close:
        return f"{message}; did you mean {' or '.join(repr(c) for c in close)}?"
    return f"{message}; `opus state list` shows what there is"


def show(context: CommandContext) -> int:
    """The state of one identifier or task: a task record for people, else JSON."""
    import json

    from opus_core.cli.output import to_json

    args = context.args
    persistence = context.persistence
    key = resolve(persistence, args.id, args.command, args.context)
    data = persistence.get_object_state(key)
    if getattr(args, "json", False):
        print(to_json({"id": key, "state": _for_json(data)}))
    elif _is_record(data):
        print(_describe_record(key, data))
    else:
        print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def _describe_record(key: str, data: dict[str, Any]) -> str:
    import json

    lines = [f"id:        {key}"]
    for field in ("task", "command", "context", "status", "attempts"):
        if field in data:
            lines.append(f"{field + ':':<10} {data[field]}")
    lines.append(f"{'finished:':<10} {_local(data.get('finished_at'))}")
    lines.append(f"{'duration:':<10} {_duration(data.get('duration'))}")
    if data.get("checksum"):
        lines.append(f"{'checksum:':<10} {data['checksum']}")
    if data.get("error"):
        lines.append(f"{'error:':<10} {data['error']}")
    shown = {"record", "task", "command", "context", "status", "attempts", "finished_at"}
    shown |= {"duration", "checksum", "error", "published", "traceback"}
    for field in sorted(set(data) - shown):  # what newer records add
        lines.append(f"{field + ':':<10} {json.dumps(data[field])}")
    if data.get("published") is not None:
        published = json.dumps(data["published"], indent=2, sort_keys=True)
        lines.append("published:\n" + _indent(published))
    if data.get("traceback"):
        lines.append("traceback:\n" + _indent(str(data["traceback"]).rstrip()))
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


# -- clear ----------------------------------------------------------------------------


def clear(context: CommandContext) -> int:
    """Forget one identifier's state (a state id, or a task's name as `show` takes it), or
    everything (asked first, or `--yes`; nothing to ask when nothing is stored)."""
    from opus_core.records import record_id

    args = context.args
    persistence = context.persistence
    if args.id is not None:
        command = getattr(args, "command", "apply")
        task_context = getattr(args, "context", "default")
        if not persistence.delete_object_state(args.id) and not (
            persistence.delete_object_state(record_id(command, task_context, args.id))
        ):
            ids = list(persistence.retrieve_all_state_from_persistence())
            raise OpusError(_not_found(args.id, ids, command, task_context))
        persistence.persist_all_state()
        print("cleared 1 record(s)")
        return 0
    keys = list(_without_history(persistence.retrieve_all_state_from_persistence()))
    # A persistence that can find damaged entries (the file one) lists them after reading
    # and removes them too, or their warning would repeat on every command.
    remove_damaged = getattr(persistence, "remove_damaged", None)
    damaged = len(getattr(persistence, "problems", None) or ()) if callable(remove_damaged) else 0
    if not keys and not damaged:
        print("cleared 0 record(s)")
        return 0
    if not getattr(args, "yes", False) and not _confirmed(persistence, len(keys), damaged):
        sys.stderr.write("nothing cleared\n")
        return 0
    for key in keys:
        persistence.delete_object_state(key)
    removed = remove_damaged() if callable(remove_damaged) else 0
    persistence.persist_all_state()
    print(f"cleared {len(keys)} record(s)" + (f" and {removed} damaged file(s)" if removed else ""))
    return 0


def _confirmed(persistence: StatePersistence, count: int, damaged: int = 0) -> bool:
    """Ask on a terminal whether to forget everything; elsewhere, `--yes` is required."""
    where = location(persistence)
    what = f"all {count} record(s)" + (f" and {damaged} damaged file(s)" if damaged else "")
    if not sys.stdin.isatty():
        raise OpusError(
            f"`opus state clear` forgets {what} in {where}; "
            "pass --yes to confirm (stdin is not a terminal), or give one ID or task name"
        )
    sys.stderr.write(f"Forget {what} in {where}? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")
