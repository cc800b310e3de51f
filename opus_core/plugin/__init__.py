"""The opus hook system: write a plugin in five minutes.

A plugin is a module (or any object) whose functions are marked with
`hookimpl` and named after a hook of `opus_core.plugin.spec`::

    # opus_plugin_hello/__init__.py
    from opus_core.plugin import hookimpl


    @hookimpl
    def opus_task_finished(task, result):
        print(f"{result.task_id} {result.status}")

Make it discoverable with an entry point of the group `opus` in the plugin
distribution's `pyproject.toml`::

    [project.entry-points.opus]
    hello = "opus_plugin_hello"

`pip install -e .` and `opus plugins list` shows it. Without installing it,
register it in-process with `Tasks(plugins=[module])`, name its module in
`$OPUS_PLUGINS` (comma separated) or pass `-p MODULE` to `opus`.
`opus plugins new NAME` writes a complete distribution with a test that
uses `opus_core.testing`, the plugin author's pytest fixtures.

Hooks are called through pluggy with pluggy's semantics: `tryfirst` and
`trylast` order implementations, `wrapper=True` (and the older
`hookwrapper=True`) wrap the others, and `firstresult` hooks stop at the
first non-None answer. `docs/hooks.md` lists every hook.

Say which plugin API versions the plugin was written for (`opus_core.PLUGIN_API`
is this opus's) with a PEP 440 specifier in its module; an opus outside the
range reports the plugin as broken instead of calling it::

    OPUS_PLUGIN_API_REQUIRES = ">=1.0,<2"

`opus --trace-plugins` (or `OPUS_TRACE_PLUGINS=1`) shows every hook call, the
plugins that answered and how long it took. `docs/plugins.md` says more.
"""

from __future__ import annotations

import pluggy

PROJECT = "opus"
"""The pluggy project name: markers, the entry-point group and `opus_` hook names."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec"]
