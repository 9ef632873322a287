"""The sandbox's Conditional Access answers as Microsoft documents it.

- policies: https://learn.microsoft.com/graph/api/resources/conditionalaccesspolicy
- What If: https://learn.microsoft.com/graph/api/conditionalaccessroot-evaluate and
  https://learn.microsoft.com/graph/api/resources/whatifanalysisresult (analysisReasons is
  notSet when policyApplies, else the condition that kept the policy out)
- sign-ins: https://learn.microsoft.com/graph/api/resources/signin (conditionalAccessStatus,
  appliedConditionalAccessPolicies); error codes 53003, 53000:
  https://learn.microsoft.com/entra/identity-platform/reference-error-codes
- a compliant device for all users locks out everyone not enrolled:
  https://learn.microsoft.com/entra/identity/conditional-access/troubleshoot-conditional-access
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.sandbox import Sandbox, reset_tenant
from provisioner.sandbox.breaks import apply_break
from provisioner.sandbox.signins import Attempt, simulate

from .test_sandbox import call, create, error

EXO = "00000002-0000-0ff1-ce00-000000000000"


@pytest.fixture
def app() -> Sandbox:
    return Sandbox(reset_tenant(None, employees=20, seed=3, mailbox_delay=0))


def what_if(app: Sandbox, user_id: str, **conditions: Any) -> dict[str, dict[str, Any]]:
    r = call(app, "POST", "/identity/conditionalAccess/evaluate", json={
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": user_id},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [EXO]},
        "signInConditions": conditions})
    assert r.status_code == 200, r.text
    return {p["displayName"]: p for p in r.json()["value"]}


def test_the_region_has_a_baseline_of_policies_and_a_named_location(app: Sandbox) -> None:
    policies = call(app, "GET", "/identity/conditionalAccess/policies").json()["value"]
    assert [p["state"] for p in policies] == ["enabled"] * 3 + ["enabledForReportingButNotEnforced"]
    assert policies[0]["grantControls"] == {"operator": "OR", "builtInControls": ["mfa"],
                                            "customAuthenticationFactors": [], "termsOfUse": []}
    one = call(app, "GET", f"/identity/conditionalAccess/policies/{policies[1]['id']}").json()
    assert one["conditions"]["clientAppTypes"] == ["exchangeActiveSync", "other"]
    [sweden] = call(app, "GET", "/identity/conditionalAccess/namedLocations").json()["value"]
    assert sweden["@odata.type"] == "#microsoft.graph.countryNamedLocation"
    assert sweden["countriesAndRegions"] == ["SE"]


def test_reading_policies_needs_a_policy_permission(app: Sandbox) -> None:
    apply_break(app.tenant, "permission", "Policy.Read.ConditionalAccess")
    r = call(app, "GET", "/identity/conditionalAccess/policies")
    assert r.status_code == 403 and error(r)["code"] == "Authorization_RequestDenied"
    assert call(app, "POST", "/identity/conditionalAccess/evaluate", json={}).status_code == 403


def test_what_if_says_which_policies_apply_and_why_the_others_do_not(app: Sandbox) -> None:
    official = create(app)
    web = what_if(app, official["id"], clientAppType="browser", devicePlatform="iOS", country="SE")
    assert web["CA001 Kräv MFA för alla användare"]["policyApplies"] is True
    assert web["CA001 Kräv MFA för alla användare"]["analysisReasons"] == "notSet"
    assert web["CA002 Blockera äldre autentisering"]["analysisReasons"] == "clientApps"
    assert web["CA003 Kompatibel enhet för anställda på mobilen"]["analysisReasons"] == "users"
    assert web["CA004 Blockera inloggning utanför Sverige (rapport)"]["analysisReasons"] == "location"
    mail = what_if(app, official["id"], clientAppType="exchangeActiveSync", devicePlatform="iOS",
                   country="SE")
    assert mail["CA002 Blockera äldre autentisering"]["policyApplies"] is True
    # A condition the sign-in does not describe cannot be evaluated.
    vague = what_if(app, official["id"])
    assert vague["CA002 Blockera äldre autentisering"]["analysisReasons"] == "notEnoughInformation"


def test_what_if_with_applied_policies_only_and_a_staff_member(app: Sandbox) -> None:
    staff = next(u for u in app.tenant.users.values() if u.get("employeeId"))
    r = call(app, "POST", "/identity/conditionalAccess/evaluate", json={
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": staff["id"]},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [EXO]},
        "signInConditions": {"clientAppType": "mobileAppsAndDesktopClients", "devicePlatform": "android",
                             "country": "SE"},
        "appliedPoliciesOnly": True})
    names = [p["displayName"] for p in r.json()["value"]]
    assert names == ["CA001 Kräv MFA för alla användare", "CA003 Kompatibel enhet för anställda på mobilen"]


@pytest.mark.parametrize(("body", "said"), [
    ({}, "signInIdentity"),
    ({"signInIdentity": {"@odata.type": "#microsoft.graph.servicePrincipalSignIn"},
      "signInContext": {}, "signInConditions": {}}, "userSignIn"),
])
def test_what_if_refuses_a_request_it_cannot_answer(app: Sandbox, body: dict[str, Any], said: str) -> None:
    r = call(app, "POST", "/identity/conditionalAccess/evaluate", json=body)
    assert r.status_code == 400 and said in error(r)["message"]


def test_a_sign_in_obeys_the_policies_and_is_logged_with_them(app: Sandbox) -> None:
    official = create(app)
    counts = simulate(app.tenant, [Attempt(official["userPrincipalName"], "browser", "iOS"),
                                   Attempt(official["userPrincipalName"], "exchangeActiveSync", "iOS")])
    assert counts == {"success": 1, "failure": 0, "blocked by conditional access": 1, "unknown user": 0,
                      "asked for MFA first": 1}
    events = call(app, "GET", "/auditLogs/signIns").json()["value"]
    by_client = {e["clientAppUsed"]: e for e in events if e["status"]["errorCode"] != 50079}
    web, mail = by_client["Browser"], by_client["Exchange ActiveSync"]
    assert web["status"]["errorCode"] == 0 and web["conditionalAccessStatus"] == "success"
    assert mail["status"]["errorCode"] == 53003 and mail["conditionalAccessStatus"] == "failure"
    results = {p["displayName"]: p["result"] for p in mail["appliedConditionalAccessPolicies"]}
    assert results["CA002 Blockera äldre autentisering"] == "failure"
    assert results["CA003 Kompatibel enhet för anställda på mobilen"] == "notApplied"
    assert results["CA004 Blockera inloggning utanför Sverige (rapport)"] == "reportOnlyNotApplied"


def test_a_policy_requiring_a_compliant_device_for_all_locks_out_officials_on_their_own_devices(
        app: Sandbox) -> None:
    official = create(app)
    apply_break(app.tenant, "conditional-access", "Kräv kompatibel enhet")
    outlook = Attempt(official["userPrincipalName"], "mobileAppsAndDesktopClients", "iOS")
    counts = simulate(app.tenant, [outlook])
    assert counts["blocked by conditional access"] == 1
    [event] = call(app, "GET", "/auditLogs/signIns").json()["value"]
    assert event["status"]["errorCode"] == 53000
    failed = [p for p in event["appliedConditionalAccessPolicies"] if p["result"] == "failure"]
    assert [p["displayName"] for p in failed] == ["Kräv kompatibel enhet"]
    assert failed[0]["enforcedGrantControls"] == ["compliantDevice"]
    applies = what_if(app, official["id"], clientAppType="browser", devicePlatform="windows", country="SE")
    assert applies["Kräv kompatibel enhet"]["policyApplies"] is True


def test_excluding_a_group_lets_its_members_through(app: Sandbox) -> None:
    official = create(app)
    apply_break(app.tenant, "conditional-access", "Kräv kompatibel enhet")
    group = next(g for g in app.tenant.store.values("groups") if g["displayName"] == "Förtroendevalda")
    app.tenant.store.put("groups", {**group, "_members": [official["id"]]})
    pol = next(p for p in app.tenant.store.values("conditionalAccessPolicies")
               if p["displayName"] == "Kräv kompatibel enhet")
    pol["conditions"]["users"]["excludeGroups"] = [group["id"]]
    app.tenant.store.put("conditionalAccessPolicies", pol)
    assert what_if(app, official["id"], clientAppType="browser", devicePlatform="iOS",
                   country="SE")["Kräv kompatibel enhet"]["analysisReasons"] == "users"
    outlook = Attempt(official["userPrincipalName"], "mobileAppsAndDesktopClients", "iOS")
    counts = simulate(app.tenant, [outlook])
    assert counts["success"] == 1


def test_a_disabled_policy_never_applies(app: Sandbox) -> None:
    official = create(app)
    pol = next(iter(app.tenant.store.values("conditionalAccessPolicies")))
    app.tenant.store.put("conditionalAccessPolicies", {**pol, "state": "disabled"})
    verdicts = what_if(app, official["id"], clientAppType="browser", devicePlatform="iOS", country="SE")
    assert (verdicts[pol["displayName"]]["policyApplies"], verdicts[pol["displayName"]]["analysisReasons"]) \
        == (False, "policyNotEnabled")


def test_conditional_access_needs_entra_id_p1(app: Sandbox) -> None:
    for sku in list(app.tenant.store.values("skus")):
        plans = [p for p in sku["servicePlans"] if p["servicePlanName"] != "AAD_PREMIUM"]
        app.tenant.store.put("skus", {**sku, "servicePlans": plans})
    r = call(app, "GET", "/identity/conditionalAccess/policies")
    assert r.status_code == 403 and "P1" in error(r)["message"]


def test_mfa_for_all_asks_a_person_without_a_pass_to_register_first(app: Sandbox) -> None:
    """A sign-in that needs MFA is interrupted: 50079 (register a method) for a person with
    none, 50076 (use it) for one who has one; a Temporary Access Pass is strong authentication."""
    official = create(app)
    counts = simulate(app.tenant, [official["userPrincipalName"], official["userPrincipalName"]])
    assert counts["success"] == 2 and counts["asked for MFA first"] == 2
    events = call(app, "GET", "/auditLogs/signIns").json()["value"]
    assert sorted(e["status"]["errorCode"] for e in events) == [0, 0, 50076, 50079]
    with_pass = create(app, userPrincipalName="per.pass@politiker.example-region.se", mailNickname="perpass")
    r = call(app, "POST", f"/users/{with_pass['id']}/authentication/temporaryAccessPassMethods",
             json={"lifetimeInMinutes": 60})
    assert r.status_code == 201
    assert simulate(app.tenant, [with_pass["userPrincipalName"]])["asked for MFA first"] == 0


def test_the_methods_a_person_can_register_after_a_pass(app: Sandbox) -> None:
    """authenticationmethodconfiguration-get: each method's state and targets
    (https://learn.microsoft.com/graph/api/authenticationmethodconfiguration-get,
    resources/microsoftauthenticatorauthenticationmethodconfiguration: includeTargets with an
    authenticationMode of any, deviceBasedPush or push; resources/fido2authenticationmethodconfiguration)."""
    base = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations"
    authenticator = call(app, "GET", f"{base}/MicrosoftAuthenticator").json()
    assert authenticator["@odata.type"] == \
        "#microsoft.graph.microsoftAuthenticatorAuthenticationMethodConfiguration"
    assert authenticator["state"] == "enabled"
    assert authenticator["includeTargets"][0] | {"id": "all_users", "authenticationMode": "any"} == \
        authenticator["includeTargets"][0]
    assert call(app, "GET", f"{base}/Fido2").json()["state"] == "disabled"
    assert call(app, "GET", f"{base}/NoSuchMethod").status_code == 404
    apply_break(app.tenant, "authenticator", "disabled")
    assert call(app, "GET", f"{base}/MicrosoftAuthenticator").json()["state"] == "disabled"
    apply_break(app.tenant, "permission", "Policy.Read.AuthenticationMethod")
    assert call(app, "GET", f"{base}/MicrosoftAuthenticator").status_code == 403
