"""The one place OData string literals are built: single quotes doubled, as OData requires.

The SDK percent-encodes the whole query afterwards, so values need no further escaping here.
"""

from __future__ import annotations

from collections.abc import Iterable


def quote(value: str) -> str:
    """``O'Brien`` → ``'O''Brien'``."""
    return "'" + value.replace("'", "''") + "'"


def eq(prop: str, value: str) -> str:
    return f"{prop} eq {quote(value)}"


def any_of(prop: str, values: Iterable[str]) -> str:
    return f"{prop} in ({', '.join(quote(v) for v in values)})"
