"""What `opus run NAME ...` and `-k EXPR` select: the core's `opus_modify_tasks`,
registered for a run as `builtin.selection` and `builtin.keywords`, and the `-k`
expression language (`KeywordExpression`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.manifest import Task


class Selection:
    """`opus run NAME ...`: keep the named tasks and every task they depend on."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    @hookimpl
    def opus_modify_tasks(self, tasks: list[Task]) -> None:
        from opus_core.errors import DependencyError
        from opus_core.graph import close_over_dependencies

        by_name = {t.meta.name: t for t in tasks if t.meta.name}
        missing = [n for n in self.names if n not in by_name]
        if missing:
            import difflib

            close = difflib.get_close_matches(missing[0], list(by_name), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            names = sorted(by_name)
            known = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if names[10:] else "")
            raise DependencyError(f"no task named {missing[0]!r}{hint} (tasks: {known or 'none'})")
        keep = close_over_dependencies(tasks, [by_name[n] for n in self.names])
        tasks[:] = [t for t in tasks if id(t) in keep]


class KeywordSelection:
    """`-k EXPR`: keep the tasks `EXPR` matches and every task they depend on.

    It runs after the other `opus_modify_tasks` implementations (`trylast`), so
    `opus run NAME -k EXPR` narrows the named tasks and their dependencies.
    Selecting nothing leaves nothing: the command says so.
    """

    def __init__(self, expression: KeywordExpression | str) -> None:
        if isinstance(expression, str):
            expression = KeywordExpression(expression)
        self.expression = expression

    @hookimpl(trylast=True)
    def opus_modify_tasks(self, tasks: list[Task]) -> None:
        from opus_core.graph import close_over_dependencies

        keep = close_over_dependencies(tasks, [t for t in tasks if self.expression.matches(t)])
        tasks[:] = [t for t in tasks if id(t) in keep]


class KeywordExpression:
    """A `-k` expression, as pytest's: words joined by `and`, `or`, `not` and parentheses.

    A word matches a task whose name contains it, ignoring case (`-k data`
    matches `database`); `key=value` matches a task whose label `key` is exactly
    `value`. Words and values may be quoted ('...' or "...") to hold spaces,
    parentheses, `=` or the words `and`/`or`/`not`. An empty expression matches
    every task. A malformed one raises `ValueError` saying where it goes wrong.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._tokens = _keyword_tokens(text)
        self._at = 0
        if not self._tokens:
            self._match: _Matcher = lambda name, labels: True
            return
        self._match = self._or()
        if self._at < len(self._tokens):
            kind, value, column = self._tokens[self._at]
            hint = "; join words with 'and' or 'or'" if kind == "word" else ""
            raise self._error(f"unexpected {value!r} at column {column}{hint}")

    def matches(self, task: Task) -> bool:
        """Whether the expression selects `task`."""
        return self._match((task.meta.name or "").lower(), task.meta.labels)

    def __repr__(self) -> str:
        return f"KeywordExpression({self.text!r})"

    # A recursive-descent parser over the tokens: or_expr := and_expr ('or' and_expr)*,
    # and_expr := not_expr ('and' not_expr)*, not_expr := 'not' not_expr | '(' or_expr ')'
    # | word ['=' word].

    def _or(self) -> _Matcher:
        parts = [self._and()]
        while self._accept("or"):
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        return lambda name, labels: any(part(name, labels) for part in parts)

    def _and(self) -> _Matcher:
        parts = [self._not()]
        while self._accept("and"):
            parts.append(self._not())
        if len(parts) == 1:
            return parts[0]
        return lambda name, labels: all(part(name, labels) for part in parts)

    def _not(self) -> _Matcher:
        if self._accept("not"):
            inner = self._not()
            return lambda name, labels: not inner(name, labels)
        kind, value, column = self._next("a task name, key=value, 'not' or '('")
        if kind == "(":
            inner = self._or()
            if not self._accept(")"):
                raise self._error(f"the '(' at column {column} is never closed")
            return inner
        if kind != "word":
            raise self._error(
                f"expected a task name, key=value, 'not' or '(' at column {column}, found {value!r}"
            )
        if not self._accept("="):
            word = value.lower()
            return lambda name, labels: word in name
        kind, label_value, at = self._next(f"a value after {value}=")
        if kind != "word":
            raise self._error(f"expected a value after {value}= at column {at}")
        return lambda name, labels: labels.get(value) == label_value

    def _accept(self, kind: str) -> bool:
        if self._at < len(self._tokens) and self._tokens[self._at][0] == kind:
            self._at += 1
            return True
        return False

    def _next(self, expected: str) -> tuple[str, str, int]:
        if self._at == len(self._tokens):
            raise self._error(f"expected {expected} at column {len(self.text) + 1}, found the end")
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _error(self, message: str) -> ValueError:
        return ValueError(f"cannot read the expression {self.text!r}: {message}")


_Matcher = Callable[[str, Mapping[str, str]], bool]
"""A compiled `-k` expression: (the task's name in lower case, its labels) -> selected."""


def _keyword_tokens(text: str) -> list[tuple[str, str, int]]:
    """`(kind, value, column)` for each token of a `-k` expression; kind is the operator,
    a parenthesis, `=` or `word` (quoted words keep their text, without the quotes)."""
    import re

    tokens = []
    for match in re.finditer(r"""\s*(?:([()=])|"([^"]*)"|'([^']*)'|([^\s()="']+)|(\S))""", text):
        column = match.start() + len(match.group()) - len(match.group().lstrip()) + 1
        symbol, double, single, bare, stray = match.groups()
        if stray is not None:
            raise ValueError(
                f"cannot read the expression {text!r}: unclosed quote at column {column}"
            )
        if symbol is not None:
            tokens.append((symbol, symbol, column))
        elif bare in ("and", "or", "not"):
            tokens.append((bare, bare, column))
        else:
            value = bare if bare is not None else double if double is not None else single
            tokens.append(("word", value, column))
    return tokens
