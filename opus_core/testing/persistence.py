"""`PersistenceContract`: the conformance tests every persistence passes (subclass it in a
plugin's tests)."""

from __future__ import annotations


class PersistenceContract:
    """The persistence contract's tests; a subclass names the persistence under test."""
