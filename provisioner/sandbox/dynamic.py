"""Dynamic membership rules, as Entra evaluates them (learn.microsoft.com/entra/identity/users/
groups-dynamic-membership), for the part of the syntax the sandbox knows: expressions
``user.PROPERTY -OPERATOR "value"`` (operators -eq, -ne, -startsWith, -notStartsWith,
-contains, -notContains; case-insensitive; a double quote in a value escaped with a
backtick), in parentheses or not, joined by -and. Anything else is refused as Graph refuses
an invalid rule. The sandbox's own reading: it never imports the client's."""

from __future__ import annotations

import re
from typing import Any

_EXPRESSION = re.compile(
    r'^\(?\s*user\.(?P<prop>[A-Za-z0-9_]+)\s+-(?P<op>eq|ne|startsWith|notStartsWith|contains|notContains)'
    r'\s+"(?P<value>(?:[^"`]|`")*)"\s*\)?$', re.IGNORECASE)
_AND = re.compile(r"\s+-and\s+", re.IGNORECASE)
EXTENSION_ATTRIBUTES = {f"extensionattribute{i}" for i in range(1, 16)}

Rule = list[tuple[str, str, str]]


def parse(rule: str) -> Rule:
    """The rule's expressions; ValueError for a rule the sandbox cannot evaluate."""
    terms = []
    for part in _AND.split(rule.strip()):
        m = _EXPRESSION.match(part.strip())
        if m is None:
            raise ValueError(part)
        terms.append((m["prop"], m["op"].lower(), m["value"].replace('`"', '"')))
    return terms


def _property(user: dict[str, Any], name: str) -> str:
    if name.lower() in EXTENSION_ATTRIBUTES:  # user.extensionAttribute15: onPremisesExtensionAttributes
        ext = user.get("onPremisesExtensionAttributes") or {}
        value = next((v for k, v in ext.items() if k.lower() == name.lower()), None)
    else:
        value = next((v for k, v in user.items() if k.lower() == name.lower()), None)
    return "" if value is None else str(value)


def selects(rule: Rule, user: dict[str, Any]) -> bool:
    for prop, op, value in rule:
        have, want = _property(user, prop).lower(), value.lower()
        ok = {"eq": have == want, "ne": have != want, "startswith": have.startswith(want),
              "notstartswith": not have.startswith(want), "contains": want in have,
              "notcontains": want not in have}[op]
        if not ok:
            return False
    return True
