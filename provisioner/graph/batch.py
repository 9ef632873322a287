"""JSON batching built by hand, because msgraph-core's batch items are wrong for Graph.

Graph wants each item's ``url`` relative to the version (``/users/{id}/mailboxSettings``) and
refuses an absolute (``https://graph.microsoft.com/v1.0/...``) or versioned (``/v1.0/...``)
one (learn.microsoft.com/graph/json-batching). msgraph-core's ``BatchRequestItem`` copies the
request's full URL and its version-stripping never matches; after the first collection GET the
SDK's shared path parameters carry the base URL, so every later item is absolute
(msgraph-sdk-python #1015, msgraph-sdk-python-core #1116). It also writes ``depends_on``
where Graph reads ``dependsOn``. So the SDK still builds each request (``to_get_request_
information()``), and this module turns it into the item Graph documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .urls import expand

MAX_ITEMS = 20  # Graph's limit per $batch
# scheme://host, then an optional version segment; or a bare version segment
_PREFIX = re.compile(r"^(?:[a-z][a-z0-9+.-]*://[^/]+)?(?:/(?:v1\.0|beta))?(?=/|$)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Item:
    """One request of a batch: an SDK RequestInformation and the ids it waits for."""

    request: Any
    depends_on: tuple[str, ...] = ()


def item_url(request_info: Any) -> str:
    """The request's URL relative to the version, with ``$select``/``$filter`` names as Graph
    writes them (kiota percent-encodes the ``$``)."""
    url = expand(request_info, "")
    path, _, query = url.partition("?")
    path = _PREFIX.sub("", path, count=1) or "/"
    if not path.startswith("/"):
        path = "/" + path
    if not query:
        return path
    pairs = [part.partition("=") for part in query.split("&") if part]
    return path + "?" + "&".join(f"{unquote(k)}{eq}{v}" for k, eq, v in pairs)


def item(index: str, entry: Item) -> dict[str, Any]:
    info = entry.request
    out: dict[str, Any] = {"id": index, "method": info.http_method.name, "url": item_url(info)}
    headers = {k: v for k, v in (info.request_headers or {}).items() if k.lower() != "accept"}
    if info.content:
        out["body"] = json.loads(info.content)
        headers.setdefault("Content-Type", "application/json")
    if headers:
        out["headers"] = headers
    if entry.depends_on:
        out["dependsOn"] = list(entry.depends_on)
    return out


def payload(entries: Sequence[tuple[str, Item]]) -> bytes:
    """The body of one POST /$batch."""
    if not 0 < len(entries) <= MAX_ITEMS:
        raise ValueError(f"a batch holds 1 to {MAX_ITEMS} requests, not {len(entries)}")
    return json.dumps({"requests": [item(i, e) for i, e in entries]},
                      separators=(",", ":")).encode()


def batch_request(body: bytes) -> Any:
    """The POST /$batch itself, sent through the adapter like every other request."""
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation

    info = RequestInformation(Method.POST, "{+baseurl}/$batch")
    info.headers.try_add("Content-Type", "application/json")
    info.headers.try_add("Accept", "application/json")
    info.content = body
    return info
