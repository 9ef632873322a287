"""The sandbox answers as a real regional tenant does, and the tool works through it: synced
employees, permissions and directory roles enforced. Each sandbox behaviour names the page of
Microsoft's Graph documentation it follows."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.permissions import required, roles
from provisioner.playbook import load_playbook
from provisioner.sandbox import Sandbox, Tenant, authz, open_tenant, reset_tenant

from .conftest import ADOPTION_PROP, cli, reopen

PLAYBOOKS = Path(__file__).parent.parent / "playbooks"
ALL_STEPS = "account, license, groups, mailbox_settings, access_pass, guide"
SYNCED_READ_ONLY = ("Unable to update the specified properties for on-premises mastered Directory"
                    " Sync objects or objects currently undergoing migration.")




def call(app: Sandbox, method: str, path: str, body: Any = None) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="https://graph.sandbox.invalid/v1.0/") as client:
            return await client.request(method, path.lstrip("/"), json=body,
                                        headers={"Authorization": "Bearer t"})
    return asyncio.run(go())


def grant_exactly(state_dir: Path, permissions: set[str], directory_roles: set[str]) -> None:
    """The tool's app holds these application permissions and roles, and nothing else."""
    t = open_tenant(state_dir)
    for sp in list(t.store.values("servicePrincipals")):
        if sp.get("appId") == authz.SANDBOX_APP_ID:
            graph = next(s for s in t.store.values("servicePrincipals") if s["appId"] == authz.GRAPH_APP_ID)
            t.store.put("servicePrincipals", {**sp, "_granted": [[graph["id"], authz.role_id(p)]
                                                                for p in sorted(permissions)],
                                              "_directoryRoles": sorted(directory_roles)})
    t.store.close()


def with_pass(playbook: Path, section: str = "{lifetime_minutes: 60}") -> Path:
    playbook.write_text(playbook.read_text(encoding="utf-8") + f"access_pass: {section}\n"
                        "guide: {organisation: Region Exempel, help: Ring 010-123}\n",
                        encoding="utf-8")
    return playbook


@pytest.fixture
def region() -> Sandbox:
    return Sandbox(reset_tenant(None, employees=30, seed=3, mailbox_delay=0))


def an_employee(app: Sandbox) -> dict[str, Any]:
    return next(u for u in app.tenant.users.values() if u.get("employeeId") == "E10001")


# -- synced employees (learn.microsoft.com/graph/api/resources/onpremisesextensionattributes;
#    user-update: on-premises mastered properties of a synced user are read-only) ----------
def test_the_regions_employees_are_synced_from_ad(region: Sandbox) -> None:
    doc = call(region, "GET", f"/users/{an_employee(region)['id']}"
               "?$select=onPremisesSyncEnabled,onPremisesImmutableId").json()
    assert doc["onPremisesSyncEnabled"] is True and doc["onPremisesImmutableId"]


@pytest.mark.parametrize("body", [
    {"onPremisesExtensionAttributes": {"extensionAttribute15": "x"}},
    {"displayName": "Someone Else"}, {"department": "IT"}, {"accountEnabled": False},
])
def test_a_synced_users_on_premises_attributes_are_read_only(region: Sandbox, body: Any) -> None:
    response = call(region, "PATCH", f"/users/{an_employee(region)['id']}", body)
    assert response.status_code == 400
    assert response.json()["error"] == {**response.json()["error"], "code": "Request_BadRequest",
                                        "message": SYNCED_READ_ONLY}


def test_cloud_attributes_and_the_apps_directory_extension_stay_writable(region: Sandbox) -> None:
    uid = an_employee(region)["id"]
    assert call(region, "PATCH", f"/users/{uid}", {"usageLocation": "NO"}).status_code == 204
    assert call(region, "PATCH", f"/users/{uid}", {ADOPTION_PROP: "mine"}).status_code == 204
    doc = call(region, "GET", f"/users/{uid}?$select=usageLocation,{ADOPTION_PROP}").json()
    assert doc == {"usageLocation": "NO", ADOPTION_PROP: "mine"}


def test_an_unregistered_extension_is_not_a_property(region: Sandbox) -> None:
    """extensibility-overview: a directory extension exists once registered on an application."""
    prop = "extension_00000000000000000000000000000000_other"
    response = call(region, "PATCH", f"/users/{an_employee(region)['id']}", {prop: "x"})
    assert response.status_code == 400
    assert "does not exist on type" in response.json()["error"]["message"]


