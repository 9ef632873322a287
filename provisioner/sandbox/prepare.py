"""What an admin does in the portal before a rollout, done to the sandbox so a new user can
rehearse with their own names: a verified domain (Entra admin center, Custom domain names), a
security group, optionally licensed (Groups, Licenses), an application permission granted with
admin consent (App registrations, API permissions)."""

from __future__ import annotations

import re

from . import authz
from .seed import _domain, _group
from .tenant import Tenant

# A domain name as Entra takes one: labels of letters, digits and hyphens, a dot between.
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def add_domain(tenant: Tenant, name: str) -> str:
    """A verified custom domain (domain-post-domains, then verify): a subdomain of a domain the
    tenant has is a child (isRoot false), as Entra shows it."""
    name = name.strip().lower()
    if not _DOMAIN.match(name):
        raise ValueError(f"{name!r} is not a domain name (like politiker.solbacka.se)")
    domains = tenant.store.all("domains")
    if name in domains:
        return f"{name} is already a verified domain"
    root = not any(name.endswith("." + d) for d in domains)
    tenant.store.put("domains", _domain(name, root=root))
    return f"{name} added and verified"


def add_group(tenant: Tenant, name: str, sku: str | None = None) -> str:
    """A security group; with ``sku`` (a skuPartNumber the tenant has) it assigns that licence
    to its members (group-based licensing)."""
    import random

    name = name.strip()
    if not name or len(name) > 256:
        raise ValueError("a group's name is 1 to 256 characters")
    if any(g["displayName"] == name for g in tenant.store.values("groups")):
        raise ValueError(f"a group named {name!r} exists already")
    group = _group(random.Random(name), name, [])
    if sku is not None:
        found = [s for s in tenant.skus() if s["skuPartNumber"].casefold() == sku.casefold()]
        if not found:
            known = ", ".join(s["skuPartNumber"] for s in tenant.skus())
            raise ValueError(f"the sandbox sells no {sku} (it sells {known})")
        group["assignedLicenses"] = [{"skuId": found[0]["skuId"], "disabledPlans": []}]
    tenant.store.put("groups", group)
    return f"security group {name!r} added" + (f", assigning {found[0]['skuPartNumber']}" if sku else "")


def grant(tenant: Tenant, permission: str) -> str:
    """An application permission granted to the tool's app with admin consent."""
    if permission not in authz.KNOWN:
        raise ValueError(f"unknown permission {permission} (known: {', '.join(authz.KNOWN)})")
    graph = next(sp for sp in tenant.store.values("servicePrincipals") if sp["appId"] == authz.GRAPH_APP_ID)
    for sp in list(tenant.store.values("servicePrincipals")):
        if "_granted" in sp:
            held = [g for g in sp["_granted"] if g[1] != authz.role_id(permission)]
            tenant.store.put("servicePrincipals",
                             {**sp, "_granted": [*held, [graph["id"], authz.role_id(permission)]]})
    return f"{permission} granted to the tool's app (admin consent)"
