"""The directory as the planner sees it: read once, in bulk, as small frozen records.

Reading is the only thing here that talks to Graph; everything after it is pure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .errors import GraphError
from .graph.client import client_id
from .graph.gateway import Graph
from .heap import collector_off
from .model import Json

if TYPE_CHECKING:
    from .playbook import Playbook
    from .roster import Roster

USER_SELECT = (
    "id", "userPrincipalName", "mailNickname", "displayName", "givenName", "surname",
    "accountEnabled", "employeeId", "department", "jobTitle", "usageLocation", "mobilePhone",
    "otherMails", "assignedLicenses", "onPremisesExtensionAttributes", "onPremisesSyncEnabled",
)
MAILBOX_NOT_READY = "MailboxNotEnabledForRESTAPI"
ADOPTED = ":adopted"  # ownership tag suffix of an existing account taken over (use_existing)


class DirectoryUser(NamedTuple):
    """An account as read (a NamedTuple, not a frozen dataclass: a directory makes 50,000 of
    them, and a frozen dataclass takes three times as long to make)."""

    id: str
    upn: str
    mail_nickname: str
    attributes: Json  # the selected properties, as Graph returned them
    owner_tag: str | None

    @classmethod
    def from_graph(cls, doc: Json, ownership_attribute: str, adoption_property: str = "") -> DirectoryUser:
        ext = doc.get("onPremisesExtensionAttributes") or {}
        return cls(doc["id"], doc["userPrincipalName"], doc.get("mailNickname") or "",
                   doc, ext.get(ownership_attribute) or doc.get(adoption_property) or None)

    @property
    def synced(self) -> bool:
        """Synced from on-premises AD: its identity attributes are read-only through Graph."""
        return bool(self.attributes.get("onPremisesSyncEnabled"))

    @property
    def adopted(self) -> bool:
        """An existing account a dual-role decision gave to this playbook (not created by it)."""
        return bool(self.owner_tag and self.owner_tag.endswith(ADOPTED))

    @property
    def license_ids(self) -> dict[str, list[str]]:
        return {lic["skuId"]: list(lic.get("disabledPlans") or [])
                for lic in self.attributes.get("assignedLicenses") or []}


@dataclass(frozen=True, slots=True)
class Sku:
    sku_id: str
    part_number: str
    enabled: int
    consumed: int
    plans: dict[str, str]  # servicePlanName → servicePlanId

    @property
    def free(self) -> int:
        return self.enabled - self.consumed


# Product names admins know the licences by, as Microsoft's licensing reference lists them
# (https://learn.microsoft.com/entra/identity/users/licensing-service-plan-reference):
# subscribedSkus gives only the skuPartNumber.
SKU_NAMES = {
    "ENTERPRISEPACK": "Office 365 E3", "STANDARDPACK": "Office 365 E1",
    "ENTERPRISEPREMIUM": "Office 365 E5", "DESKLESSPACK": "Office 365 F3",
    "EXCHANGESTANDARD": "Exchange Online (Plan 1)", "EXCHANGEENTERPRISE": "Exchange Online (Plan 2)",
    "EXCHANGEDESKLESS": "Exchange Online Kiosk", "SPE_E3": "Microsoft 365 E3",
    "SPE_E5": "Microsoft 365 E5", "SPE_F1": "Microsoft 365 F3", "SPB": "Microsoft 365 Business Premium",
    "O365_BUSINESS_PREMIUM": "Microsoft 365 Business Standard", "AAD_PREMIUM": "Microsoft Entra ID P1",
}


def find_sku(skus: dict[str, Sku], name: str) -> Sku | None:
    """The tenant's subscription ``name`` names: its skuPartNumber in any case, or its product
    name ("Office 365 E3")."""
    wanted = name.strip().casefold()
    for part, sku in skus.items():
        if wanted in (part.casefold(), SKU_NAMES.get(part, "").casefold()):
            return sku
    return None


def sku_labels(skus: dict[str, Sku]) -> str:
    """The tenant's subscriptions, for an error: "EXCHANGESTANDARD (Exchange Online (Plan 1)), ..."."""
    return ", ".join(f"{p} ({SKU_NAMES[p]})" if p in SKU_NAMES else p for p in sorted(skus)) or "none"


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    name: str
    member_ids: frozenset[str]
    # Group-based licensing: skuId → disabled plans, given to every member.
    licenses: dict[str, list[str]] = field(default_factory=dict)
    # groups.create: apply makes the group (its id is a placeholder until then), or gives it
    # the licence it lacks (skuId → disabled plans as it has them now, None: not at all)
    planned: bool = False
    licence_before: dict[str, list[str] | None] = field(default_factory=dict)
    rule: str | None = None  # a dynamic group's membership rule (groups.dynamic)