def test_the_extension_is_listed_on_its_application(region: Sandbox) -> None:
    """application-list-extensionproperty."""
    body = call(region, "GET", f"/applications(appId='{authz.SANDBOX_APP_ID}')/extensionProperties").json()
    assert [(e["name"], e["dataType"], e["targetObjects"]) for e in body["value"]] == [
        (ADOPTION_PROP, "String", ["User"])]


def test_cloud_only_reset_gives_writable_employees(tmp_path: Path) -> None:
    app = Sandbox(reset_tenant(None, employees=30, seed=3, cloud_only=True))
    response = call(app, "PATCH", f"/users/{an_employee(app)['id']}", {"department": "IT"})
    assert response.status_code == 204


@pytest.mark.slow
def test_the_pilot_adopts_synced_staff_and_ends_with_nothing_to_do(
        runner: CliRunner, state_dir: Path, pilot: Path) -> None:
    """Every person of the device pilot is an existing, AD-synced employee (use_existing)."""
    result = cli(runner, state_dir, "apply", "--yes", str(pilot))
    assert result.exit_code == 0, result.output
    t = reopen(state_dir)
    marked = [u for u in t.users.values() if u.get(ADOPTION_PROP)]
    assert len(marked) == 8 and all(u["onPremisesSyncEnabled"] for u in marked)
    assert t.store.counters["400 Request_BadRequest"] == 0
    t.store.close()
    assert cli(runner, state_dir, "plan", "--cohort", "pilot", "--detailed-exitcode",
               str(pilot)).exit_code == 0


def test_adoption_needs_the_registered_extension(runner: CliRunner, state_dir: Path, tmp_path: Path,
                                                 make_sandbox: Callable[..., Tenant]) -> None:
    make_sandbox()
    (tmp_path / "roster.csv").write_text(
        "person_id,given_name,surname,body,employee_id\nP1,Karin,Lindqvist,Kulturnämnden,E10001\n",
        encoding="utf-8")
    playbook = tmp_path / "pb.yaml"
    playbook.write_text("name: adopt\nroster: roster.csv\ndomain: example-region.se\n"
                        "license: {sku: EXCHANGESTANDARD}\nsteps: [account, license]\n"
                        "dual_role: {policy: use_existing}\n", encoding="utf-8")
    assert cli(runner, state_dir, "preflight", str(playbook)).exit_code == 0
    cli(runner, state_dir, "sandbox", "break", "extension", "provisionerOwner")
    result = cli(runner, state_dir, "preflight", str(playbook))
    assert result.exit_code == 5
    assert f"FAIL  adoption        1 existing accounts would be adopted, but the app has no directory" \
           f" extension {ADOPTION_PROP}" in result.output


# -- permissions and roles (the Permissions table of each endpoint's reference page) ----------
def test_a_missing_permission_is_403_as_graph_answers(region: Sandbox) -> None:
    """user-list: User.Read.All least; a token without any of its permissions gets 403."""
    assert call(region, "GET", "/users?$top=1").status_code == 200
    tenant = region.tenant
    sp = next(s for s in tenant.store.values("servicePrincipals") if s["appId"] == authz.SANDBOX_APP_ID)
    keep = [g for g in sp["_granted"] if g[1] != authz.role_id("User.ReadWrite.All")]
    tenant.store.put("servicePrincipals", {**sp, "_granted": keep})
    response = call(region, "GET", "/users?$top=1")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    assert response.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    # Any higher-privileged permission of the page's table is enough.
    tenant.store.put("servicePrincipals", {**sp, "_granted": [*keep, [sp["_granted"][0][0],
                                                                      authz.role_id("Directory.Read.All")]]})
    assert call(region, "GET", "/users?$top=1").status_code == 200


