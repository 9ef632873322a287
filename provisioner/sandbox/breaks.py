"""`sandbox break`: knobs that make the tenant not ready, one preflight check each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import authz
from .tenant import Tenant

KINDS = {
    "domain": "NAME: the domain is no longer verified",
    "permission": "NAME: revoke this Graph application permission from the tool's app",
    "role": "NAME: remove this directory role from the tool's app (e.g. User Administrator)",
    "extension": "NAME: delete the directory extension (e.g. provisionerOwner)",
    "access-pass-policy": "disabled|GROUP: turn Temporary Access Passes off, or limit them to a group",
    "group": "NAME: delete the group",
    "seats": "SKU: no free seats left on this subscription",
    "usage-location": "UPN: clear the account's usageLocation",
    "authenticator": "disabled: turn Microsoft Authenticator off (no passwordless method after the pass)",
    "conditional-access": "NAME: add an enabled policy NAME requiring a compliant device of all"
                          " users, for every app and client (the setting that locks out officials"
                          " on their own phones and tablets)",
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
        if target not in authz.KNOWN:
            raise ValueError(f"unknown permission {target} (known: {', '.join(authz.KNOWN)})")
        _take_from_app(tenant, "_granted", lambda g: g[1] == authz.role_id(target))
        return f"{target} revoked"
    if kind == "role":
        if target not in authz.DIRECTORY_ROLES:
            raise ValueError(f"unknown role {target} (known: {', '.join(authz.DIRECTORY_ROLES)})")
        _take_from_app(tenant, "_directoryRoles", lambda r: r == target)
        return f"the app's {target} role removed"
    if kind == "extension":
        found = [e for e in store.values("extensionProperties") if e["name"].endswith(f"_{target}")]
        if not found:
            raise ValueError(f"no directory extension named {target}")
        for e in found:
            store.remove("extensionProperties", e["id"])
        return f"directory extension {target} deleted"
    if kind == "access-pass-policy":
        policy = tenant.access_pass_policy()
        if target == "disabled":
            changed = {**policy, "state": "disabled"}
        else:
            group = next((g for g in store.values("groups") if g["displayName"] == target), None)
            if group is None:
                raise ValueError(f"access-pass-policy takes 'disabled' or a group name, not {target!r}")
            changed = {**policy, "includeTargets": [{"targetType": "group", "id": group["id"],
                                                     "isRegistrationRequired": False}]}
        store.put("authenticationMethodConfigurations", changed)
        return f"Temporary Access Pass policy: {'disabled' if target == 'disabled' else 'only ' + target}"
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
    if kind == "authenticator":
        if target != "disabled":
            raise ValueError(f"authenticator takes 'disabled', not {target!r}")
        store.put("authenticationMethodConfigurations",
                  {**tenant.method_configuration("MicrosoftAuthenticator"), "state": "disabled"})
        return "Microsoft Authenticator disabled in the authentication methods policy"
    if kind == "conditional-access":
        from .conditional_access import add_policy, policy

        add_policy(tenant, policy(target, controls=["compliantDevice"]))
        return f"Conditional Access policy {target!r}: a compliant device for all users, enabled"
    raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")


def _take_from_app(tenant: Tenant, field: str, drop: Callable[[Any], bool]) -> None:
    """Remove from the tool's app what ``drop`` picks (a granted permission, a role)."""
    for sp in list(tenant.store.values("servicePrincipals")):
        if field in sp:
            tenant.store.put("servicePrincipals", {**sp, field: [x for x in sp[field] if not drop(x)]})
