"""Access tokens for the request adapter: a static one for the sandbox, MSAL for a tenant.

Only this module and ``client.py`` know about MSAL. Tokens and secrets never leave here:
they are neither logged nor put in an error message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator

from ..errors import ConfigurationError, TransportError

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_HOSTS = ["graph.microsoft.com"]


class StaticTokenProvider(AccessTokenProvider):
    """The sandbox accepts any bearer token; each distinct token is one app for throttling."""

    def __init__(self, token: str = "sandbox-token") -> None:
        self._token = token

    async def get_authorization_token(self, uri: str, additional_authentication_context: dict[str, Any] = {}) -> str:  # noqa: B006, E501
        return self._token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


class MsalTokenProvider(AccessTokenProvider):
    """Client credentials (a certificate, a secret from the environment, or the runner's own
    OIDC token through workload identity federation), a managed identity, or device code for
    an admin at a terminal. MSAL's cache means one token per hour, not per call."""

    def __init__(self, app: Any, *, device_code: bool = False, managed: bool = False,
                 persist: Callable[[], None] = lambda: None) -> None:
        self._app = app
        self._device_code = device_code
        self._managed = managed
        self._persist = persist
        self._lock = asyncio.Lock()

    async def get_authorization_token(self, uri: str, additional_authentication_context: dict[str, Any] = {}) -> str:  # noqa: B006, E501
        if urlparse(uri).scheme != "https" or urlparse(uri).hostname not in GRAPH_HOSTS:
            raise ConfigurationError("refusing to send a Graph token to a host other than Graph")
        async with self._lock:
            try:
                result = await asyncio.to_thread(self._acquire)
            except (OSError, httpx.HTTPError) as exc:
                raise TransportError(f"cannot reach Microsoft Entra sign-in: {type(exc).__name__}") from None
            self._persist()
        if "access_token" not in result:
            # error_description names the problem (AADSTS code) and holds no secret.
            first_line = (result.get("error_description") or "").split("\n")[0]
            raise ConfigurationError(
                f"sign-in to Microsoft Entra failed: {result.get('error')}: {first_line}")
        return str(result["access_token"])

    def _acquire(self) -> dict[str, Any]:
        if self._managed:
            return dict(self._app.acquire_token_for_client(resource=GRAPH_RESOURCE))
        if not self._device_code:
            return dict(self._app.acquire_token_for_client(scopes=[GRAPH_SCOPE]))
        accounts = self._app.get_accounts()
        if accounts:
            cached = self._app.acquire_token_silent([GRAPH_SCOPE], account=accounts[0])
            if cached:
                return dict(cached)
        flow = self._app.initiate_device_flow(scopes=[GRAPH_SCOPE])
        if "message" not in flow:
            return dict(flow)
        print(flow["message"], flush=True)  # the admin must see the code at the terminal
        return dict(self._app.acquire_token_by_device_flow(flow))

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator(GRAPH_HOSTS)


