"""`RunnerContract`: the conformance tests every runner passes (subclass it in a plugin's tests)."""

from __future__ import annotations


class RunnerContract:
    """The runner contract's tests; a subclass names the runner under test."""