def test_a_password_reset_needs_a_directory_role(region: Sandbox) -> None:
    """user-update: updating passwordProfile app-only needs User Administrator or higher."""
    user = next(u for u in region.tenant.users.values() if not u.get("onPremisesSyncEnabled"))
    body = {"passwordProfile": {"password": "Xy!12345abcdEF", "forceChangePasswordNextSignIn": True}}
    assert call(region, "PATCH", f"/users/{user['id']}", body).status_code == 204
    sp = next(s for s in region.tenant.store.values("servicePrincipals")
              if s["appId"] == authz.SANDBOX_APP_ID)
    region.tenant.store.put("servicePrincipals", {**sp, "_directoryRoles": []})
    response = call(region, "PATCH", f"/users/{user['id']}", body)
    assert response.status_code == 403 and response.json()["error"]["code"] == "Authorization_RequestDenied"


def test_a_device_in_a_group_needs_device_readwrite(region: Sandbox) -> None:
    """group-post-members: adding a device needs Device.ReadWrite.All as well."""
    tenant = region.tenant
    device = next(iter(tenant.store.values("devices")))
    group = next(g for g in tenant.store.values("groups") if g["displayName"].startswith("Intune - "))
    sp = next(s for s in tenant.store.values("servicePrincipals") if s["appId"] == authz.SANDBOX_APP_ID)
    tenant.store.put("servicePrincipals", {**sp, "_granted": [
        g for g in sp["_granted"] if g[1] != authz.role_id("Device.ReadWrite.All")]})
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{device['id']}"}
    assert call(region, "POST", f"/groups/{group['id']}/members/$ref", ref).status_code == 403


@pytest.fixture(params=["officials", "pilot"])
def either_playbook(request: pytest.FixtureRequest, make_sandbox: Callable[..., Tenant],
                    write_playbook: Callable[..., Path]) -> Path:
    """Every step but devices, for officials; or the device pilot (staff adopted)."""
    if request.param == "pilot":
        return Path(request.getfixturevalue("pilot"))
    make_sandbox()
    return with_pass(write_playbook(4, steps=ALL_STEPS))


@pytest.mark.slow
def test_exactly_what_provisioner_permissions_lists_is_enough(
        runner: CliRunner, state_dir: Path, either_playbook: Path) -> None:
    """The witness test of the permission table: the app holds only what `provisioner
    permissions` asks for, and a whole apply, its gates, a re-plan and a rollback meet no 403."""
    path = either_playbook
    pb = load_playbook(path)
    grant_exactly(state_dir, set(required(pb)), set(roles(pb)))
    assert cli(runner, state_dir, "preflight", str(path)).exit_code == 0
    applied = cli(runner, state_dir, "apply", "--yes", str(path))
    assert applied.exit_code == 0, applied.output
    assert cli(runner, state_dir, "rollback", "--yes", str(path)).exit_code == 0
    t = reopen(state_dir)
    assert t.store.counters["403 denied"] == 0
    assert t.store.counters["mutating"] > 0
    t.store.close()


def test_each_permission_asked_for_is_needed(runner: CliRunner, state_dir: Path,
                                             make_sandbox: Callable[..., Tenant],
                                             write_playbook: Callable[..., Path]) -> None:
    """Take any one away and preflight names it: none of them is asked for in vain."""
    make_sandbox()
    path = with_pass(write_playbook(2, steps=ALL_STEPS))
    needed = required(load_playbook(path))
    for permission in needed:
        grant_exactly(state_dir, set(needed) - {permission}, {"User Administrator"})
        result = cli(runner, state_dir, "preflight", str(path))
        assert result.exit_code == 5, permission
        named = "grant Application.Read.All" if permission == "Application.Read.All" \
            else f"not granted: {permission} (to "  # without it the grants cannot be read at all
        assert named in result.output, result.output


