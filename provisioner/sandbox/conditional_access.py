"""Conditional Access as Entra applies it: policies, named locations, What If, and the verdict
a sign-in gets.

Written from Microsoft's documentation, never from the client:
- policies: ``learn.microsoft.com/graph/api/resources/conditionalaccesspolicy`` (state
  enabled, disabled or enabledForReportingButNotEnforced; conditions: users, applications,
  clientAppTypes, platforms, locations; grantControls with an operator and builtInControls);
- What If: ``graph/api/conditionalaccessroot-evaluate`` and ``resources/whatifanalysisresult``:
  each policy with ``policyApplies`` and, when it does not apply, the first condition that
  kept it out as ``analysisReasons`` (``notSet`` when it applies; ``notEnoughInformation``
  when the policy has a condition the sign-in details do not say);
- sign-in events: ``resources/signin`` (``conditionalAccessStatus`` success, failure or
  notApplied; ``appliedConditionalAccessPolicies`` with each policy's ``result``), with
  Entra's error codes: 53003 blocked by Conditional Access, 53000 device not compliant, 53001
  device not domain-joined (``entra/identity-platform/reference-error-codes``).
- "Require device to be marked as compliant" for all users blocks everyone whose device is not
  enrolled (``entra/identity/conditional-access/troubleshoot-conditional-access``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from dataclasses import dataclass
from typing import Any

from .tenant import ApiError, Tenant, bad_request

Doc = dict[str, Any]

EXCHANGE_ONLINE = "00000002-0000-0ff1-ce00-000000000000"
SHAREPOINT_ONLINE = "00000003-0000-0ff1-ce00-000000000000"
TEAMS = "cc15fd57-2c6c-4117-a88c-83b1d56b4bbe"
OFFICE_365 = {EXCHANGE_ONLINE, SHAREPOINT_ONLINE, TEAMS}  # the "Office365" app group, in part
CLIENT_APP_TYPES = ("browser", "mobileAppsAndDesktopClients", "exchangeActiveSync", "other")
PLATFORMS = ("android", "iOS", "windows", "windowsPhone", "macOS", "linux")
STATES = ("enabled", "disabled", "enabledForReportingButNotEnforced")
# Clients that Conditional Access counts as approved client apps on iOS and Android (Outlook
# for iOS and Android among them): a modern-authentication app on a mobile platform.
APPROVED_PLATFORMS = ("iOS", "android")


@dataclass(frozen=True, slots=True)
class SignIn:
    """What a sign-in brings to the evaluation (What If's signInConditions, and the device)."""

    app_id: str | None = EXCHANGE_ONLINE
    client_app_type: str | None = None
    platform: str | None = None
    country: str | None = None
    ip: str | None = None
    device_compliant: bool = False
    device_domain_joined: bool = False


# -- the tenant's policies ------------------------------------------------------------------

def policies(tenant: Tenant) -> list[Doc]:
    return sorted(tenant.store.values("conditionalAccessPolicies"), key=lambda p: p["createdDateTime"])


def named_locations(tenant: Tenant) -> list[Doc]:
    return list(tenant.store.values("namedLocations"))


def policy(display_name: str, *, state: str = "enabled", users: Doc | None = None,
           apps: list[str] | None = None, client_app_types: list[str] | None = None,
           platforms: Doc | None = None, locations: Doc | None = None,
           controls: list[str], operator: str = "OR") -> Doc:
    """A policy as Graph returns it (conditionalAccessPolicy, v1.0)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": str(uuid.uuid4()), "displayName": display_name, "state": state,
        "createdDateTime": now, "modifiedDateTime": None,
        "conditions": {
            "users": {"includeUsers": ["All"], "excludeUsers": [], "includeGroups": [],
                      "excludeGroups": [], "includeRoles": [], "excludeRoles": [], **(users or {})},
            "applications": {"includeApplications": apps or ["All"], "excludeApplications": []},
            "clientAppTypes": client_app_types or ["all"],
            "platforms": platforms, "locations": locations,
            "signInRiskLevels": [], "userRiskLevels": [],
        },
        "grantControls": {"operator": operator, "builtInControls": controls,
                          "customAuthenticationFactors": [], "termsOfUse": []},
        "sessionControls": None,
    }


def add_policy(tenant: Tenant, doc: Doc) -> Doc:
    if doc.get("state") not in STATES:
        raise bad_request(f"Invalid value for 'state': {doc.get('state')!r}.")
    tenant.store.put("conditionalAccessPolicies", doc)
    return doc


# -- whether a policy applies ---------------------------------------------------------------

def _applies(tenant: Tenant, pol: Doc, user: Doc, groups: set[str], sign_in: SignIn) -> str:
    """``notSet`` when the policy applies to this sign-in, else why not (What If's reasons)."""
    if pol["state"] == "disabled":
        return "policyNotEnabled"
    cond = pol["conditions"]
    users = cond.get("users") or {}
    included = ("All" in users.get("includeUsers", []) or user["id"] in users.get("includeUsers", [])
                or bool(groups & set(users.get("includeGroups", []))))
    excluded = (user["id"] in users.get("excludeUsers", [])
                or bool(groups & set(users.get("excludeGroups", []))))
    if not included or excluded:
        return "users"
    apps = cond.get("applications") or {}
    if sign_in.app_id is None:
        return "notEnoughInformation"
    if not (_names_app(apps.get("includeApplications", []), sign_in.app_id)
            and not _names_app(apps.get("excludeApplications", []), sign_in.app_id)):
        return "application"
    types = cond.get("clientAppTypes") or ["all"]
    if "all" not in types:
        if sign_in.client_app_type is None:
            return "notEnoughInformation"
        if sign_in.client_app_type not in types:
            return "clientApps"
    platforms = cond.get("platforms")
    if platforms:
        if sign_in.platform is None:
            return "notEnoughInformation"
        inc, exc = platforms.get("includePlatforms") or [], platforms.get("excludePlatforms") or []
        if not ("all" in inc or sign_in.platform in inc) or sign_in.platform in exc:
            return "devicePlatform"
    locations = cond.get("locations")
    if locations:
        if sign_in.country is None and sign_in.ip is None:
            return "notEnoughInformation"
        inc, exc = locations.get("includeLocations") or [], locations.get("excludeLocations") or []
        if not _at(tenant, inc, sign_in) or _at(tenant, exc, sign_in):
            return "location"
    return "notSet"


def _names_app(listed: list[str], app_id: str) -> bool:
    return "All" in listed or app_id in listed or ("Office365" in listed and app_id in OFFICE_365)


def _at(tenant: Tenant, listed: list[str], sign_in: SignIn) -> bool:
    """Whether the sign-in comes from one of the listed locations (All, AllTrusted, ids)."""
    if "All" in listed:
        return True
    for loc in named_locations(tenant):
        if loc["id"] not in listed and not ("AllTrusted" in listed and loc.get("isTrusted")):
            continue
        if "countriesAndRegions" in loc and sign_in.country in loc["countriesAndRegions"]:
            return True
        for rng in loc.get("ipRanges", []):
            if sign_in.ip and ipaddress.ip_address(sign_in.ip) in ipaddress.ip_network(rng["cidrAddress"]):
                return True
    return False


def _groups(tenant: Tenant, user: Doc) -> set[str]:
    return {g["id"] for g in tenant.store.values("groups") if user["id"] in g["_members"]}


# -- What If ---------------------------------------------------------------------------------

def evaluate(tenant: Tenant, body: Any) -> Doc:
    """POST /identity/conditionalAccess/evaluate (v1.0)."""
    if not isinstance(body, dict):
        raise bad_request("The request body is not a JSON object.")
    identity, context = body.get("signInIdentity"), body.get("signInContext")
    conditions = body.get("signInConditions") or {}
    for name, value in (("signInIdentity", identity), ("signInContext", context),
                        ("signInConditions", body.get("signInConditions"))):
        if not isinstance(value, dict):
            raise bad_request(f"The parameter '{name}' is required.")
    if identity.get("@odata.type") != "#microsoft.graph.userSignIn" or not identity.get("userId"):
        raise bad_request("signInIdentity must be a #microsoft.graph.userSignIn with a userId.")
    user = tenant.find_user(str(identity["userId"]))
    apps = context.get("includeApplications") if context.get("@odata.type") == \
        "#microsoft.graph.applicationContext" else None
    client = conditions.get("clientAppType")
    platform = conditions.get("devicePlatform")
    if client not in (None, "all", *CLIENT_APP_TYPES):
        raise bad_request(f"Invalid value for 'clientAppType': {client!r}.")
    if platform not in (None, "all", *PLATFORMS):
        raise bad_request(f"Invalid value for 'devicePlatform': {platform!r}.")
    sign_in = SignIn(app_id=(apps or [None])[0], client_app_type=None if client in (None, "all") else client,
                     platform=None if platform in (None, "all") else platform,
                     country=conditions.get("country"), ip=conditions.get("ipAddress"))
    groups = _groups(tenant, user)
    results = []
    for pol in policies(tenant):
        reason = _applies(tenant, pol, user, groups, sign_in)
        results.append({**pol, "@odata.type": "#microsoft.graph.whatIfAnalysisResult",
                        "policyApplies": reason == "notSet", "analysisReasons": reason})
    if body.get("appliedPoliciesOnly"):
        results = [r for r in results if r["policyApplies"]]
    return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#"
                              "Collection(microsoft.graph.whatIfAnalysisResult)", "value": results}


# -- a sign-in's verdict ----------------------------------------------------------------------

# The error a failed grant control gives, first match wins (reference-error-codes).
_FAILURES = {
    "block": (53003, "Access has been blocked by Conditional Access policies. The access policy"
                     " does not allow token issuance."),
    "compliantDevice": (53000, "Device is not in required device state: compliant. Conditional Access"
                               " policy requires a compliant device, and the device is not compliant."),
    "domainJoinedDevice": (53001, "Device is not in required device state: domain joined."),
    "approvedApplication": (53003, "Access has been blocked by Conditional Access policies: the"
                                   " policy requires an approved client app."),
    "compliantApplication": (53003, "Access has been blocked by Conditional Access policies: the"
                                    " policy requires an app protection policy."),
}


def _granted(control: str, sign_in: SignIn) -> bool:
    if control == "block":
        return False
    if control == "compliantDevice":
        return sign_in.device_compliant
    if control == "domainJoinedDevice":
        return sign_in.device_domain_joined
    if control in ("approvedApplication", "compliantApplication"):
        return (sign_in.client_app_type == "mobileAppsAndDesktopClients"
                and sign_in.platform in APPROVED_PLATFORMS)
    # mfa: a Temporary Access Pass counts as strong authentication, and a person without a
    # method registers one when asked at the first sign-in (an interruption, not a block).
    return True


def verdict(tenant: Tenant, user: Doc, sign_in: SignIn) -> Doc:
    """The sign-in event's Conditional Access part: status, the applied policies and, if it
    failed, the error code and reason (``errorCode`` 0 when it passed)."""
    groups = _groups(tenant, user)
    applied, failure, enforced, mfa = [], None, False, False
    for pol in policies(tenant):
        reason = _applies(tenant, pol, user, groups, sign_in)
        report_only = pol["state"] == "enabledForReportingButNotEnforced"
        controls = pol["grantControls"]["builtInControls"] if pol.get("grantControls") else []
        if pol["state"] == "disabled":
            result = "notEnabled"
        elif reason != "notSet":
            result = "reportOnlyNotApplied" if report_only else "notApplied"
        else:
            met = [_granted(c, sign_in) for c in controls]
            ok = (all(met) if pol["grantControls"].get("operator") == "AND" else any(met)) if met else True
            result = ("reportOnlySuccess" if ok else "reportOnlyFailure") if report_only else \
                ("success" if ok else "failure")
            if not report_only:
                enforced = True
                mfa = mfa or "mfa" in controls
                if not ok and failure is None:
                    failed = next(c for c, m in zip(controls, met, strict=True) if not m)
                    failure = (*_FAILURES.get(failed, _FAILURES["block"]), pol)
        applied.append({"id": pol["id"], "displayName": pol["displayName"],
                        "enforcedGrantControls": controls if result in ("success", "failure") else [],
                        "enforcedSessionControls": [], "result": result})
    status = "failure" if failure else ("success" if enforced else "notApplied")
    code, reason = (failure[0], failure[1]) if failure else (0, "Other.")
    return {"conditionalAccessStatus": status, "appliedConditionalAccessPolicies": applied,
            "errorCode": code, "failureReason": reason, "mfaRequired": mfa and not failure}


def device_state(tenant: Tenant, user: Doc, platform: str | None) -> tuple[bool, bool]:
    """(compliant, domain joined) of the user's managed device on that platform, if any."""
    os_names = {"iOS": ("iOS", "iPadOS"), "android": ("Android",), "windows": ("Windows",),
                "macOS": ("macOS",)}.get(platform or "", ())
    for device in tenant.store.values("managedDevices"):
        if device.get("userId") == user["id"] and device.get("operatingSystem") in os_names:
            return device.get("complianceState") == "compliant", False
    return False, False


def require_license(tenant: Tenant) -> None:
    """Conditional Access needs Microsoft Entra ID P1 in the tenant, like the sign-in logs."""
    try:
        tenant.require_premium()
    except ApiError:
        raise ApiError(403, "Authorization_RequestDenied", "Conditional Access requires a Microsoft"
                       " Entra ID P1 or P2 license in the tenant.") from None
