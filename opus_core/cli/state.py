"""`opus state list|show|clear` over the configured persistence."""

from __future__ import annotations

import argparse
import json
import os
import sys

from opus_core.assembly import Assembly
from opus_core.cli.output import table
from opus_core.config import load_config
from opus_core.errors import OpusError
from opus_core.persistence import StatePersistence


def _persistence(args: argparse.Namespace) -> StatePersistence:
    assembly = Assembly(load_config(getattr(args, "config", None)))
    return assembly.persistence()


def location(persistence: StatePersistence) -> str:
    """Where `persistence` keeps state: its folder or file, else what it is."""
    for attribute in ("directory", "path"):
        where = getattr(persistence, attribute, None)
        if isinstance(where, (str, os.PathLike)):
            return f"{os.fspath(where)} (persistence {persistence.name!r})"
    if type(persistence) is StatePersistence:
        return "in memory, for this process only (persistence 'memory')"
    return f"persistence {persistence.name!r}"


def list_state(args: argparse.Namespace) -> int:
    """Every identifier that has state, with its status when it is a task record.

    The first line, on stderr, says where the state is (stdout stays the table).
    """
    persistence = _persistence(args)
    sys.stderr.write(f"state: {location(persistence)}\n")
    state = persistence.retrieve_all_state_from_persistence()
    if not state:
        print("no state")
        return 0
    rows = [
        (key, value.get("status", "-"), len(json.dumps(value)))
        for key, value in sorted(state.items())
    ]
    print(table(("ID", "STATUS", "BYTES"), rows))
    return 0


def show(args: argparse.Namespace) -> int:
    """The state of one identifier, as JSON."""
    data = _persistence(args).get_object_state(args.id)
    if not data:
        raise OpusError(f"no state for {args.id!r}; `opus state list` shows what there is")
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def clear(args: argparse.Namespace) -> int:
    """Forget one identifier's state, or everything."""
    persistence = _persistence(args)
    if args.id is not None:
        if not persistence.delete_object_state(args.id):
            raise OpusError(f"no state for {args.id!r}; `opus state list` shows what there is")
        cleared = 1
    else:
        keys = list(persistence.retrieve_all_state_from_persistence())
        for key in keys:
            persistence.delete_object_state(key)
        cleared = len(keys)
    # A persistence that can find damaged entries (the file one) removes them too, or their
    # warning would repeat on every command with nothing to clear them by.
    remove_damaged = getattr(persistence, "remove_damaged", None)
    damaged = remove_damaged() if args.id is None and callable(remove_damaged) else 0
    persistence.persist_all_state()
    print(f"cleared {cleared} record(s)" + (f" and {damaged} damaged file(s)" if damaged else ""))
    return 0
