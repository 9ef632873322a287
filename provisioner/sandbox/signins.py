"""Sign-in events (Graph's ``auditLogs/signIns``) for demos and gate tests."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterable

from .tenant import Tenant

SIGNIN_FILTERABLE = {"createdDateTime", "userPrincipalName", "userId", "appDisplayName",
                     "status/errorCode"}
# Entra's error codes for the failures that matter here.
DISABLED = (50057, "User account is disabled.")
BAD_PASSWORD = (50126, "Error validating credentials due to invalid username or password.")


def simulate(tenant: Tenant, upns: Iterable[str], success_rate: float, seed: int = 0) -> dict[str, int]:
    """One interactive sign-in attempt per person; a disabled account always fails."""
    rng = random.Random(seed)
    by_upn = {u["userPrincipalName"].lower(): u for u in tenant.users.values()}
    counts = {"success": 0, "failure": 0, "unknown user": 0}
    now = dt.datetime.now(dt.UTC)
    for upn in upns:
        user = by_upn.get(upn.lower())
        if user is None:
            counts["unknown user"] += 1
            continue
        if not user.get("accountEnabled", True):
            code, reason = DISABLED
        elif rng.random() < success_rate:
            code, reason = 0, "Other."
        else:
            code, reason = BAD_PASSWORD
        counts["success" if code == 0 else "failure"] += 1
        tenant.store.put("signIns", {
            "id": str(uuid.uuid4()),
            "createdDateTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "userPrincipalName": user["userPrincipalName"], "userId": user["id"],
            "userDisplayName": user.get("displayName"), "appDisplayName": "Office 365 Exchange Online",
            "clientAppUsed": "Browser", "isInteractive": True,
            "status": {"errorCode": code, "failureReason": reason},
        })
    return counts
