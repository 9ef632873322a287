"""``sandbox show``: what is in the tenant and what was asked of it."""

from __future__ import annotations

from typing import Any

from .tenant import Tenant


def describe(tenant: Tenant) -> dict[str, dict[str, Any]]:
    users = list(tenant.users.values())
    managed = [u for u in users if any(
        str(v).startswith("provisioner:")
        for v in (u.get("onPremisesExtensionAttributes") or {}).values() if v)]
    objects = {
        "users": len(users),
        "users made by provisioner": len(managed),
        "mailboxes waiting for Exchange": sum(
            1 for u in users if u.get("_mailboxRequestedAt") is not None
            and not tenant.mailbox_ready(u)),
        "soft-deleted users": len(tenant.store.all("deletedUsers")),
        "groups": len(tenant.store.all("groups")),
    }
    licences = {s["skuPartNumber"]: f"{s['consumedUnits']} of {s['prepaidUnits']['enabled']} in use"
                for s in tenant.skus()}
    counters = tenant.store.counters
    requests = {k: counters[k] for k in ("GET", "POST", "PATCH", "PUT", "DELETE", "BATCH")
                if counters.get(k)}
    requests.update({"mutating": counters.get("mutating", 0),
                     "throttled (429)": counters.get("throttled", 0),
                     "faults (503)": counters.get("faults", 0),
                     "lost replies (504 after the write)": counters.get("lost replies", 0)})
    config = {k: v for k, v in tenant.config.items()}
    return {"objects": objects, "licences": licences, "requests": requests, "settings": config}
