"""$batch items as Graph documents them (https://learn.microsoft.com/graph/json-batching):
URLs relative to the version, ``$`` query names as written, ``dependsOn`` in camelCase."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from provisioner.graph.batch import Item, batch_request, payload
from provisioner.graph.client import Target
from provisioner.graph.gateway import Graph
from provisioner.sandbox import Sandbox, reset_tenant


class Recording(httpx.AsyncBaseTransport):
    """The sandbox's transport, keeping every request's method, URL and body bytes."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.sent = inner, []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, str(request.url), await request.aread()))
        return await self.inner.handle_async_request(request)


def sandbox() -> Sandbox:
    return Sandbox(reset_tenant(None, employees=30, seed=3, mailbox_delay=0))


def test_items_after_a_collection_get_are_relative_byte_for_byte() -> None:
    """The regression of msgraph-sdk-python #1015 / msgraph-sdk-python-core #1116: after the
    first collection GET the SDK's shared path parameters hold the base URL, and msgraph-core
    would send every later item absolute."""
    app = sandbox()
    recording = Recording(httpx.ASGITransport(app=app))

    async def go() -> Any:
        async with Graph(Target(transport=recording)) as graph:
            users = await graph.list_users(["id", "userPrincipalName"])
            uid = next(u["id"] for u in users if u["userPrincipalName"].startswith("lathundar@"))
            results = await graph.batch([graph.mailbox_settings_request(uid),
                                         graph.user_request(uid, ("id", "accountEnabled"))])
            return uid, results

    uid, results = asyncio.run(go())
    method, url, body = recording.sent[-1]
    assert (method, url) == ("POST", "https://graph.sandbox.invalid/v1.0/$batch")
    assert body == (
        '{"requests":[{"id":"0","method":"GET","url":"/users/UID/mailboxSettings"},'
        '{"id":"1","method":"GET","url":"/users/UID?$select=id,accountEnabled"}]}'
    ).replace("UID", uid).encode()
    assert [r.status for r in results] == [200, 200]
    assert results[1].body == {"id": uid, "accountEnabled": True}


def test_depends_on_is_camel_case() -> None:
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation

    info = RequestInformation(Method.GET, "{+baseurl}/users/{id}", {"id": "u1", "baseurl": "https://x/v1.0"})
    doc = json.loads(payload([("a", Item(info)), ("b", Item(info, depends_on=("a",)))]))
    assert doc["requests"][1] == {"id": "b", "method": "GET", "url": "/users/u1", "dependsOn": ["a"]}


def _post_batch(app: Sandbox, requests: list[dict[str, Any]]) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="https://graph.sandbox.invalid") as client:
            return await client.post("/v1.0/$batch", json={"requests": requests},
                                     headers={"Authorization": "Bearer t"})
    return asyncio.run(go())


def test_sandbox_refuses_an_absolute_item_url_as_graph_does() -> None:
    """json-batching: "url ... relative ... to the version"; Graph answers an absolute item URL
    with 400 for the whole batch."""
    response = _post_batch(sandbox(), [
        {"id": "1", "method": "GET", "url": "https://graph.microsoft.com/v1.0/users?$top=1"}])
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid batch payload format."


def test_sandbox_refuses_a_versioned_item_url() -> None:
    response = _post_batch(sandbox(), [{"id": "1", "method": "GET", "url": "/v1.0/users?$top=1"}])
    assert response.status_code == 200
    item = response.json()["responses"][0]
    assert item["status"] == 400
    assert item["body"]["error"]["message"] == "Resource not found for the segment 'v1.0'."


def test_sandbox_reads_an_encoded_dollar_as_an_unknown_parameter() -> None:
    """``%24select`` in an item is not ``$select``: the default properties come back."""
    response = _post_batch(sandbox(), [
        {"id": "1", "method": "GET", "url": "/users?%24select=id&$top=1"},
        {"id": "2", "method": "GET", "url": "/users?$select=id&$top=1"}])
    first, second = response.json()["responses"]
    assert "displayName" in first["body"]["value"][0]
    assert set(second["body"]["value"][0]) == {"id"}


def test_msgraph_cores_own_batch_item_is_absolute_after_a_collection_get() -> None:
    """Why batch.py exists: the upstream item keeps the full URL. If this starts failing,
    msgraph-core has fixed #1116 and batch.py can go."""
    from msgraph_core.requests.batch_request_item import BatchRequestItem

    async def go() -> str:
        async with Graph(Target(sandbox_app=sandbox())) as graph:
            await graph.list_users(["id"])
            info = graph.mailbox_settings_request("u1")
            return str(BatchRequestItem(info).url)

    assert asyncio.run(go()).startswith("https://")


def test_the_batch_post_itself_goes_to_the_version_root() -> None:
    info = batch_request(b"{}")
    assert info.url_template == "{+baseurl}/$batch"
    assert info.http_method.name == "POST"


def test_a_batch_counts_against_the_quotas_of_its_items() -> None:
    """Each item of a $batch is throttled as itself (learn.microsoft.com/graph/json-batching):
    mailbox settings are Exchange's (no Entra write is paced for them), creates are Entra
    writes, one each."""
    app = sandbox()

    async def go() -> tuple[int, int, int]:
        async with Graph(Target(sandbox_app=app)) as graph:
            users = await graph.list_users(["id", "userPrincipalName"])
            ids = [u["id"] for u in users[:3]]
            together = graph.coalescing()
            await asyncio.gather(*(together.update_mailbox_settings(uid, {"timeFormat": "HH:mm"})
                                   for uid in ids))
            after_mailboxes = len(graph.pacer.ours)
            await asyncio.gather(*(together.create_user({
                "accountEnabled": True, "displayName": f"Ny {i}", "mailNickname": f"ny{i}",
                "userPrincipalName": f"ny{i}@politiker.example-region.se",
                "passwordProfile": {"password": "Xy9!" * 6}}) for i in range(3)))
            return after_mailboxes, len(graph.pacer.ours), graph.stats["batches"]

    assert asyncio.run(go()) == (0, 3, 2)
