"""Signing in without a secret on a runner: workload identity federation (the runner's OIDC
token as the client assertion) and managed identity, through MSAL, against Entra's, GitHub's,
Azure DevOps' and IMDS's documented token responses (respx stands in for each)."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from provisioner.errors import ConfigurationError
from provisioner.graph.auth import msal_provider
from provisioner.playbook import EntraTenant

from .conftest import ENTRA_CLIENT, ENTRA_TENANT

TENANT, CLIENT = ENTRA_TENANT, ENTRA_CLIENT
GRAPH_URL = "https://graph.microsoft.com/v1.0/users"
# learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow: the
# successful response, and the error a missing federated credential answers.
NO_FEDERATION = {"error": "invalid_client", "error_codes": [70021],
                 "error_description": "AADSTS70021: No matching federated identity record found for"
                                      " presented assertion.\r\nTrace ID: 1\r\nCorrelation ID: 2"}


def token(tenant: EntraTenant, tmp_path: Path) -> str:
    provider = msal_provider(tenant, tmp_path / "cache.json")
    return asyncio.run(provider.get_authorization_token(GRAPH_URL))


def form(request: httpx.Request) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(request.content.decode()))


def federated(source: str) -> EntraTenant:
    return EntraTenant(tenant_id=TENANT, client_id=CLIENT, federated={"source": source})  # type: ignore[arg-type]


def test_github_actions_token_is_the_client_assertion(entra: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "https://pipelines.actions.example/idtoken/1?api-version=2.0")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "job-bearer")
    github = entra.get(url__startswith="https://pipelines.actions.example/idtoken/1").respond(
        json={"count": 1, "value": "github.oidc.jwt"})
    assert token(federated("github"), tmp_path) == "graph-token"
    asked = github.calls[0].request
    assert asked.url.params["audience"] == "api://AzureADTokenExchange"
    assert asked.url.params["api-version"] == "2.0"
    assert asked.headers["Authorization"] == "bearer job-bearer"
    sent = form(entra.token.calls[0].request)
    assert sent["client_assertion"] == "github.oidc.jwt" and sent["client_id"] == CLIENT
    assert sent["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in sent


def test_azure_devops_service_connection_token_is_the_client_assertion(
        entra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    oidc = "https://dev.azure.com/region/0a/_apis/distributedtask/hubs/build/plans/1/jobs/2/oidctoken"
    monkeypatch.setenv("SYSTEM_OIDCREQUESTURI", oidc)
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", "pipeline-bearer")
    monkeypatch.setenv("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID", "conn-1")
    devops = entra.post(url__startswith=oidc).respond(json={"oidcToken": "ado.oidc.jwt"})
    assert token(federated("azure-devops"), tmp_path) == "graph-token"
    asked = devops.calls[0].request
    assert asked.url.params["serviceConnectionId"] == "conn-1"
    assert asked.headers["Authorization"] == "Bearer pipeline-bearer"
    assert form(entra.token.calls[0].request)["client_assertion"] == "ado.oidc.jwt"


def test_a_token_file_is_read_fresh_for_each_assertion(entra: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text("file.oidc.jwt\n", encoding="utf-8")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(path))
    assert token(federated("file"), tmp_path) == "graph-token"
    assert form(entra.token.calls[0].request)["client_assertion"] == "file.oidc.jwt"


def test_entra_refusing_the_assertion_is_one_clear_error_without_the_token(
        entra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text("file.oidc.jwt", encoding="utf-8")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(path))
    entra.token.respond(400, json=NO_FEDERATION)
    with pytest.raises(ConfigurationError) as caught:
        token(federated("file"), tmp_path)
    assert "AADSTS70021: No matching federated identity record" in str(caught.value)
    assert "file.oidc.jwt" not in str(caught.value) and "Trace ID" not in str(caught.value)


@pytest.mark.parametrize(("source", "variable"), [
    ("github", "ACTIONS_ID_TOKEN_REQUEST_URL"), ("azure-devops", "SYSTEM_OIDCREQUESTURI"),
    ("file", "AZURE_FEDERATED_TOKEN_FILE")])
def test_a_runner_without_its_token_says_which_variable_is_missing(
        entra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, variable: str) -> None:
    for name in ("ACTIONS_ID_TOKEN_REQUEST_URL", "SYSTEM_OIDCREQUESTURI", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match=f"environment variable {variable} is not set"):
        token(federated(source), tmp_path)


def test_the_runners_token_request_failing_is_named_without_its_bearer(
        entra: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "https://pipelines.actions.example/idtoken/1?x=1")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "job-bearer")
    entra.get(url__startswith="https://pipelines.actions.example/").respond(403, json={"message": "no"})
    with pytest.raises(ConfigurationError, match="the github token request answered 403") as caught:
        token(federated("github"), tmp_path)
    assert "job-bearer" not in str(caught.value)


@pytest.mark.parametrize(("kind", "client_id"), [("system", None), ("user", CLIENT)])
def test_a_managed_identity_gets_a_graph_token_from_imds(tmp_path: Path, kind: str,
                                                         client_id: str | None) -> None:
    """learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token"""
    tenant = EntraTenant(tenant_id=TENANT, client_id=CLIENT, managed_identity=kind)  # type: ignore[arg-type]
    with respx.mock() as mock:
        imds = mock.get("http://169.254.169.254/metadata/identity/oauth2/token").respond(json={
            "access_token": "mi-token", "expires_in": "3599", "expires_on": "1767225600",
            "resource": "https://graph.microsoft.com", "token_type": "Bearer"})
        assert token(tenant, tmp_path) == "mi-token"
    asked = imds.calls[0].request
    assert asked.url.params["resource"] == "https://graph.microsoft.com"
    assert asked.headers["Metadata"] == "true"
    assert asked.url.params.get("client_id") == client_id
