"""`reset_caches`: what opus keeps for the life of a process, forgotten."""

from __future__ import annotations

import sys


def reset_caches() -> None:
    """Forget what opus keeps for the life of a process, so that what runs next in this
    process (`Tasks.from_config`, `opus_core.cli.main`) starts as in a new process.

    That is: the entry points found, the plugins imported from them and the warnings
    given (each once per process); the hook implementations read from plugin modules; the
    configuration files read and the project loaded last (what `project_folder()`
    answers); the state databases checked; the persistence cached function results live
    in, and the capacities function tasks' resources draw from; and
    `LoggerWrapper.stream`, back to "stdout".
    For a test that runs opus more than once in one process, between the runs; the
    `opus_project` fixture calls it when its test ends. A module opus imported stays
    imported (`sys.modules`): a plugin written anew under the same name needs its module
    removed from there too.
    """
    from opus_core.logger import LoggerWrapper

    for name in (
        "opus_core.config",
        "opus_core.plugin.guard",
        "opus_core.plugin.manager",
        "opus_core.persistence.sqlite",
        "opus_core.functions.caching",
        "opus_core.functions.gate",
    ):
        module = sys.modules.get(name)  # a module not imported has nothing to forget
        if module is not None:
            module.reset_caches()
    LoggerWrapper.stream = "stdout"
