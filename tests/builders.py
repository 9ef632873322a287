"""Small builders for the pure tier: a playbook, a roster and a snapshot in memory, with
only what a test says differently from a plain default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioner.model import Plan
from provisioner.playbook import Playbook, schema
from provisioner.roster import Person, Roster
from provisioner.snapshot import DirectoryUser, Group, Sku, Snapshot

NAME = "t"
DOMAIN = "politiker.example.se"
OWNER = f"provisioner:{NAME}:"
ENTERPRISEPACK = "6fd2c87f-b296-42f0-b197-1e91e994b900"


def playbook(**fields: Any) -> Playbook:
    """A validated playbook: account, license and groups steps unless ``steps`` says else."""
    data: dict[str, Any] = {"name": NAME, "roster": "roster.csv", "domain": DOMAIN,
                            "license": {"sku": "ENTERPRISEPACK"},
                            "groups": ["Förtroendevalda", "Politiker {body}"],
                            "steps": ["account", "license", "groups"],
                            "dual_role": {"policy": "separate_account"}}
    data.update(fields)
    return schema().model_validate(data)


def person(pid: str, given: str = "Anna", surname: str = "Berg", **fields: Any) -> Person:
    fields.setdefault("body", "Regionfullmäktige")
    fields.setdefault("role", "ledamot")
    return Person(pid, given, surname, **fields)


def roster(*people: Person) -> Roster:
    return Roster(Path("roster.csv"), tuple(people), "roster-digest")


def user(uid: str, upn: str, *, owner: str | None = None, licences: dict[str, list[str]] | None = None,
         **attributes: Any) -> DirectoryUser:
    """A directory account; ``owner``: the person_id whose account this playbook made."""
    ext = {"extensionAttribute15": f"{OWNER}{owner}"} if owner else {}
    doc = {"id": uid, "userPrincipalName": upn, "mailNickname": upn.split("@")[0],
           "accountEnabled": True, "onPremisesExtensionAttributes": ext,
           "assignedLicenses": [{"skuId": k, "disabledPlans": v} for k, v in (licences or {}).items()],
           **attributes}
    return DirectoryUser.from_graph(doc, "extensionAttribute15")


def managed(pid: str, given: str = "Anna", surname: str = "Berg", **attributes: Any) -> DirectoryUser:
    """The account the example playbook made for ``pid``, in line with ``person(pid)``."""
    upn = f"{given}.{surname}@{DOMAIN}".lower()
    attrs = {"displayName": f"{given} {surname}", "givenName": given, "surname": surname,
             "usageLocation": "SE", "department": "Regionfullmäktige", "jobTitle": "ledamot"}
    attrs.update(attributes)
    return user(f"id-{pid}", upn, owner=pid, licences={ENTERPRISEPACK: []}, **attrs)


def sku(free: int = 100) -> Sku:
    return Sku(ENTERPRISEPACK, "ENTERPRISEPACK", free, 0, {"EXCHANGE_S_ENTERPRISE": "efb87545"})


def group(name: str, *members: str) -> Group:
    return Group(f"g-{name}", name, frozenset(members))


def snapshot(*users: DirectoryUser, groups: tuple[Group, ...] | None = None, **fields: Any) -> Snapshot:
    if groups is None:
        groups = (group("Förtroendevalda", *(u.id for u in users if u.owner_tag)),
                  group("Politiker Regionfullmäktige", *(u.id for u in users if u.owner_tag)))
    fields.setdefault("skus", {"ENTERPRISEPACK": sku()})
    found: dict[str, list[Group]] = {}
    for g in groups:
        found.setdefault(g.name, []).append(g)
    return Snapshot({u.id: u for u in users}, groups=found, **fields)


def actions(plan: Plan) -> list[tuple[str, str, str]]:
    """(step, action, person_id) of every change, in plan order."""
    return [(c.step, c.action.value, c.person_id) for c in plan.changes]