def test_a_password_fallback_needs_the_user_administrator_role(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    path = with_pass(write_playbook(2, steps="account, license, access_pass, guide"),
                     "{method: password}")
    assert roles(load_playbook(path)) == {
        "User Administrator": "set a first password people change at sign-in"}
    assert cli(runner, state_dir, "preflight", str(path)).exit_code == 0
    cli(runner, state_dir, "sandbox", "break", "role", "User Administrator")
    result = cli(runner, state_dir, "preflight", str(path))
    assert result.exit_code == 5
    assert "the app has no User Administrator role (needed to set a first password" in result.output


def test_the_readme_lists_what_provisioner_permissions_prints(runner: CliRunner) -> None:
    example = PLAYBOOKS / "fritidspolitiker-epost.yaml"
    out = runner.invoke(main, ["permissions", str(example)]).output
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert out.strip() and out in readme


# -- replication delay (graph/best-practices-concept: a new object may be unknown, 404, to
#    the next requests for a few seconds) ---------------------------------------------------
NEW_USER = {"accountEnabled": True, "displayName": "Ny Person", "mailNickname": "ny.person",
            "userPrincipalName": "ny.person@politiker.example-region.se",
            "passwordProfile": {"password": "Xy!12345abcdEF"}}


def test_a_new_user_is_unknown_to_other_requests_for_the_delay() -> None:
    clock = [1000.0]
    tenant = reset_tenant(None, employees=30, seed=3, replication_delay=5)
    tenant.clock = lambda: clock[0]
    app = Sandbox(tenant)
    created = call(app, "POST", "/users", NEW_USER)
    assert created.status_code == 201
    uid = created.json()["id"]
    unknown = call(app, "GET", f"/users/{uid}")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "Request_ResourceNotFound"
    assert call(app, "POST", f"/users/{uid}/assignLicense",
                {"addLicenses": [], "removeLicenses": []}).status_code == 404
    # The primary already holds the name: a second create is a conflict, not a second user.
    assert call(app, "POST", "/users", NEW_USER).status_code == 400
    clock[0] += 5
    assert call(app, "GET", f"/users/{uid}").status_code == 200


@pytest.mark.slow
def test_a_cohort_survives_replication_delay(runner: CliRunner, state_dir: Path,
                                             make_sandbox: Callable[..., Tenant],
                                             write_playbook: Callable[..., Path]) -> None:
    """Every follow-up after a create (licence, memberships, pass, mailbox) meets the delay and
    waits it out: nobody fails, nothing is made twice, and a re-plan has nothing to do."""
    make_sandbox(replication_delay=1.5)
    path = with_pass(write_playbook(6, steps=ALL_STEPS))
    result = cli(runner, state_dir, "apply", "--yes", str(path))
    assert result.exit_code == 0, result.output
    t = reopen(state_dir)
    assert t.store.counters["404 Request_ResourceNotFound"] > 0  # the delay was really met
    officials = [u for u in t.users.values()
                 if u["userPrincipalName"].endswith("@politiker.example-region.se")]
    assert len(officials) == 6
    t.store.close()
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(path)).exit_code == 0


# -- the Temporary Access Pass policy (temporaryaccesspassauthenticationmethodconfiguration-get:
#    state, includeTargets, minimum 60 / maximum 480 minutes by default, isUsableOnce) ---------
def test_the_default_policy_bounds_a_pass(region: Sandbox) -> None:
    policy = call(region, "GET", "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/"
                  "TemporaryAccessPass").json()
    assert (policy["state"], policy["minimumLifetimeInMinutes"], policy["maximumLifetimeInMinutes"],
            policy["defaultLifetimeInMinutes"]) == ("enabled", 60, 480, 60)
    uid = an_employee(region)["id"]
    taps = f"/users/{uid}/authentication/temporaryAccessPassMethods"
    week = call(region, "POST", taps, {"lifetimeInMinutes": 10080, "isUsableOnce": True})
    assert week.status_code == 400 and week.json()["error"]["code"] == "badRequest"
    later = call(region, "POST", taps, {"lifetimeInMinutes": 480, "isUsableOnce": True,
                                        "startDateTime": "2099-03-02T07:00:00Z"})
    assert later.status_code == 201
    assert (later.json()["startDateTime"], later.json()["methodUsabilityReason"]) == (
        "2099-03-02T07:00:00Z", "NotYetValid")


def test_a_disabled_or_narrowed_policy_refuses_a_pass(tmp_path: Path) -> None:
    from provisioner.sandbox.breaks import apply_break

    tenant = reset_tenant(None, employees=30, seed=3)
    app = Sandbox(tenant)
    uid = an_employee(app)["id"]
    taps = f"/users/{uid}/authentication/temporaryAccessPassMethods"
    apply_break(tenant, "access-pass-policy", "Tjänstemobil pilot")  # a group she is not in
    assert call(app, "POST", taps, {"lifetimeInMinutes": 60}).status_code == 400
    apply_break(tenant, "access-pass-policy", "Alla anställda")
    assert call(app, "POST", taps, {"lifetimeInMinutes": 60}).status_code == 201
    apply_break(tenant, "access-pass-policy", "disabled")
    assert call(app, "POST", taps, {"lifetimeInMinutes": 60}).status_code == 400


