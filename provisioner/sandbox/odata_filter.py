"""The subset of OData ``$filter`` that Entra ID answers on directory objects.

``eq``, ``ne``, ``startswith``, ``endswith``, ``in``, ``and``, ``or``, ``not`` and
parentheses, over the properties a resource declares filterable. Like Entra, string
comparison ignores case; ``ne``, ``not`` and ``endswith`` are advanced queries that need
``ConsistencyLevel: eventual`` with ``$count=true``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')"
    r"|(?P<dt>\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d))"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<punct>[(),])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_/.]*))"
)


class FilterError(ValueError):
    def __init__(self, message: str, prop: str | None = None) -> None:
        super().__init__(message)
        self.prop = prop


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"Syntax error at position {pos} in '{text}'.")
        pos = m.end()
        if m["str"] is not None:
            out.append(("lit", m["str"][1:-1].replace("''", "'")))
        elif m["dt"] is not None:
            out.append(("lit", _datetime(m["dt"])))
        elif m["num"] is not None:
            out.append(("lit", float(m["num"]) if "." in m["num"] else int(m["num"])))
        elif m["punct"] is not None:
            out.append((m["punct"], m["punct"]))
        else:
            word = m["word"]
            low = word.lower()
            if low in {"true", "false"}:
                out.append(("lit", low == "true"))
            elif low == "null":
                out.append(("lit", None))
            else:
                out.append(("word", word))
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _get(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class _Parser:
    def __init__(self, text: str, filterable: set[str], advanced: bool, resource: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.filterable = filterable
        self.advanced = advanced
        self.resource = resource

    def peek(self, offset: int = 0) -> tuple[str, Any] | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def take(self, kind: str | None = None) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None or (kind is not None and tok[0] != kind):
            raise FilterError("Invalid filter clause: unexpected end or token.")
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "word" and tok[1].lower() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Predicate:
        pred = self.or_expr()
        if self.peek() is not None:
            raise FilterError("Invalid filter clause: unexpected token after expression.")
        return pred

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.keyword("or"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda d: any(p(d) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.unary()]
        while self.keyword("and"):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda d: all(p(d) for p in parts))

    def unary(self) -> Predicate:
        if self.keyword("not"):
            self.need_advanced("not")
            inner = self.unary()
            return lambda d: not inner(d)
        if self.peek() and self.peek()[0] == "(":  # type: ignore[index]
            self.take("(")
            inner = self.or_expr()
            self.take(")")
            return inner
        return self.comparison()

    def need_advanced(self, what: str) -> None:
        if not self.advanced:
            raise FilterError(
                f"Operator '{what}' is not supported because the required parameters might be"
                " missing. Try adding $count with a value of true and ConsistencyLevel header"
                " with a value of eventual."
            )

    def prop(self) -> str:
        _, name = self.take("word")
        if name not in self.filterable:
            raise FilterError(
                f"Unsupported or invalid query filter clause specified for property '{name}'"
                f" of resource '{self.resource}'.",
                name,
            )
        if name.startswith("onPremisesExtensionAttributes/"):
            self.need_advanced("eq")
        return name

    def literal(self) -> Any:
        return _fold(self.take("lit")[1])

    def comparison(self) -> Predicate:
        tok = self.peek()
        nxt = self.peek(1)
        if tok and tok[0] == "word" and nxt and nxt[0] == "(":
            func = tok[1].lower()
            if func not in {"startswith", "endswith"}:
                raise FilterError(f"Unsupported function '{tok[1]}'.")
            if func == "endswith":
                self.need_advanced("endsWith")
            self.i += 2
            name = self.prop()
            self.take(",")
            value = self.literal()
            self.take(")")
            if not isinstance(value, str):
                raise FilterError(f"{func} needs a string literal.")
            test = str.startswith if func == "startswith" else str.endswith
            return lambda d: isinstance(v := _fold(_get(d, name)), str) and test(v, value)
        name = self.prop()
        _, op = self.take("word")
        op = op.lower()
        if op == "in":
            self.take("(")
            values = [self.literal()]
            while self.peek() and self.peek()[0] == ",":  # type: ignore[index]
                self.take(",")
                values.append(self.literal())
            self.take(")")
            if len(values) > 15:
                raise FilterError("Too many child clauses specified in search filter expression"
                                  " containing 'OR' operators: 16. Max allowed: 15.")
            return lambda d: _matches_any(_get(d, name), values)
        value = self.literal()
        if op in _ORDER:
            test = _ORDER[op]
            return lambda d: _ordered(_get(d, name), value, test)
        if op == "eq":
            return lambda d: _matches_any(_get(d, name), [value])
        if op == "ne":
            self.need_advanced("ne")
            return lambda d: not _matches_any(_get(d, name), [value])
        raise FilterError(f"Unsupported operator '{op}'.")


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "ge": lambda a, b: a >= b, "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b, "lt": lambda a, b: a < b,
}


def _datetime(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ordered(actual: Any, value: Any, test: Callable[[Any, Any], bool]) -> bool:
    if actual is None:
        return False
    if isinstance(value, dt.datetime):
        actual = _datetime(actual) if isinstance(actual, str) else actual
    try:
        return bool(test(actual, value))
    except TypeError:
        return False


def _matches_any(actual: Any, values: list[Any]) -> bool:
    if isinstance(actual, list):  # collection properties such as otherMails
        return any(_fold(a) in values for a in actual)
    return _fold(actual) in values


def compile_filter(text: str, filterable: set[str], *, advanced: bool, resource: str) -> Predicate:
    return _Parser(text, filterable, advanced, resource).parse()
