"""The sandbox answers like Graph where the tool depends on it (GRAPH-NOTES.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from provisioner.sandbox import Sandbox, reset_tenant
from provisioner.sandbox.throttle import request_cost

AUTH = {"Authorization": "Bearer test"}
NEW_USER = {
    "accountEnabled": True, "displayName": "Siobhán O'Brien", "mailNickname": "siobhan.obrien",
    "userPrincipalName": "siobhan.obrien@politiker.example-region.se",
    "passwordProfile": {"password": "Xy!12345abcd", "forceChangePasswordNextSignIn": True},
    "usageLocation": "SE",
}


def call(app: Sandbox, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="https://graph.test") as client:
            return await client.request(method, "/v1.0" + path, headers=AUTH | kwargs.pop(
                "headers", {}), **kwargs)
    return asyncio.run(go())


def create(app: Sandbox, **overrides: Any) -> dict[str, Any]:
    r = call(app, "POST", "/users", json=NEW_USER | overrides)
    assert r.status_code == 201, r.text
    return dict(r.json())


def error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()["error"]
    assert body["innerError"]["request-id"] == r.headers["request-id"]
    return dict(body)


def e3(app: Sandbox) -> str:
    skus = call(app, "GET", "/subscribedSkus").json()["value"]
    return next(s["skuId"] for s in skus if s["skuPartNumber"] == "ENTERPRISEPACK")


def test_duplicate_upn_is_graphs_object_conflict(memory_sandbox: Sandbox) -> None:
    create(memory_sandbox)
    r = call(memory_sandbox, "POST", "/users", json=NEW_USER | {"mailNickname": "other"})
    assert r.status_code == 400
    body = error(r)
    assert body["code"] == "Request_BadRequest"
    assert body["message"] == ("Another object with the same value for property userPrincipalName"
                               " already exists.")
    assert body["details"] == [{"target": "userPrincipalName", "code": "ObjectConflict"}]


def test_unknown_property_is_rejected_so_a_typo_fails_in_tests(memory_sandbox: Sandbox) -> None:
    r = call(memory_sandbox, "POST", "/users", json=NEW_USER | {"usagelocation": "SE"})
    assert r.status_code == 400 and "usagelocation" in error(r)["message"]


@pytest.mark.parametrize("missing", ["accountEnabled", "displayName", "mailNickname",
                                     "userPrincipalName", "passwordProfile"])
def test_required_properties_on_create(memory_sandbox: Sandbox, missing: str) -> None:
    body = {k: v for k, v in NEW_USER.items() if k != missing}
    r = call(memory_sandbox, "POST", "/users", json=body)
    assert r.status_code == 400 and missing in error(r)["message"]


@pytest.mark.parametrize("nick", ["has space", "a@b", "åsa", ".lead", "x" * 65, "semi;colon"])
def test_invalid_mail_nickname(memory_sandbox: Sandbox, nick: str) -> None:
    r = call(memory_sandbox, "POST", "/users", json=NEW_USER | {"mailNickname": nick})
    assert error(r)["message"] == ("Invalid value specified for property 'mailNickname' of"
                                   " resource 'User'.")


def test_upn_on_an_unverified_domain_is_rejected(memory_sandbox: Sandbox) -> None:
    r = call(memory_sandbox, "POST", "/users",
             json=NEW_USER | {"userPrincipalName": "a@not-ours.se"})
    assert r.status_code == 400 and "verified domain" in error(r)["message"]


def test_licence_needs_usage_location(memory_sandbox: Sandbox) -> None:
    user = create(memory_sandbox, usageLocation=None)
    r = call(memory_sandbox, "POST", f"/users/{user['id']}/assignLicense",
             json={"addLicenses": [{"skuId": e3(memory_sandbox), "disabledPlans": []}],
                   "removeLicenses": []})
    assert r.status_code == 400
    assert error(r)["message"] == ("License assignment cannot be done for user with invalid usage"
                                   " location.")


def test_licence_fails_when_no_seats_are_left() -> None:
    app = Sandbox(reset_tenant(None, employees=0, seed=1))
    sku = next(s for s in call(app, "GET", "/subscribedSkus").json()["value"]
               if s["skuPartNumber"] == "EXCHANGESTANDARD")
    for i in range(sku["prepaidUnits"]["enabled"] + 1):
        user = create(app, userPrincipalName=f"u{i}@politiker.example-region.se", mailNickname=f"u{i}")
        r = call(app, "POST", f"/users/{user['id']}/assignLicense",
                 json={"addLicenses": [{"skuId": sku["skuId"]}], "removeLicenses": []})
    assert r.status_code == 400 and "does not have any licenses available" in error(r)["message"]


def test_a_licence_with_its_exchange_plan_disabled_makes_no_mailbox() -> None:
    """Only an Exchange Online service plan makes a mailbox: with it in ``disabledPlans``
    (learn.microsoft.com/entra/identity/users/licensing-service-plan-reference) the mailbox
    REST API answers 404 MailboxNotEnabledForRESTAPI (learn.microsoft.com/exchange/troubleshoot/
    user-and-shared-mailboxes/rest-api-is-not-yet-supported-for-this-mailbox-error); the same
    licence with the plan enabled makes one."""
    app = Sandbox(reset_tenant(None, employees=0, seed=1, mailbox_delay=0))
    sku = next(s for s in call(app, "GET", "/subscribedSkus").json()["value"]
               if s["skuPartNumber"] == "ENTERPRISEPACK")
    exchange = next(p["servicePlanId"] for p in sku["servicePlans"]
                    if p["servicePlanName"] == "EXCHANGE_S_ENTERPRISE")
    without = create(app)
    with_it = create(app, userPrincipalName="b@politiker.example-region.se", mailNickname="b")
    for user, disabled in ((without, [exchange]), (with_it, [])):
        r = call(app, "POST", f"/users/{user['id']}/assignLicense",
                 json={"addLicenses": [{"skuId": sku["skuId"], "disabledPlans": disabled}],
                       "removeLicenses": []})
        assert r.status_code == 200, r.text
    r = call(app, "GET", f"/users/{without['id']}/mailboxSettings")
    assert r.status_code == 404 and error(r)["code"] == "MailboxNotEnabledForRESTAPI"
    assert call(app, "GET", f"/users/{with_it['id']}/mailboxSettings").status_code == 200


def test_mailbox_appears_a_delay_after_the_licence() -> None:
    tenant = reset_tenant(None, employees=0, seed=1, mailbox_delay=30)
    now = [1000.0]
    tenant.clock = lambda: now[0]
    app = Sandbox(tenant)
    user = create(app)
    path = f"/users/{user['id']}/mailboxSettings"
    r = call(app, "GET", path)
    assert r.status_code == 404 and error(r)["code"] == "MailboxNotEnabledForRESTAPI"
    call(app, "POST", f"/users/{user['id']}/assignLicense",
         json={"addLicenses": [{"skuId": e3(app)}], "removeLicenses": []})
    now[0] += 29
    assert call(app, "PATCH", path, json={"timeZone": "UTC"}).status_code == 404
    now[0] += 2
    r = call(app, "PATCH", path, json={"timeZone": "W. Europe Standard Time",
                                       "language": {"locale": "sv-SE"}})
    assert r.status_code == 200 and r.json()["language"]["locale"] == "sv-SE"
    assert call(app, "GET", f"/users/{user['id']}?$select=mail").json()["mail"] == \
        NEW_USER["userPrincipalName"]


def test_bad_time_zone(memory_sandbox: Sandbox) -> None:
    user = create(memory_sandbox)
    call(memory_sandbox, "POST", f"/users/{user['id']}/assignLicense",
         json={"addLicenses": [{"skuId": e3(memory_sandbox)}], "removeLicenses": []})
    r = call(memory_sandbox, "PATCH", f"/users/{user['id']}/mailboxSettings",
             json={"timeZone": "Mars/Olympus"})
    assert r.status_code == 400 and error(r)["code"] == "InvalidTimeZone"


def test_duplicate_group_member_is_graphs_error(memory_sandbox: Sandbox) -> None:
    user = create(memory_sandbox)
    group = call(memory_sandbox, "GET", "/groups").json()["value"][0]
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user['id']}"}
    assert call(memory_sandbox, "POST", f"/groups/{group['id']}/members/$ref", json=ref).status_code == 204
    r = call(memory_sandbox, "POST", f"/groups/{group['id']}/members/$ref", json=ref)
    assert r.status_code == 400 and "already exist" in error(r)["message"]


def test_removing_a_member_without_ref_deletes_the_user_as_graph_does(memory_sandbox: Sandbox) -> None:
    user = create(memory_sandbox)
    group = call(memory_sandbox, "GET", "/groups").json()["value"][0]
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user['id']}"}
    call(memory_sandbox, "POST", f"/groups/{group['id']}/members/$ref", json=ref)
    assert call(memory_sandbox, "DELETE", f"/groups/{group['id']}/members/{user['id']}").status_code == 204
    assert call(memory_sandbox, "GET", f"/users/{user['id']}").status_code == 404


def test_soft_delete_and_restore_with_memberships(memory_sandbox: Sandbox) -> None:
    user = create(memory_sandbox)
    group = call(memory_sandbox, "GET", "/groups").json()["value"][1]
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user['id']}"}
    call(memory_sandbox, "POST", f"/groups/{group['id']}/members/$ref", json=ref)
    assert call(memory_sandbox, "DELETE", f"/users/{user['id']}").status_code == 204
    deleted = call(memory_sandbox, "GET", "/directory/deletedItems/microsoft.graph.user").json()
    assert [u["id"] for u in deleted["value"]] == [user["id"]]
    assert call(memory_sandbox, "POST", f"/directory/deletedItems/{user['id']}/restore").status_code == 200
    members = call(memory_sandbox, "GET", f"/groups/{group['id']}/members?$select=id").json()
    assert user["id"] in [m["id"] for m in members["value"]]


def test_paging_follows_next_link_to_every_user(memory_sandbox: Sandbox) -> None:
    seen, url = [], "/users?$top=7&$select=id"
    while url:
        body = call(memory_sandbox, "GET", url).json()
        seen += [u["id"] for u in body["value"]]
        link = body.get("@odata.nextLink")
        url = link.split("/v1.0", 1)[1] if link else None
    assert len(seen) == len(set(seen)) == 31  # 30 employees and the guide mailbox


def test_filter_with_escaped_quote(memory_sandbox: Sandbox) -> None:
    create(memory_sandbox)
    r = call(memory_sandbox, "GET", "/users",
             params={"$filter": "displayName eq 'siobhán o''brien'", "$select": "id,displayName"})
    assert [u["displayName"] for u in r.json()["value"]] == ["Siobhán O'Brien"]


def test_filter_on_an_unsupported_property(memory_sandbox: Sandbox) -> None:
    r = call(memory_sandbox, "GET", "/users", params={"$filter": "city eq 'Umeå'"})
    assert r.status_code == 400 and error(r)["code"] == "Request_UnsupportedQuery"


def test_advanced_queries_need_consistency_level(memory_sandbox: Sandbox) -> None:
    params = {"$filter": "endswith(userPrincipalName,'.se')", "$count": "true"}
    assert call(memory_sandbox, "GET", "/users", params=params).status_code == 400
    r = call(memory_sandbox, "GET", "/users", params=params, headers={"ConsistencyLevel": "eventual"})
    assert r.status_code == 200 and r.json()["@odata.count"] == 31


def test_batch_runs_items_with_their_own_status_and_depends_on() -> None:
    app = Sandbox(reset_tenant(None, employees=3, seed=1))
    r = call(app, "POST", "/$batch", json={"requests": [
        {"id": "1", "method": "GET", "url": "/users?$top=1"},
        {"id": "2", "method": "GET", "url": "/users/nobody", "dependsOn": ["1"]},
        {"id": "3", "method": "GET", "url": "/users?$top=1", "dependsOn": ["2"]},
    ]})
    assert r.status_code == 200
    assert [(i["id"], i["status"]) for i in r.json()["responses"]] == [("1", 200), ("2", 404),
                                                                       ("3", 424)]


def test_batch_of_more_than_20_is_refused_whole(memory_sandbox: Sandbox) -> None:
    items = [{"id": str(i), "method": "GET", "url": "/users?$top=1"} for i in range(21)]
    r = call(memory_sandbox, "POST", "/$batch", json={"requests": items})
    assert r.status_code == 400


def test_throttling_answers_429_with_retry_after_and_graphs_body() -> None:
    app = Sandbox(reset_tenant(None, employees=3, seed=1, ru_limit=4, time_scale=0.01))
    statuses = [call(app, "GET", "/users").status_code for _ in range(3)]  # 2 RU each
    assert statuses == [200, 200, 429]
    r = call(app, "GET", "/users")
    assert r.status_code == 429 and error(r)["code"] == "TooManyRequests"
    assert 0 < float(r.headers["Retry-After"]) <= 0.1  # 10 s window × 0.01
    assert r.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"


def test_batch_items_are_throttled_one_by_one() -> None:
    app = Sandbox(reset_tenant(None, employees=3, seed=1, ru_limit=3, time_scale=0.01))
    items = [{"id": str(i), "method": "GET", "url": "/users?$top=1"} for i in range(5)]
    r = call(app, "POST", "/$batch", json={"requests": items})
    assert [i["status"] for i in r.json()["responses"]] == [200, 200, 200, 429, 429]
    assert "retry-after" in {k.lower() for k in r.json()["responses"][3]["headers"]}


def test_write_quota_is_separate_from_resource_units() -> None:
    app = Sandbox(reset_tenant(None, employees=3, seed=1, write_limit=2, time_scale=0.01, cloud_only=True))
    codes = [call(app, "PATCH", f"/users/{uid}", json={"jobTitle": "x"}).status_code
             for uid in list(app.tenant.users)[:3]]
    assert codes == [204, 204, 429]


def test_a_primed_write_window_allows_the_steady_rate_and_no_burst() -> None:
    """As if the app had written at its ceiling for the last window: one write frees every
    window/limit seconds (150 s / 3,000 = 50 ms), never a burst."""
    from provisioner.sandbox.throttle import Limiter

    now = [1000.0]
    limiter = Limiter(8000, 3000, 1.0, lambda: now[0], primed=True)
    first = limiter.admit(1, True)
    assert first.reason == "WriteLimitExceeded" and first.retry_after == 1.0  # 50 ms, in whole s
    admitted = 0
    for k in range(1, 201):  # 10 s, a request every 50 ms
        now[0] = 1000.0 + k * 0.05 + 1e-9
        admitted += limiter.admit(1, True).retry_after is None
    assert admitted == 200  # exactly the steady rate
    assert limiter.admit(1, True).retry_after is not None  # and nothing more
    assert limiter.admit(1, False).retry_after is None  # reads are not writes


def test_exchange_and_intune_are_not_charged_to_entras_quotas() -> None:
    app = Sandbox(reset_tenant(None, employees=3, seed=1, write_limit=1, ru_limit=2,
                               mailbox_delay=0, time_scale=0.01, cloud_only=True))
    uid = next(iter(app.tenant.users))
    assert call(app, "PATCH", f"/users/{uid}", json={"jobTitle": "x"}).status_code == 204
    for _ in range(3):
        r = call(app, "GET", f"/users/{uid}/mailboxSettings")
        assert r.status_code in (200, 404) and "x-ms-resource-unit" not in r.headers
        assert call(app, "GET", "/deviceManagement/managedDevices").status_code == 200
    assert call(app, "PATCH", f"/users/{uid}", json={"jobTitle": "y"}).status_code == 429


def test_usage_headers_report_resource_units() -> None:
    app = Sandbox(reset_tenant(None, employees=3, seed=1, ru_limit=10))
    r = call(app, "GET", "/users?$select=id")
    assert r.headers["x-ms-resource-unit"] == "1"


@pytest.mark.parametrize(("method", "path", "query", "cost"), [
    ("GET", "/users", {}, 2), ("GET", "/users", {"$select": "id"}, 1),
    ("GET", "/groups/x/members", {}, 3), ("GET", "/groups/x/members", {"$top": "5"}, 2),
    ("GET", "/subscribedSkus", {}, 3), ("GET", "/users/x", {"$expand": "manager"}, 2),
    ("GET", "/users/x/memberOf", {}, 2), ("POST", "/users", {}, 1),
])
def test_resource_unit_costs_follow_microsofts_table(method: str, path: str,
                                                     query: dict[str, str], cost: int) -> None:
    assert request_cost(method, path, query)[0] == cost


def test_every_request_needs_a_bearer_token(memory_sandbox: Sandbox) -> None:
    r = call(memory_sandbox, "GET", "/users", headers={"Authorization": ""})
    assert r.status_code == 401


def test_state_persists_between_processes(tmp_path: Any) -> None:
    from provisioner.sandbox import open_tenant

    tenant = reset_tenant(tmp_path, employees=2, seed=1)
    create(Sandbox(tenant))
    tenant.store.close()
    again = open_tenant(tmp_path)
    assert NEW_USER["userPrincipalName"] in {u["userPrincipalName"] for u in again.users.values()}
    assert again.store.counters["mutating"] == 1


def test_members_bind_adds_up_to_20_all_or_none(memory_sandbox: Sandbox) -> None:
    t = memory_sandbox.tenant
    group = next(g for g in t.store.values("groups") if g["displayName"] == "Förtroendevalda")
    ids = list(t.users)[:3]
    refs = [f"https://graph.microsoft.com/v1.0/directoryObjects/{i}" for i in ids]
    r = call(memory_sandbox, "PATCH", f"/groups/{group['id']}", json={"members@odata.bind": refs[:2]})
    assert r.status_code == 204
    r = call(memory_sandbox, "PATCH", f"/groups/{group['id']}", json={"members@odata.bind": refs[1:]})
    assert r.status_code == 400  # one is a member already: none is added
    assert ids[2] not in t.store.all("groups")[group["id"]]["_members"]
    r = call(memory_sandbox, "PATCH", f"/groups/{group['id']}", json={"members@odata.bind": refs * 7})
    assert r.status_code == 400 and "at most 20" in error(r)["message"]


def test_group_based_licensing_gives_the_licence_and_a_mailbox() -> None:
    app = Sandbox(reset_tenant(None, employees=0, seed=1, mailbox_delay=0))
    user = create(app)
    group = next(g for g in app.tenant.store.values("groups")
                 if g["displayName"] == "Licens E3 förtroendevalda")
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user['id']}"}
    assert call(app, "POST", f"/groups/{group['id']}/members/$ref", json=ref).status_code == 204
    licences = call(app, "GET", f"/users/{user['id']}?$select=assignedLicenses").json()
    assert [lic["skuId"] for lic in licences["assignedLicenses"]] == [e3(app)]
    assert call(app, "GET", f"/users/{user['id']}/mailboxSettings").status_code == 200
    call(app, "DELETE", f"/groups/{group['id']}/members/{user['id']}/$ref")
    licences = call(app, "GET", f"/users/{user['id']}?$select=assignedLicenses").json()
    assert licences["assignedLicenses"] == []


def test_a_listing_shows_users_added_changed_and_deleted_since_the_last(memory_sandbox: Sandbox) -> None:
    """GET /users after a create, an update and a delete (learn.microsoft.com/graph/api/user-list,
    with no replication delay set): the sandbox keeps the list it pages through between
    requests, and this fails if it keeps it past a change."""
    def listed() -> dict[str, Any]:
        r = call(memory_sandbox, "GET", "/users", params={"$select": "id,displayName", "$top": "999"})
        assert r.status_code == 200, r.text
        return {u["id"]: u["displayName"] for u in r.json()["value"]}

    before = listed()
    user = create(memory_sandbox)
    assert listed() == {**before, user["id"]: NEW_USER["displayName"]}
    r = call(memory_sandbox, "PATCH", f"/users/{user['id']}", json={"displayName": "Siobhán Ó Briain"})
    assert r.status_code == 204, r.text
    assert listed()[user["id"]] == "Siobhán Ó Briain"
    assert call(memory_sandbox, "DELETE", f"/users/{user['id']}").status_code == 204
    assert listed() == before


def test_a_select_shows_the_same_user_in_a_list_as_alone(memory_sandbox: Sandbox) -> None:
    """$select picks properties of the user Graph would show in full: mail and proxyAddresses
    once the mailbox exists, licenseAssignmentStates beside assignedLicenses, passwordProfile
    never read back, null for what is unset, in the order asked
    (learn.microsoft.com/graph/api/user-list, /graph/api/resources/user: passwordProfile
    "Returned only on $select" as null; /graph/query-parameters#select-parameter). The sandbox
    works out only what is asked; this fails if a property asked for is left out or a hidden
    one shown."""
    user = create(memory_sandbox, usageLocation="SE")
    r = call(memory_sandbox, "POST", f"/users/{user['id']}/assignLicense",
             json={"addLicenses": [{"skuId": e3(memory_sandbox), "disabledPlans": []}], "removeLicenses": []})
    assert r.status_code == 200, r.text
    asked = "proxyAddresses,id,mail,licenseAssignmentStates,assignedLicenses,passwordProfile,officeLocation"
    r = call(memory_sandbox, "GET", f"/users/{user['id']}", params={"$select": asked})
    assert r.status_code == 200, r.text
    alone = r.json()
    listed = [u for u in call(memory_sandbox, "GET", "/users", params={"$select": asked, "$top": "999"})
              .json()["value"] if u["id"] == user["id"]]
    assert listed == [alone]
    assert list(alone) == asked.split(",")
    upn = user["userPrincipalName"]
    assert alone["mail"] == upn and alone["proxyAddresses"] == [f"SMTP:{upn}"]
    sku = e3(memory_sandbox)
    assert alone["assignedLicenses"] == [{"skuId": sku, "disabledPlans": []}]
    assert [(s["skuId"], s["state"]) for s in alone["licenseAssignmentStates"]] == [(sku, "Active")]
    assert alone["passwordProfile"] is None and alone["officeLocation"] is None
    r = call(memory_sandbox, "GET", "/users", params={"$select": "id,_mailboxRequestedAt"})
    assert r.status_code == 400 and "_mailboxRequestedAt" in error(r)["message"]