@dataclass(frozen=True, slots=True)
class ManagedDevice:
    id: str
    model: str
    os: str
    serial: str
    upn: str
    azure_ad_device_id: str
    category: str
    compliance: str
    last_sync: str

    @classmethod
    def from_graph(cls, d: Json) -> ManagedDevice:
        return cls(d["id"], d.get("model") or "", d.get("operatingSystem") or "",
                   d.get("serialNumber") or "", (d.get("userPrincipalName") or "").lower(),
                   d.get("azureADDeviceId") or "", d.get("deviceCategoryDisplayName") or "",
                   d.get("complianceState") or "", d.get("lastSyncDateTime") or "")


MANAGED_DEVICE_SELECT = ("id", "model", "operatingSystem", "serialNumber", "userPrincipalName",
                         "azureADDeviceId", "deviceCategoryDisplayName", "complianceState",
                         "lastSyncDateTime")


@dataclass(frozen=True, slots=True)
class Intune:
    devices: tuple[ManagedDevice, ...] = ()
    object_ids: dict[str, str] = field(default_factory=dict)   # azureADDeviceId → device object id
    categories: dict[str, str] = field(default_factory=dict)   # displayName → id

    def for_person(self, upn: str, serial: str) -> list[ManagedDevice]:
        upn = upn.lower()
        return [d for d in self.devices if (upn and d.upn == upn)
                or (serial and d.serial.casefold() == serial.casefold())]


async def read_intune(graph: Graph) -> Intune:
    managed, objects, categories = await asyncio.gather(
        graph.list_managed_devices(MANAGED_DEVICE_SELECT), graph.list_devices(("id", "deviceId")),
        graph.device_categories())
    return Intune(tuple(ManagedDevice.from_graph(d) for d in managed),
                  {o["deviceId"]: o["id"] for o in objects if o.get("deviceId")},
                  {c["displayName"]: c["id"] for c in categories})


@dataclass(frozen=True, slots=True)
class ConditionalAccess:
    """The tenant's Conditional Access policies and named locations, read once for preflight's
    sign-in prediction and the guides; ``unreadable`` when Graph refused (403)."""

    policies: tuple[Json, ...] = ()
    locations: tuple[Json, ...] = ()
    unreadable: GraphError | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    users: dict[str, DirectoryUser]
    skus: dict[str, Sku] = field(default_factory=dict)           # by skuPartNumber
    groups: dict[str, list[Group]] = field(default_factory=dict)  # by displayName (may repeat)
    mailboxes: dict[str, Json | None] = field(default_factory=dict)  # user id → settings, None = not yet
    intune: Intune = field(default_factory=Intune)
    guides: dict[str, str] = field(default_factory=dict)  # person_id → when their guide went out
    leaving_since: dict[str, str] = field(default_factory=dict)  # person_id → first leaver stage
    playbook_groups: frozenset[str] = frozenset()  # the user groups this playbook manages
    adoption_registered: bool = True  # the directory extension for adoption marks exists
    uncertain: frozenset[str] = frozenset()  # people with an e-mail or pass of unknown fate
    extra: dict[str, Any] = field(default_factory=dict)  # step name → what a plug-in step read
    conditional_access: ConditionalAccess | None = None

    def managed(self, tag_prefix: str) -> dict[str, DirectoryUser]:
        """person_id → the account this playbook made (or adopted) for them."""
        return {u.owner_tag[len(tag_prefix):].removesuffix(ADOPTED): u for u in self.users.values()
                if u.owner_tag and u.owner_tag.startswith(tag_prefix)}

    def names_taken(self) -> tuple[set[str], set[str]]:
        return ({u.upn.lower() for u in self.users.values()},
                {u.mail_nickname.lower() for u in self.users.values() if u.mail_nickname})


def signin_gate(playbook: Playbook) -> bool:
    return any(c.gates.signin for c in playbook.cohorts)


def owner_prefix(playbook: Playbook) -> str:
    return f"provisioner:{playbook.name}:"


def adoption_property(playbook: Playbook) -> str:
    """The directory extension holding the mark of an adopted account:
    extension_{the app's appId without dashes}_{name} (graph/extensibility-overview)."""
    app_id = client_id(playbook.tenant)
    return f"extension_{app_id.replace('-', '').lower()}_{playbook.account.adoption_extension}"


def mark(user: DirectoryUser | None, playbook: Playbook, value: str | None,
         adopted: bool) -> tuple[Json, Json]:
    """(before, after) of setting the ownership mark: an adopted account's in the directory
    extension, an account the tool made in its onPremisesExtensionAttributes slot."""
    if adopted:
        prop = adoption_property(playbook)
        return {prop: user.attributes.get(prop) if user else None}, {prop: value}
    attr = playbook.account.ownership_attribute
    have = (user.attributes.get("onPremisesExtensionAttributes") or {}) if user else {}
    return ({"onPremisesExtensionAttributes": {attr: have.get(attr)}},
            {"onPremisesExtensionAttributes": {attr: value}})


