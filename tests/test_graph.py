"""The Graph layer through the real msgraph-sdk, with the transport swapped for respx."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
import respx
from structlog.testing import capture_logs

from provisioner.errors import GraphError, ThrottledError, TransportError
from provisioner.graph.auth import MsalTokenProvider
from provisioner.graph.client import GRAPH_BASE, SANDBOX_BASE, Target
from provisioner.graph.gateway import Graph, _next_link
from provisioner.graph.odata import any_of, eq, quote
from provisioner.graph.retry import RetryPolicy

FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.5)
USERS = f"{SANDBOX_BASE}/users"


def graph_with(router: respx.MockRouter, retry: RetryPolicy = FAST) -> Graph:
    return Graph(Target(transport=httpx.MockTransport(router.async_handler)), retry=retry)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def graph_error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}},
                          headers={"request-id": "rid-1", **headers})


async def _users(graph: Graph) -> list[dict[str, Any]]:
    async with graph:
        return await graph.list_users(["id"])


def test_429_is_retried_after_retry_after_exactly_once_per_attempt() -> None:
    router = respx.MockRouter(assert_all_called=False)
    route = router.get(url__startswith=USERS).mock(side_effect=[
        graph_error(429, "TooManyRequests", "Please retry again later.", **{"Retry-After": "0.05"}),
        httpx.Response(200, json={"value": [{"id": "u1"}]}),
    ])
    graph = graph_with(router)
    with capture_logs() as logs:
        assert run(_users(graph)) == [{"id": "u1"}]
    # Two calls: the SDK's own RetryHandler is not in the pipeline, so retries don't multiply.
    assert route.call_count == 2
    assert [e["wait"] for e in logs if e["event"] == "graph.retry"] == [0.05]
    assert graph.stats["throttled"] == 1


def test_persistent_503_gives_up_after_the_policys_attempts() -> None:
    router = respx.MockRouter()
    route = router.get(url__startswith=USERS).mock(
        return_value=graph_error(503, "serviceNotAvailable", "busy", **{"Retry-After": "0"}))
    with pytest.raises(ThrottledError) as err:
        run(_users(graph_with(router)))
    assert route.call_count == 3
    assert (err.value.status, err.value.code, err.value.request_id) == (503, "serviceNotAvailable", "rid-1")


def test_connection_failures_are_retried_then_reported_as_transport_errors() -> None:
    router = respx.MockRouter()
    route = router.get(url__startswith=USERS).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(TransportError, match="GET /users: ConnectError: refused"):
        run(_users(graph_with(router)))
    assert route.call_count == 3


def test_a_timeout_then_success_completes() -> None:
    router = respx.MockRouter()
    router.get(url__startswith=USERS).mock(side_effect=[
        httpx.ReadTimeout("slow"), httpx.Response(200, json={"value": []})])
    assert run(_users(graph_with(router))) == []


def test_graph_error_keeps_code_message_details_and_request_id() -> None:
    router = respx.MockRouter()
    router.post(USERS).mock(return_value=httpx.Response(400, headers={"request-id": "rid-9"}, json={
        "error": {"code": "Request_BadRequest", "message": "Another object ...",
                  "details": [{"target": "userPrincipalName", "code": "ObjectConflict"}]}}))

    async def go() -> None:
        async with graph_with(router) as graph:
            await graph.create_user({"displayName": "x"})

    with pytest.raises(GraphError) as err:
        run(go())
    assert err.value.code == "Request_BadRequest" and err.value.request_id == "rid-9"
    assert err.value.has_detail("ObjectConflict", "userPrincipalName")
    assert not isinstance(err.value, ThrottledError)


def test_an_html_gateway_error_is_still_a_graph_error() -> None:
    router = respx.MockRouter()
    router.get(url__startswith=USERS).mock(return_value=httpx.Response(502, text="<html>bad</html>"))
    with pytest.raises(GraphError) as err:
        run(_users(graph_with(router)))
    assert err.value.code == "HTTP502"


def test_paging_follows_next_link_until_absent() -> None:
    router = respx.MockRouter()
    router.get(url__startswith=USERS).mock(side_effect=[
        httpx.Response(200, json={"value": [{"id": "1"}], "@odata.nextLink": f"{USERS}?$skiptoken=a"}),
        httpx.Response(200, json={"value": [{"id": "2"}], "@odata.nextLink": f"{USERS}?$skiptoken=b"}),
        httpx.Response(200, json={"value": [{"id": "3"}]}),
    ])
    assert [u["id"] for u in run(_users(graph_with(router)))] == ["1", "2", "3"]


def _page(ids: list[str], token: str | None) -> httpx.Response:
    body: dict[str, Any] = {"value": [{"id": i} for i in ids]}
    if token:
        body["@odata.nextLink"] = f"{USERS}?$skiptoken={token}"
    return httpx.Response(200, json=body)


async def _pages_seen(graph: Graph, route: respx.Route,
                      stop_after: int | None = None) -> list[tuple[str, int]]:
    """Each page's ids with the number of requests Graph had had once the caller got it."""
    seen = []
    async with graph:
        pages = graph.pages(graph._users_request(["id"]), graph.client.users)
        async for page in pages:
            await asyncio.sleep(0.05)  # the caller at work on the page (the read ahead gets its answer)
            seen.append((",".join(u["id"] for u in page), route.call_count))
            if stop_after is not None and len(seen) == stop_after:
                await pages.aclose()  # type: ignore[attr-defined]
                break
    return seen


