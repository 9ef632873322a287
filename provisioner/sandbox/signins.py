"""Sign-in events (Graph's ``auditLogs/signIns``) for demos and gate tests."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .conditional_access import EXCHANGE_ONLINE, SignIn, device_state, verdict
from .tenant import Tenant

SIGNIN_FILTERABLE = {"createdDateTime", "userPrincipalName", "userId", "appDisplayName",
                     "status/errorCode"}
# Entra's error codes for the failures that matter here.
DISABLED = (50057, "User account is disabled.")
BAD_PASSWORD = (50126, "Error validating credentials due to invalid username or password.")
# Interruptions before a sign-in that needs MFA goes on (reference-error-codes): a person with a
# method is asked for it; one without is asked to register one first.
MFA_CHALLENGE = (50076, "Due to a configuration change made by your administrator, or because you"
                        " moved to a new location, you must use multi-factor authentication to access.")
MFA_ENROLL = (50079, "Due to a configuration change made by your administrator, or because you moved"
                     " to a new location, you must enroll in multi-factor authentication to access.")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One person's sign-in: with which client (What If's clientAppType) on which platform."""

    upn: str
    client_app_type: str = "browser"
    platform: str | None = None
    country: str = "SE"


CLIENT_APP_USED = {"browser": "Browser", "mobileAppsAndDesktopClients": "Mobile Apps and Desktop clients",
                   "exchangeActiveSync": "Exchange ActiveSync", "other": "Other clients"}
OPERATING_SYSTEM = {"iOS": "Ios", "android": "Android", "windows": "Windows", "macOS": "MacOs"}


def simulate(tenant: Tenant, attempts: Iterable[Attempt | str], success_rate: float = 1.0,
             seed: int = 0) -> dict[str, int]:
    """One interactive sign-in per attempt to Exchange Online, evaluated as Entra would: a
    disabled account fails (50057); then the tenant's Conditional Access policies decide
    (53003 blocked, 53000 device not compliant, ...); then, of those let through, a share
    ``1 - success_rate`` mistype their pass (50126)."""
    rng = random.Random(seed)
    by_upn = {u["userPrincipalName"].lower(): u for u in tenant.users.values()}
    counts = {"success": 0, "failure": 0, "blocked by conditional access": 0, "unknown user": 0,
              "asked for MFA first": 0}
    now = dt.datetime.now(dt.UTC)
    for attempt in attempts:
        if isinstance(attempt, str):
            attempt = Attempt(attempt)
        user = by_upn.get(attempt.upn.lower())
        if user is None:
            counts["unknown user"] += 1
            continue
        compliant, joined = device_state(tenant, user, attempt.platform)
        ca = verdict(tenant, user, SignIn(client_app_type=attempt.client_app_type, platform=attempt.platform,
                                          country=attempt.country, device_compliant=compliant,
                                          device_domain_joined=joined))
        if not user.get("accountEnabled", True):
            code, reason = DISABLED
        elif ca["errorCode"]:
            code, reason = ca["errorCode"], ca["failureReason"]
        elif rng.random() < success_rate:
            code, reason = 0, "Other."
        else:
            code, reason = BAD_PASSWORD
        outcome = "blocked by conditional access" if ca["errorCode"] and code == ca["errorCode"] else \
            "success" if code == 0 else "failure"
        counts[outcome] += 1
        pass_usable = bool((user.get("_tap") or {}).get("isUsable"))  # a pass is strong authentication
        if code == 0 and ca["mfaRequired"] and not pass_usable:
            counts["asked for MFA first"] += 1
            interrupt = MFA_CHALLENGE if user.get("_methods") else MFA_ENROLL
            _record(tenant, user, attempt, compliant, ca, *interrupt, now)
        if code == 0 and not user.get("_methods"):  # registered at this first sign-in, as the guide says
            user = {**user, "_methods": ["microsoftAuthenticator"]}
            tenant.store.put("users", user)
            by_upn[attempt.upn.lower()] = user
        _record(tenant, user, attempt, compliant, ca, code, reason, now)
    return counts


def _record(tenant: Tenant, user: dict[str, Any], attempt: Attempt, compliant: bool,
            ca: dict[str, Any], code: int, reason: str, now: dt.datetime) -> None:
    tenant.store.put("signIns", {
        "id": str(uuid.uuid4()),
        "createdDateTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "userPrincipalName": user["userPrincipalName"], "userId": user["id"],
        "userDisplayName": user.get("displayName"), "appDisplayName": "Office 365 Exchange Online",
        "appId": EXCHANGE_ONLINE, "clientAppUsed": CLIENT_APP_USED[attempt.client_app_type],
        "isInteractive": True,
        "deviceDetail": {"operatingSystem": OPERATING_SYSTEM.get(attempt.platform or "", ""),
                         "isCompliant": compliant, "isManaged": compliant},
        "location": {"countryOrRegion": attempt.country},
        "conditionalAccessStatus": ca["conditionalAccessStatus"],
        "appliedConditionalAccessPolicies": ca["appliedConditionalAccessPolicies"],
        "status": {"errorCode": code, "failureReason": reason},
    })
