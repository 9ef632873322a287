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
    from kiota_http.middleware import RetryHandler
    from msgraph import GraphRequestAdapter
    from msgraph_core import GraphClientFactory
    from msgraph_core.middleware import GraphTelemetryHandler

    from .auth import StaticTokenProvider, msal_provider

    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = target.transport
    if transport is None and target.sandbox_app is not None and not target.graph_url:
        transport = httpx.ASGITransport(app=target.sandbox_app)
    if transport is None:
        transport = httpx.AsyncHTTPTransport(limits=limits)
    http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout, connect=10.0),
                             follow_redirects=False)
    middleware = [m for m in KiotaClientFactory.get_default_middleware(None)
                  if not isinstance(m, RetryHandler)]
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