def test_the_next_page_is_asked_for_while_the_caller_uses_this_one() -> None:
    """learn.microsoft.com/graph/paging: the next page is the nextLink's; asked for as soon as
    the link is known, not after the caller is done with the page."""
    router = respx.MockRouter()
    route = router.get(url__startswith=USERS).mock(side_effect=[
        _page(["1"], "a"), _page(["2"], "b"), _page(["3"], None)])
    assert run(_pages_seen(graph_with(router), route)) == [("1", 2), ("2", 3), ("3", 3)]


def test_a_link_in_the_bytes_other_than_the_decoded_one_is_not_followed() -> None:
    """A key given twice: the page's bytes show one link first, its JSON (the last) another.
    The decoded page decides; the page read ahead is dropped."""
    router = respx.MockRouter()
    wrong = router.get(url__startswith=USERS, params={"$skiptoken": "wrong"}).mock(
        return_value=_page(["x"], None))
    twice = (b'{"@odata.nextLink":"' + f"{USERS}?$skiptoken=wrong".encode() + b'","value":[{"id":"1"}],'
             b'"@odata.nextLink":"' + f"{USERS}?$skiptoken=right".encode() + b'"}')
    route = router.get(url__startswith=USERS).mock(side_effect=[
        httpx.Response(200, content=twice, headers={"content-type": "application/json"}), _page(["2"], None)])
    assert [ids for ids, _ in run(_pages_seen(graph_with(router), route))] == ["1", "2"]
    assert wrong.call_count <= 1


def test_a_caller_that_stops_leaves_no_read_ahead_behind() -> None:
    """The page read ahead is still on its way when the caller stops: it is cancelled, not
    left running (or failing later with nobody to hear it)."""
    router = respx.MockRouter(assert_all_called=False)

    asked: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        await asyncio.sleep(5)
        return _page(["2"], None)

    route = router.get(url__startswith=USERS).mock(side_effect=[_page(["1"], "a"), slow])

    async def stop() -> set[asyncio.Task[Any]]:
        await _pages_seen(graph_with(router), route, stop_after=1)
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    assert run(stop()) == set()
    assert asked == [f"{USERS}?$skiptoken=a"]  # it had been asked for


def test_a_failing_page_read_ahead_fails_the_read_where_it_is_reached() -> None:
    router = respx.MockRouter()
    router.get(url__startswith=USERS).mock(side_effect=[
        _page(["1"], "a"), graph_error(403, "Authorization_RequestDenied", "Insufficient privileges")])
    with pytest.raises(GraphError) as err:
        run(_users(graph_with(router)))
    assert (err.value.status, err.value.code) == (403, "Authorization_RequestDenied")


def test_a_next_link_is_found_in_a_pages_bytes_and_not_in_a_users_name() -> None:
    """Only a key has an unescaped quote before it: a display name that spells the annotation
    out is not a link."""
    hostile = '"@odata.nextLink":"https://evil.example/v1.0/users"'
    page = orjson.dumps({"value": [{"id": "1", "displayName": hostile}]})
    assert _next_link(page) is None
    link = f"{USERS}?$select=id&$skiptoken=X%2744537074%27"
    assert _next_link(orjson.dumps({"value": [{"displayName": hostile}], "@odata.nextLink": link})) == link
    escaped = b'{"@odata.nextLink" : "https:\\/\\/g\\u0026x", "value": []}'
    assert _next_link(escaped) == "https://g&x"  # JSON's escapes undone
    assert _next_link(b'{"@odata.nextLink":"bad\\x escape"}') is None  # not JSON: the decoded page says


def test_requests_are_built_by_the_sdk_with_select_and_top() -> None:
    router = respx.MockRouter()
    route = router.get(url__startswith=USERS).mock(return_value=httpx.Response(200, json={"value": []}))
    run(_users(graph_with(router)))
    request = route.calls.last.request
    assert request.url.params["$select"] == "id" and request.url.params["$top"] == "999"
    assert request.headers["authorization"] == "Bearer sandbox-token"
    assert "kiota-python" in request.headers["user-agent"]  # sent through the SDK's pipeline


