"""Request URLs from kiota's URI templates, expanded once per request and quickly.

kiota's RequestInformation.url expands its RFC 6570 template with stduritemplate every time
it is read (three times a request), and stduritemplate percent-encodes a value one character
at a time: on this machine a third of a request's client CPU, and most of planning the undo
of 25,000 accounts. uritemplate (python-hyper) expands the same templates to the same URLs
(tests/test_graph_urls.py compares them) about six times faster, and a parsed template is
kept for the next request of its kind.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from uritemplate import URITemplate


@lru_cache(maxsize=512)
def _template(text: str) -> URITemplate:
    return URITemplate(text)


def _value(value: Any) -> Any:
    """As stduritemplate writes it: booleans in lower case, numbers as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


def expand(request_info: Any, base_url: str) -> str:
    """The request's URL (with ``base_url`` for ``{+baseurl}``), from its raw URL or template."""
    raw = request_info.path_parameters.get(request_info.RAW_URL_KEY)
    if isinstance(raw, str) and raw:
        return raw
    values = {**request_info.query_parameters, **request_info.path_parameters, "baseurl": base_url}
    sanitize = request_info._get_sanitized_value
    return str(_template(request_info.url_template).expand(
        {k: _value(sanitize(v)) for k, v in values.items() if v is not None}))
