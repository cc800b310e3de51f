"""`OPUS_TRACE_PLUGINS=1` (`opus --trace-plugins`): every hook call on stderr.

The lines come from pluggy's own call monitoring (`add_hookcall_monitoring`):
for each hook call one line with the hook, how long the call took and what
it returned, if anything (or the exception it raised), then one line per implementation in
the order pluggy called them, naming its plugin (`HookImpl.plugin_name`) and,
for a registration hook, what that plugin answered::

    opus: trace: opus_register_runners 0.412 ms
    opus: trace:   1. good -> Careful
    opus: trace:   2. builtin -> SequentialRunner, ProcessRunner, ProcessPoolRunner
    opus: trace: opus_task_finished 0.081 ms
    opus: trace:   1. loud (wrapper)
    opus: trace:   2. good
    opus: trace:   3. builtin.log

Before each plugin is imported it prints `opus: trace: importing plugin NAME
(TARGET)`, so a plugin that ends the process or hangs while it is imported
can be named; Ctrl-C during an import names the plugin (`importing`).
"""

from __future__ import annotations

import contextlib
import os
import reprlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

import pluggy

from opus_core.plugin.guard import Answer

PREFIX = "opus: trace: "


class PluginImportInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) came while a plugin was being imported: names the plugin."""


@contextlib.contextmanager
def importing(name: str, target: str) -> Iterator[None]:
    """Around the import of plugin `name` (module or entry point `target`): a trace line
    first under `$OPUS_TRACE_PLUGINS` (written before the import, so a plugin that ends
    the process there is the last line), and an interruption that names the plugin."""
    if os.environ.get("OPUS_TRACE_PLUGINS", "").strip().lower() in ("1", "true", "yes", "on"):
        sys.stderr.write(f"{PREFIX}importing plugin {name!r} ({target})\n")
        sys.stderr.flush()
    try:
        yield
    except PluginImportInterrupted:
        raise
    except KeyboardInterrupt:
        raise PluginImportInterrupted(
            f"while importing plugin {name!r} ({target}); "
            f"`[opus] disable_plugins = [{name!r}]` leaves it out"
        ) from None


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = 4

Before = Callable[[str, Sequence[pluggy.HookImpl], Mapping[str, Any]], None]
After = Callable[[pluggy.Result[Any], str, Sequence[pluggy.HookImpl], Mapping[str, Any]], None]


def tracer(stream: IO[str]) -> tuple[Before, After]:
    """The `before` and `after` functions for `PluginManager.add_hookcall_monitoring`,
    writing to `stream`."""
    started = threading.local()

    def before(hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        started.__dict__.setdefault("stack", []).append(time.perf_counter())

    def after(
        outcome: pluggy.Result[Any],
        hook: str,
        impls: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, Any],
    ) -> None:
        took = (time.perf_counter() - started.stack.pop()) * 1000
        answers: dict[str, Answer] = {}
        if outcome.exception is not None:
            what = f" raised {type(outcome.exception).__name__}"
        else:
            result = outcome.get_result()
            if isinstance(result, list) and all(isinstance(a, Answer) for a in result):
                answers = {answer.plugin: answer for answer in result}
                what = ""  # each implementation's answer is on its own line
            else:
                what = " -> " + " ".join(_SHORT.repr(result).split())
        lines = [f"{hook} {took:.3f} ms{what}"]
        for number, impl in enumerate(reversed(impls), 1):  # the order pluggy calls them in
            line = f"  {number}. {impl.plugin_name}{_kind(impl)}"
            if impl.plugin_name in answers:
                line += " -> " + ", ".join(map(_name, answers[impl.plugin_name]))
            lines.append(line)
        stream.write("".join(PREFIX + line + "\n" for line in lines))
        stream.flush()

    return before, after


def _name(item: object) -> str:
    return getattr(item, "__name__", None) or type(item).__name__


def _kind(impl: pluggy.HookImpl) -> str:
    marks = [
        mark
        for mark in ("wrapper", "hookwrapper", "tryfirst", "trylast")
        if getattr(impl, mark, False)
    ]
    return f" ({', '.join(marks)})" if marks else ""
