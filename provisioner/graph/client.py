"""The one way to Graph: msgraph-sdk's request adapter, with our middleware and auth.

    sandbox in-process   httpx.ASGITransport to the sandbox app, static token
    served sandbox       --graph-url http://127.0.0.1:PORT, static token
    real tenant          MSAL (certificate or secret from the environment; device code)

Tests swap only the transport (ASGITransport, or respx), never this code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

GRAPH_BASE = "https://graph.microsoft.com/v1.0"
# In-process requests never leave the process; the name just has to be a valid URL.
SANDBOX_BASE = "https://graph.sandbox.invalid/v1.0"
# The app registration the sandbox tenant knows this tool as (its tokens stand for it).
SANDBOX_CLIENT_ID = "5a7d0d1e-0000-4000-8000-00000000beef"


def client_id(tenant: Any) -> str:
    """The app registration's appId: the playbook's, or the one the sandbox knows."""
    return SANDBOX_CLIENT_ID if tenant == "sandbox" else str(tenant.client_id)


@dataclass(frozen=True, slots=True)
class Target:
    """Where Graph is: exactly one of ``sandbox_app``, ``graph_url`` or ``tenant`` is used."""

    sandbox_app: Any = None          # an ASGI app (the in-process sandbox)
    graph_url: str | None = None     # a served sandbox, "http://127.0.0.1:8765"
    tenant: Any = None               # playbook.EntraTenant
    device_code: bool = False
    token_cache: Path | None = None
    transport: httpx.AsyncBaseTransport | None = None  # tests: respx / MockTransport

    @property
    def base_url(self) -> str:
        if self.graph_url:
            return self.graph_url.rstrip("/") + "/v1.0"
        return SANDBOX_BASE if self.tenant is None else GRAPH_BASE


def build_adapter(target: Target, *, timeout: float = 60.0,
                  max_connections: int = 32) -> tuple[Any, httpx.AsyncBaseTransport]:
    """A GraphRequestAdapter whose middleware has no RetryHandler (tenacity owns retries),
    and the transport under it. msgraph-core's AsyncGraphTransport does not close the
    transport it wraps, so the caller must close that one itself."""
    from kiota_abstractions.authentication import BaseBearerTokenAuthenticationProvider
    from kiota_http.kiota_client_factory import KiotaClientFactory
    from kiota_http.middleware import (
        BodyInspectionHandler,
        HeadersInspectionHandler,
        RetryHandler,
        UrlReplaceHandler,
    )
    from msgraph import GraphRequestAdapter
    from msgraph_core import GraphClientFactory
    from msgraph_core.middleware import GraphTelemetryHandler

    from .auth import StaticTokenProvider, msal_provider

    transport = target.transport
    if transport is None and target.sandbox_app is not None and not target.graph_url:
        transport = httpx.ASGITransport(app=target.sandbox_app)
    if transport is None:
        transport = ShardedTransport(max_connections)
    http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout, connect=10.0),
                             follow_redirects=False)
    # Without RetryHandler (tenacity owns retries) and the handlers whose options we never
    # set: inspecting headers and bodies, and replacing /users/TokenToReplace with /me (each
    # middleware costs an OpenTelemetry span per request).
    unused = (RetryHandler, HeadersInspectionHandler, BodyInspectionHandler, UrlReplaceHandler)
    middleware = [m for m in KiotaClientFactory.get_default_middleware(None)
                  if not isinstance(m, unused)]
    middleware.append(GraphTelemetryHandler())
    http = GraphClientFactory.create_with_custom_middleware(middleware, client=http)

    if target.tenant is not None:
        cache = target.token_cache or Path(".provisioner/msal-cache.json")
        provider: Any = msal_provider(target.tenant, cache, device_code=target.device_code)
    else:
        provider = StaticTokenProvider()
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(provider), client=http)
    adapter.base_url = target.base_url
    return adapter, transport


class ShardedTransport(httpx.AsyncBaseTransport):
    """Connection pools of at most ``SHARD`` connections each, a request going to the one with
    the fewest in flight. httpcore's pool walks every connection, and for each idle one counts
    them all again, on every request's start and end (O(connections²) per request: a third of
    the client's CPU with 32 in flight). https://github.com/encode/httpcore/pull/1035"""

    SHARD = 8

    def __init__(self, max_connections: int) -> None:
        shards = max(1, -(-max_connections // self.SHARD))
        limits = httpx.Limits(max_connections=self.SHARD, max_keepalive_connections=self.SHARD)
        tls = httpx.create_ssl_context()  # one: loading the CA bundle takes 30 ms each time
        self.pools = [httpx.AsyncHTTPTransport(verify=tls, limits=limits) for _ in range(shards)]
        self.in_flight = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = min(range(len(self.pools)), key=self.in_flight.__getitem__)
        self.in_flight[i] += 1
        try:
            response = await self.pools[i].handle_async_request(request)
        except BaseException:
            self.in_flight[i] -= 1
            raise
        # The connection is the pool's until the body has been read and the stream closed.
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_Released(response.stream, lambda: self._release(i)),
                              extensions=response.extensions)

    def _release(self, i: int) -> None:
        self.in_flight[i] -= 1

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


class _Released(httpx.AsyncByteStream):
    def __init__(self, stream: Any, release: Any) -> None:
        self._stream, self._release, self._done = stream, release, False

    async def __aiter__(self) -> Any:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if not self._done:
                self._done = True
                self._release()
