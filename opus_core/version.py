"""The version of opus-core."""

__version__ = "0.1.0"