@pytest.mark.parametrize(("break_", "named"), [
    ("disabled", "Temporary Access Pass is disabled in the tenant"),
    ("Tjänstemobil pilot", "the policy enables passes only for groups none of which this playbook"
                           " puts people in: add one of Förtroendevalda"),
])
def test_preflight_checks_the_pass_policy(runner: CliRunner, state_dir: Path,
                                          make_sandbox: Callable[..., Tenant],
                                          write_playbook: Callable[..., Path], break_: str,
                                          named: str) -> None:
    make_sandbox()
    path = with_pass(write_playbook(2, steps=ALL_STEPS))
    assert cli(runner, state_dir, "preflight", str(path)).exit_code == 0
    cli(runner, state_dir, "sandbox", "break", "access-pass-policy", break_)
    result = cli(runner, state_dir, "preflight", str(path))
    assert result.exit_code == 5 and named in result.output, result.output


def test_preflight_refuses_a_lifetime_outside_the_policy(runner: CliRunner, state_dir: Path,
                                                        make_sandbox: Callable[..., Tenant],
                                                        write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    path = with_pass(write_playbook(2, steps=ALL_STEPS), "{lifetime_minutes: 10080}")
    result = cli(runner, state_dir, "preflight", str(path))
    assert result.exit_code == 5
    assert "access_pass.lifetime_minutes is 10080, the policy allows 60 to 480" in result.output


def test_a_cohorts_passes_start_when_the_cohort_starts() -> None:
    from provisioner.steps.access_pass import valid_from

    assert valid_from("2099-03-02", "08:00", "Europe/Stockholm") == "2099-03-02T07:00:00Z"  # CET
    assert valid_from("2099-06-01", "08:00", "Europe/Stockholm") == "2099-06-01T06:00:00Z"  # CEST
    assert valid_from("2000-01-01", "08:00", "Europe/Stockholm") is None  # past: valid from now


# -- Intune and Graph's small print ---------------------------------------------------------
def test_a_devices_category_is_set_through_beta(region: Sandbox) -> None:
    """v1.0 documents no way to set a managed device's category (microsoft-graph-docs-contrib
    #9142); beta's managedDevices/{id}/deviceCategory/$ref is the form that works."""
    device = next(iter(region.tenant.store.values("managedDevices")))
    category = next(iter(region.tenant.store.values("deviceCategories")))
    ref = {"@odata.id": f"https://graph.microsoft.com/beta/deviceManagement/deviceCategories/{category['id']}"}
    path = f"/deviceManagement/managedDevices/{device['id']}/deviceCategory/$ref"
    assert call(region, "PUT", path, ref).status_code == 400  # under /v1.0

    async def beta() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=region),
                                     base_url="https://graph.sandbox.invalid/beta/") as client:
            return await client.put(path.lstrip("/"), json=ref, headers={"Authorization": "Bearer t"})
    assert asyncio.run(beta()).status_code == 204


def test_paths_are_case_insensitive(region: Sandbox) -> None:
    """Graph's URL paths are case-insensitive (graph/use-the-api: "... are case insensitive")."""
    assert call(region, "GET", "/Users?$top=1").status_code == 200
    uid = next(u["id"] for u in region.tenant.users.values() if not u.get("onPremisesSyncEnabled"))
    assert call(region, "DELETE", f"/users/{uid}").status_code == 204
    assert call(region, "POST", f"/directory/deleteditems/{uid}/restore").status_code == 200


@pytest.mark.slow
def test_a_device_is_asked_to_sync_only_when_changed(runner: CliRunner, state_dir: Path,
                                                      pilot: Path) -> None:
    plan = cli(runner, state_dir, "plan", "--cohort", "pilot", str(pilot)).output
    changes = re.findall(r"device-(?:group:[^:]+|category):(\w+)", plan)
    assert cli(runner, state_dir, "apply", "--yes", str(pilot)).exit_code == 0
    t = reopen(state_dir)
    synced = t.store.counters["syncDevice"]
    t.store.close()
    assert synced == len(changes) > 0  # once after each change made
    cli(runner, state_dir, "apply", "--yes", "--cohort", "pilot", str(pilot))
    t = reopen(state_dir)
    assert t.store.counters["syncDevice"] == synced  # nothing changed: nothing to sync
    t.store.close()


