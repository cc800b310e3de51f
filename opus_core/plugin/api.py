"""Which plugin API versions a plugin supports, and whether this opus is one of them.

A plugin's module (or the object registered as the plugin) may declare
`OPUS_PLUGIN_API_REQUIRES`, a PEP 440 specifier such as `">=1.0,<2"`, checked
against `opus_core.PLUGIN_API`; no declaration means any version. A plugin
out of range, or with a declaration that is not a specifier, is broken: it is
not registered, and `opus plugins list` shows why.
"""

from __future__ import annotations

from opus_core.plugin.guard import one_line
from opus_core.version import PLUGIN_API, __version__

API_REQUIRES = "OPUS_PLUGIN_API_REQUIRES"
"""The name under which a plugin declares the plugin API versions it supports."""


def api_mismatch(plugin: object) -> str | None:
    """Why this opus cannot load `plugin`, from its `OPUS_PLUGIN_API_REQUIRES`, or None."""
    try:
        required = getattr(plugin, API_REQUIRES, None)
    except Exception as exc:  # a module's __getattr__ may raise anything
        return f"reading {API_REQUIRES} raised {one_line(exc)}"
    if required is None:
        return None
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        supported = SpecifierSet(required)
    except (InvalidSpecifier, TypeError, AttributeError):
        major = int(PLUGIN_API.partition(".")[0])
        return (
            f"{API_REQUIRES} = {required!r} is not a version specifier; write one such as "
            f"'>={PLUGIN_API},<{major + 1}'"
        )
    if supported.contains(PLUGIN_API, prereleases=True):
        return None
    return (
        f"it supports opus plugin API {required} ({API_REQUIRES}), and opus {__version__} "
        f"has plugin API {PLUGIN_API}; install a release of the plugin made for it"
    )
