"""The version of opus-core."""

__version__ = "0.1.0"

PLUGIN_API = "1.0"
"""The version of the plugin API (the hooks of `opus_core.plugin.spec` and what they may
return). A plugin declares the versions it supports with `OPUS_PLUGIN_API_REQUIRES`, a PEP 440
specifier such as ">=1.0,<2"; a minor version adds to the API, a major version changes it."""
