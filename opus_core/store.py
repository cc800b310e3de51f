"""`KeyValueStore`: the values tasks publish for the tasks that depend on them."""

from __future__ import annotations

from typing import Any


class KeyValueStore:
    """A dict of values (`.store`) with the seed's `.save(key, value)`."""

    def __init__(self, store: dict[str, Any] | None = None) -> None:
        self.store: dict[str, Any] = {} if store is None else store

    def save(self, key: str, value: Any) -> None:
        """Set `key` to `value`."""
        self.store[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default`."""
        return self.store.get(key, default)

    def __repr__(self) -> str:
        return f"KeyValueStore({self.store!r})"


class View:
    """The values one task sees: key -> (plan position of the task that published it, or
    -1 for a value the run started with; the value). The scheduler's, per task."""

    __slots__ = ("_plain", "entries")

    def __init__(self, entries: dict[str, tuple[int, Any]]) -> None:
        self.entries = entries
        self._plain: dict[str, Any] | None = None

    @property
    def plain(self) -> dict[str, Any]:
        """The values alone, key -> value."""
        if self._plain is None:
            self._plain = {k: v for k, (_, v) in self.entries.items()}
        return self._plain

    @staticmethod
    def merged(views: list[View]) -> View:
        """What a task with these dependencies' views sees: for each key, the value
        published latest in plan order (the largest position)."""
        unique = list({id(v): v for v in views}.values())
        if len(unique) == 1:
            return unique[0]
        unique.sort(key=lambda v: len(v.entries), reverse=True)
        entries = dict(unique[0].entries)
        for view in unique[1:]:
            for key, entry in view.entries.items():
                current = entries.get(key)
                if current is None or current[0] < entry[0]:
                    entries[key] = entry
        return View(entries)