def msal_provider(tenant: Any, cache_path: Path, *, device_code: bool = False) -> MsalTokenProvider:
    """Build the MSAL application for an ``EntraTenant`` playbook section."""
    import msal  # imported here: the sandbox never needs it

    # MSAL takes any requests-like client; httpx's is one, so one HTTP stack serves Graph and
    # sign-in (and respx can stand in for Entra in tests).
    http = httpx.Client(timeout=30.0)
    if tenant.managed_identity is not None:
        identity: Any = (msal.SystemAssignedManagedIdentity() if tenant.managed_identity == "system"
                         else msal.UserAssignedManagedIdentity(client_id=tenant.client_id))
        return MsalTokenProvider(msal.ManagedIdentityClient(identity, http_client=http), managed=True)

    cache = msal.SerializableTokenCache()
    if cache_path.exists():
        cache.deserialize(cache_path.read_text(encoding="utf-8"))

    def persist() -> None:
        if cache.has_state_changed:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(cache_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(cache.serialize())

    authority = f"https://login.microsoftonline.com/{tenant.tenant_id}"
    credential = None if device_code else _credential(tenant, http)
    try:  # MSAL reads the authority's OpenID configuration here, over the network
        if device_code:
            app: Any = msal.PublicClientApplication(tenant.client_id, authority=authority,
                                                    token_cache=cache, http_client=http)
        else:
            app = msal.ConfidentialClientApplication(
                tenant.client_id, authority=authority, client_credential=credential,
                token_cache=cache, http_client=http,
            )
    except (OSError, ValueError, httpx.HTTPError) as exc:
        raise TransportError(
            f"cannot reach Microsoft Entra sign-in for tenant {tenant.tenant_id}:"
            f" {type(exc).__name__}") from None
    return MsalTokenProvider(app, device_code=device_code, persist=persist)


def _credential(tenant: Any, http: Any) -> Any:
    if tenant.federated is not None:
        # A callable: MSAL asks for a fresh assertion whenever it needs a new token (the
        # runner's token lives minutes, the app's access token an hour).
        return {"client_assertion": lambda: federated_token(tenant.federated, http)}
    if tenant.certificate is not None:
        cert = tenant.certificate
        if not Path(cert.path).exists():
            raise ConfigurationError(f"tenant.certificate.path: {cert.path} does not exist")
        credential: dict[str, Any] = {"private_key_pfx_path": str(cert.path),
                                      "public_certificate": True}
        if cert.password_env:
            credential["passphrase"] = _env(cert.password_env, "tenant.certificate.password_env")
        return credential
    return _env(tenant.client_secret_env, "tenant.client_secret_env")


def _env(name: str, key: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigurationError(f"{key}: environment variable {name} is not set")
    return value


def federated_token(spec: Any, http: Any) -> str:
    """The runner's OIDC token for Entra (the audience ``api://AzureADTokenExchange``):

    - github: GitHub Actions' token request (ACTIONS_ID_TOKEN_REQUEST_URL with the job's
      ACTIONS_ID_TOKEN_REQUEST_TOKEN; the workflow needs ``permissions: id-token: write``);
    - azure-devops: the pipeline's OIDC token for a workload identity service connection
      (POST SYSTEM_OIDCREQUESTURI with SYSTEM_ACCESSTOKEN);
    - file: a token file the platform keeps fresh (AZURE_FEDERATED_TOKEN_FILE, as in AKS).

    Neither the token nor the request's bearer is ever logged or put in an error.
    """
    if spec.source == "file":
        path = Path(_env(spec.token_file_env, "tenant.federated.token_file_env"))
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"tenant.federated: cannot read the token file {path}:"
                                     f" {exc.strerror}") from None
    try:
        if spec.source == "github":
            # docs.github.com: Actions, Security, OpenID Connect reference (the token request)
            url = _env("ACTIONS_ID_TOKEN_REQUEST_URL",
                       "tenant.federated (GitHub: the job needs permissions: id-token: write)")
            bearer = _env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "tenant.federated (GitHub)")
            # The URL has a query of its own (api-version): the audience is added to it.
            response = http.get(httpx.URL(url).copy_merge_params({"audience": spec.audience}),
                                headers={"Authorization": f"bearer {bearer}"})
            key = "value"
        else:
            # learn.microsoft.com/rest/api/azure/devops/distributedtask/oidctoken/create; the
            # api-version and the redirect header as azure-identity's AzurePipelinesCredential
            url = _env("SYSTEM_OIDCREQUESTURI", "tenant.federated (Azure DevOps)")
            bearer = _env("SYSTEM_ACCESSTOKEN", "tenant.federated (Azure DevOps: map $(System.AccessToken))")
            connection = _env(spec.service_connection_env, "tenant.federated.service_connection_env")
            headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json",
                       "X-TFS-FedAuthRedirect": "Suppress"}
            query = {"api-version": "7.1", "serviceConnectionId": connection}
            response = http.post(httpx.URL(url).copy_merge_params(query), headers=headers)
            key = "oidcToken"
    except httpx.HTTPError as exc:
        raise TransportError(f"tenant.federated: the {spec.source} token request failed:"
                             f" {type(exc).__name__}") from None
    if response.status_code != 200:
        raise ConfigurationError(f"tenant.federated: the {spec.source} token request answered"
                                 f" {response.status_code}")
    try:
        return str(response.json()[key])
    except (ValueError, KeyError, TypeError):
        raise ConfigurationError(f"tenant.federated: the {spec.source} token request's answer has"
                                 f" no {key}") from None


def signed_in_user(tenant: Any) -> str:
    """Who is at the terminal, as Entra knows them: a fresh device-code sign-in (never a
    cached one: an approval is a deliberate act, with the tenant's MFA), its UPN."""
    import msal

    try:
        app = msal.PublicClientApplication(tenant.client_id, http_client=httpx.Client(timeout=30.0),
                                           authority=f"https://login.microsoftonline.com/{tenant.tenant_id}")
        flow = app.initiate_device_flow(scopes=["User.Read"])
        if "message" not in flow:
            raise ConfigurationError(f"sign-in to Microsoft Entra failed: {flow.get('error')}")
        print(flow["message"], flush=True)  # the approver must see the code at the terminal
        result = app.acquire_token_by_device_flow(flow)
    except (OSError, ValueError, httpx.HTTPError) as exc:
        raise TransportError(f"cannot reach Microsoft Entra sign-in for tenant {tenant.tenant_id}:"
                             f" {type(exc).__name__}") from None
    who = (result.get("id_token_claims") or {}).get("preferred_username")
    if not who:
        first_line = (result.get("error_description") or "").split("\n")[0]
        raise ConfigurationError(f"sign-in to Microsoft Entra failed: {result.get('error')}: {first_line}")
    return str(who)