def test_batch_retries_throttled_items_in_a_new_batch() -> None:
    router = respx.MockRouter()
    calls: list[list[str]] = []

    def batch(request: httpx.Request) -> httpx.Response:
        import json

        ids = [r["id"] for r in json.loads(request.content)["requests"]]
        calls.append(ids)
        if len(calls) == 1:
            return httpx.Response(200, json={"responses": [
                {"id": ids[0], "status": 200, "body": {"ok": 1}},
                {"id": ids[1], "status": 429, "headers": {"Retry-After": "0.01"},
                 "body": {"error": {"code": "TooManyRequests"}}}]})
        return httpx.Response(200, json={"responses": [{"id": i, "status": 200, "body": {"ok": 2}}
                                                       for i in ids]})

    router.post(f"{SANDBOX_BASE}/$batch").mock(side_effect=batch)

    async def go() -> list[Any]:
        async with graph_with(router) as graph:
            return await graph.batch([graph.mailbox_settings_request("a"),
                                      graph.mailbox_settings_request("b")])

    results = run(go())
    assert [r.body for r in results] == [{"ok": 1}, {"ok": 2}]
    assert calls == [["0", "1"], ["1"]]


def test_odata_literals_double_single_quotes() -> None:
    assert quote("O'Brien") == "'O''Brien'"
    assert eq("displayName", "D'Souza") == "displayName eq 'D''Souza'"
    assert any_of("id", ["a", "b'c"]) == "id in ('a', 'b''c')"


class FakeMsal:
    def __init__(self) -> None:
        self.calls = 0

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
        self.calls += 1
        return {"access_token": "tok-123", "token_type": "Bearer"}


def test_msal_token_goes_only_to_graph() -> None:
    app = FakeMsal()
    provider = MsalTokenProvider(app)
    assert run(provider.get_authorization_token(f"{GRAPH_BASE}/users")) == "tok-123"
    from provisioner.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="refusing to send a Graph token"):
        run(provider.get_authorization_token("https://evil.example/v1.0/users"))
    assert app.calls == 1


def test_failed_sign_in_names_the_aadsts_error_but_no_secret() -> None:
    class Failing:
        def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
            return {"error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.\nTrace ID: x"}

    from provisioner.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        run(MsalTokenProvider(Failing()).get_authorization_token(f"{GRAPH_BASE}/users"))
    assert str(err.value) == ("sign-in to Microsoft Entra failed: invalid_client: AADSTS7000215:"
                              " Invalid client secret provided.")


def test_a_mail_whose_answer_is_lost_is_never_sent_again() -> None:
    """sendMail cannot be read back: after a 504 it may have gone out, so it is not repeated."""
    from provisioner.errors import AmbiguousOutcome

    router = respx.MockRouter()
    route = router.post(url__regex=r".*/users/u1/sendMail$").mock(
        return_value=graph_error(504, "GatewayTimeout", "lost", **{"Retry-After": "0"}))

    async def go() -> None:
        async with graph_with(router) as graph:
            await graph.send_mail("u1", "x@example.org", "s", "<p>hi</p>")

    with pytest.raises(AmbiguousOutcome):
        run(go())
    assert route.call_count == 1


def test_a_mail_refused_with_429_is_sent_again() -> None:
    router = respx.MockRouter()
    route = router.post(url__regex=r".*/users/u1/sendMail$").mock(side_effect=[
        graph_error(429, "TooManyRequests", "later", **{"Retry-After": "0"}), httpx.Response(202)])

    async def go() -> None:
        async with graph_with(router) as graph:
            await graph.send_mail("u1", "x@example.org", "s", "<p>hi</p>")

    run(go())
    assert route.call_count == 2


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_read_is_asked_again_after_a_5xx(status: int) -> None:
    router = respx.MockRouter()
    route = router.get(url__startswith=USERS).mock(side_effect=[
        graph_error(status, "InternalServerError", "oops"), httpx.Response(200, json={"value": []})])
    assert run(_users(graph_with(router))) == []
    assert route.call_count == 2


@pytest.mark.parametrize(("retry_after", "waited"), [(120.0, 120.0), (400.0, 150.0)])
def test_retry_after_is_honoured_up_to_the_write_window(retry_after: float, waited: float) -> None:
    """Asking again before Graph's Retry-After only extends the throttling; the wait is capped
    at Entra's 150 s write window."""
    from tenacity import Future, RetryCallState

    state = RetryCallState(None, None, (), {})
    outcome: Future = Future(1)
    outcome.set_exception(ThrottledError(429, "TooManyRequests", "later", retry_after=retry_after))
    state.outcome = outcome
    assert RetryPolicy().wait(state) == waited
