"""The hookspecs' old home: `opus_core.plugin.spec` holds them now; this name keeps working."""

from opus_core.plugin import PROJECT, hookimpl, hookspec
from opus_core.plugin.spec import *  # noqa: F403
from opus_core.plugin.spec import __doc__ as __doc__

__all__ = ["PROJECT", "hookimpl", "hookspec"]