def test_sign_in_logs_need_entra_id_p1(region: Sandbox) -> None:
    """signin-list: "requires a Microsoft Entra ID P1 or P2 license"; without, a 403."""
    from provisioner.sandbox.breaks import apply_break

    assert call(region, "GET", "/auditLogs/signIns").status_code == 200
    for sku in ("SPE_F1", "SPE_E3"):  # Microsoft 365 F3 and E3 are what bring P1 in this region
        apply_break(region.tenant, "seats", sku)
    response = call(region, "GET", "/auditLogs/signIns")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authentication_RequestFromNonPremiumTenantOrB2CTenant"


def test_a_microsoft_365_group_is_soft_deleted_and_restorable_a_security_group_is_not(
        region: Sandbox) -> None:
    """group-delete: "Microsoft 365 groups are moved to a temporary container and can be
    restored within 30 days. Security groups are deleted permanently." """
    tenant = region.tenant
    sp = next(s for s in tenant.store.values("servicePrincipals") if s["appId"] == authz.SANDBOX_APP_ID)
    tenant.store.put("servicePrincipals", {**sp, "_granted": [*sp["_granted"], [sp["_granted"][0][0],
                                                                             authz.role_id("Group.ReadWrite.All")]]})
    m365 = call(region, "POST", "/groups", {"displayName": "Politiker KN", "mailEnabled": True,
                                            "mailNickname": "politiker-kn", "securityEnabled": False,
                                            "groupTypes": ["Unified"]}).json()
    security = call(region, "POST", "/groups", {"displayName": "Säk", "mailEnabled": False,
                                                "mailNickname": "sak", "securityEnabled": True}).json()
    assert call(region, "POST", "/groups", {"displayName": "DL", "mailEnabled": True, "mailNickname": "dl",
                                            "securityEnabled": False}).status_code == 400
    for group in (m365, security):
        assert call(region, "DELETE", f"/groups/{group['id']}").status_code == 204
    deleted = call(region, "GET", "/directory/deletedItems/microsoft.graph.group").json()["value"]
    assert [g["id"] for g in deleted] == [m365["id"]]
    assert call(region, "POST", f"/directory/deletedItems/{m365['id']}/restore").status_code == 200
    assert call(region, "GET", f"/groups/{m365['id']}").status_code == 200
    assert call(region, "POST", f"/directory/deletedItems/{security['id']}/restore").status_code == 404


def test_assign_license_on_a_group_gives_it_to_every_member_and_needs_the_permission(
        region: Sandbox) -> None:
    """group-assignlicense: "Licenses assigned to the group will be assigned to all users in the
    group"; 202 Accepted with the group; LicenseAssignment.ReadWrite.All (or Group.ReadWrite.All,
    Directory.ReadWrite.All). The region grants neither by default: 403."""
    from provisioner.sandbox.prepare import add_group, grant

    tenant = region.tenant
    add_group(tenant, "Licens E1")
    group = next(g for g in tenant.store.values("groups") if g["displayName"] == "Licens E1")
    employee = an_employee(region)
    tenant.store.put("groups", {**group, "_members": [employee["id"]]})
    e1 = next(s for s in tenant.skus() if s["skuPartNumber"] == "STANDARDPACK")
    body = {"addLicenses": [{"skuId": e1["skuId"], "disabledPlans": []}], "removeLicenses": []}
    denied = call(region, "POST", f"/groups/{group['id']}/assignLicense", body)
    assert denied.status_code == 403
    grant(tenant, "LicenseAssignment.ReadWrite.All")
    accepted = call(region, "POST", f"/groups/{group['id']}/assignLicense", body)
    assert accepted.status_code == 202 and accepted.json()["assignedLicenses"][0]["skuId"] == e1["skuId"]
    held = {lic["skuId"] for lic in tenant.users[employee["id"]]["assignedLicenses"]}
    assert e1["skuId"] in held
    wrong = {"addLicenses": [{"skuId": e1["skuId"], "disabledPlans": ["not-a-plan"]}], "removeLicenses": []}
    assert call(region, "POST", f"/groups/{group['id']}/assignLicense", wrong).status_code == 400
