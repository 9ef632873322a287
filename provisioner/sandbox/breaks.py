"""`sandbox break`: knobs that make the tenant not ready, one preflight check each."""

from __future__ import annotations

from .tenant import Tenant

KINDS = {
    "domain": "NAME: the domain is no longer verified",
    "permission": "NAME: revoke this Graph application permission from the tool's app",
    "group": "NAME: delete the group",
    "seats": "SKU: no free seats left on this subscription",
    "usage-location": "UPN: clear the account's usageLocation",
}


def apply_break(tenant: Tenant, kind: str, target: str) -> str:
    store = tenant.store
    if kind == "domain":
        domain = store.all("domains").get(target.lower())
        if domain is None:
            raise ValueError(f"no domain {target}")
        store.put("domains", {**domain, "isVerified": False})
        return f"{target} is no longer verified"
    if kind == "permission":
        from .seed import GRAPH_APP_ROLES

        role = GRAPH_APP_ROLES.get(target)
        if role is None:
            raise ValueError(f"unknown permission {target} (known: {', '.join(GRAPH_APP_ROLES)})")
        for sp in list(store.values("servicePrincipals")):
            if "_granted" in sp:
                kept = [g for g in sp["_granted"] if g[1] != role]
                store.put("servicePrincipals", {**sp, "_granted": kept})
        return f"{target} revoked"
    if kind == "group":
        found = [g for g in store.values("groups") if g["displayName"] == target]
        if not found:
            raise ValueError(f"no group named {target}")
        for g in found:
            store.remove("groups", g["id"])
        return f"group {target} deleted"
    if kind == "seats":
        sku = next((s for s in tenant.skus() if s["skuPartNumber"] == target), None)
        if sku is None:
            raise ValueError(f"no subscription {target}")
        raw = store.all("skus")[sku["id"]]
        store.put("skus", {**raw, "prepaidUnits": {**raw["prepaidUnits"], "enabled": sku["consumedUnits"]}})
        return f"{target}: no free seats"
    if kind == "usage-location":
        user = tenant.find_user(target)
        store.put("users", {**user, "usageLocation": None})
        return f"{target}: usageLocation cleared"
    raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