class Reader(Protocol):
    """A step, as far as the snapshot is concerned: what it adds to it."""

    async def read(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> dict[str, Any]: ...


async def read_snapshot(graph: Graph, playbook: Playbook, roster: Roster, group_names: set[str],
                        readers: Sequence[Reader] = ()) -> Snapshot:
    """The directory (users, the named groups) read at once, then what each step reads; the
    cycle collector stays out meanwhile (`heap`)."""
    with collector_off():
        return await _read_snapshot(graph, playbook, roster, group_names, readers)


async def _read_snapshot(graph: Graph, playbook: Playbook, roster: Roster, group_names: set[str],
                         readers: Sequence[Reader]) -> Snapshot:
    attr = playbook.account.ownership_attribute
    adoption = adoption_property(playbook)

    async def users_and_registered() -> tuple[dict[str, DirectoryUser], bool]:
        # Selecting an extension the tenant has not registered is an error: read it only if it is.
        registered = adoption in await graph.extension_properties(client_id(playbook.tenant))
        select = (*USER_SELECT, adoption) if registered else USER_SELECT
        return await read_users(graph, select, attr, adoption), registered

    # Independent reads go together: against Graph each is a round trip of its own.
    (users, registered), skus, groups_doc, access = await asyncio.gather(
        users_and_registered(),
        read_skus(graph) if signin_gate(playbook) else _none(),
        graph.list_groups(("id", "displayName", "assignedLicenses", "membershipRule"))
        if group_names else _none(),
        read_conditional_access(graph),
    )
    wanted = [g for g in groups_doc or [] if g["displayName"] in group_names]
    members = await asyncio.gather(*(graph.group_member_ids(g["id"]) for g in wanted))
    groups: dict[str, list[Group]] = {}
    for g, ids in zip(wanted, members, strict=True):
        licenses = {lic["skuId"]: sorted(lic.get("disabledPlans") or [])
                    for lic in g.get("assignedLicenses") or []}
        groups.setdefault(g["displayName"], []).append(
            Group(g["id"], g["displayName"], frozenset(ids), licenses, rule=g.get("membershipRule") or None))
    snapshot = Snapshot(users, skus or {}, groups, adoption_registered=registered,
                        conditional_access=access)
    # Each step reads from the directory and the groups, not from another step's read: the
    # steps' reads go together.
    for fields in await asyncio.gather(*(reader.read(graph, playbook, snapshot) for reader in readers)):
        snapshot = replace(snapshot, **fields)
    return snapshot


async def read_users(graph: Graph, select: Sequence[str], ownership_attribute: str,
                     adoption: str = "") -> dict[str, DirectoryUser]:
    """The directory's users by id, each page made into DirectoryUsers while Graph makes the
    next."""
    users: dict[str, DirectoryUser] = {}
    async for page in graph.user_pages(select):
        for doc in page:
            users[doc["id"]] = DirectoryUser.from_graph(doc, ownership_attribute, adoption)
    return users


async def read_conditional_access(graph: Graph) -> ConditionalAccess:
    try:
        policies, locations = await asyncio.gather(graph.conditional_access_policies(),
                                                   graph.named_locations())
        return ConditionalAccess(tuple(policies), tuple(locations))
    except GraphError as exc:
        if exc.status != 403:
            raise
        return ConditionalAccess(unreadable=exc)


async def read_skus(graph: Graph) -> dict[str, Sku]:
    """The tenant's subscriptions by skuPartNumber."""
    return {s["skuPartNumber"]: Sku(
        s["skuId"], s["skuPartNumber"], int(s["prepaidUnits"]["enabled"]),
        int(s["consumedUnits"]), {p["servicePlanName"]: p["servicePlanId"] for p in s["servicePlans"]},
    ) for s in await graph.subscribed_skus()}


async def read_mailboxes(graph: Graph, user_ids: list[str]) -> dict[str, Json | None]:
    results = await graph.batch([graph.mailbox_settings_request(uid) for uid in user_ids])
    out: dict[str, Json | None] = {}
    for uid, res in zip(user_ids, results, strict=True):
        if res.status == 200:
            out[uid] = res.body
        elif res.status == 404 and (res.body or {}).get("error", {}).get("code") == MAILBOX_NOT_READY:
            out[uid] = None
        else:
            error = (res.body or {}).get("error", {})
            raise GraphError(res.status, error.get("code", "unknown"), error.get("message", ""),
                             method="GET", path=f"/users/{uid}/mailboxSettings")
    return out


async def _none() -> Any:
    return None
