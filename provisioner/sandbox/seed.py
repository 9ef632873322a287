"""``sandbox reset``: a fictional Swedish region, the same for the same seed."""

from __future__ import annotations

import base64
import random
import uuid
from typing import Any

from . import authz, devices
from .people import address_part as name_token
from .people import hr_hash as personal_number_hash
from .region import BODIES, PILOT_DEVICES, employees, pilot_staff
from .store import Doc, Store
from .tenant import Tenant

DOMAIN = "example-region.se"
# The sandbox's HR sync writes personnummer as HMACs with this key: set PROVISIONER_PNR_KEY to
# it to match on personnummer in demos. A real region's key is its own secret.
SANDBOX_PNR_KEY = "sandbox-personnummer-key"
OFFICIALS_DOMAIN = f"politiker.{DOMAIN}"

DEFAULT_CONFIG: dict[str, Any] = {
    "time_scale": 1.0,     # every delay and quota window is multiplied by this
    "latency_ms": 0,       # added to every HTTP request
    "fault_rate": 0.0,     # share of requests answered 503
    "lost_reply_rate": 0.0,  # share of writes made but answered 504 (the client cannot know)
    "mailbox_delay": 5.0,  # seconds between an Exchange licence and a usable mailbox
    "dynamic_delay": 3.0,  # seconds before Entra has evaluated a changed user against dynamic groups
    "ru_limit": 0,         # resource units per 10 s; 0 = Graph's default for the tenant size
    "write_limit": 0,      # writes per 150 s; 0 = Graph's 3,000
    "quota_primed": False,  # the write window starts full, as after writing at the ceiling
    "new_accounts_disabled": False,  # fault: every created user comes out disabled
    "checkin_delay": 2.0,  # seconds from a syncDevice request to the device's check-in
    "cloud_only": False,   # employees are cloud accounts, not synced from on-premises AD
    "replication_delay": 0.0,  # seconds a new user stays unknown to other requests
    "seats_taken_after": 0,  # fault: after this many licence assignments, no seat is left
    # fault: after this many writes, someone enables the Conditional Access policy named here
    # that requires a compliant device of all users ("N:NAME", empty: never)
    "conditional_access_after": "",
}
# The directory extension the region registered on the tool's app, as the README says to:
# where the tool marks an adopted (often AD-synced) employee account as taken over.
ADOPTION_EXTENSION = "provisionerOwner"

SKUS = (
    # skuPartNumber, display, seats beyond employees, service plans
    ("ENTERPRISEPACK", "Office 365 E3", 400, ("EXCHANGE_S_ENTERPRISE", "TEAMS1", "SHAREPOINTSTANDARD")),
    ("EXCHANGESTANDARD", "Exchange Online (Plan 1)", 50, ("EXCHANGE_S_STANDARD",)),
    ("SPE_F1", "Microsoft 365 F3", 100, ("EXCHANGE_S_DESKLESS", "TEAMS1")),
    ("STANDARDPACK", "Office 365 E1", 100, ("EXCHANGE_S_STANDARD", "TEAMS1", "SHAREPOINTSTANDARD")),
    ("SPE_E3", "Microsoft 365 E3", 50, ("EXCHANGE_S_ENTERPRISE", "TEAMS1", "SHAREPOINTENTERPRISE",
                                        "INTUNE_A", "AAD_PREMIUM")),
)


def _domain(name: str, *, default: bool = False, initial: bool = False, root: bool = True) -> Doc:
    """A verified domain with the properties domain-list documents."""
    return {"id": name, "authenticationType": "Managed", "availabilityStatus": None,
            "isAdminManaged": not initial, "isDefault": default, "isInitial": initial,
            "isRoot": root, "isVerified": True, "passwordNotificationWindowInDays": 14,
            "passwordValidityPeriodInDays": 2147483647, "state": None,
            "supportedServices": ["Email", "OfficeCommunicationsOnline"] if not initial
            else ["Email", "OfficeCommunicationsOnline", "Intune"]}


def _fixed(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, name))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def seed_region(store: Store, *, employees_count: int, seed: int, config: dict[str, Any]) -> None:
    rng = random.Random(seed)
    store.clear()
    store.set_config({**DEFAULT_CONFIG, **config, "seed": seed})
    org_id = _uuid(rng)
    store.bulk_load("organization", [{"id": org_id, "displayName": "Region Exempel",
                                      "countryLetterCode": "SE"}])
    store.bulk_load("domains", [
        _domain(DOMAIN, default=True), _domain(OFFICIALS_DOMAIN, root=False),
        _domain("exampleregion.onmicrosoft.com", initial=True),
    ])
    skus = []
    for i, (part, _display, extra, plans) in enumerate(SKUS):
        # Service plan ids are the same in every SKU and tenant, as Microsoft's are; the SKUs
        # added later take theirs from the name so the rest of the region stays as it was.
        sku_id = _uuid(rng) if i < 3 else _fixed(f"sku:{part}")
        skus.append({
            "id": f"{org_id}_{sku_id}", "skuId": sku_id, "skuPartNumber": part,
            "capabilityStatus": "Enabled", "appliesTo": "User", "accountId": org_id,
            "accountName": "Region Exempel", "subscriptionIds": [str(uuid.uuid5(uuid.NAMESPACE_OID, part))],
            "prepaidUnits": {"enabled": (employees_count if part == "ENTERPRISEPACK" else 0) + extra,
                             "suspended": 0, "warning": 0, "lockedOut": 0},
            "servicePlans": [{"servicePlanId": _uuid(rng) if i < 3 else _fixed(p),
                              "servicePlanName": p, "provisioningStatus": "Success", "appliesTo": "User"}
                             for p in plans],
        })
    # Microsoft 365 F3 includes Microsoft Entra ID P1 (sign-in logs, Conditional Access).
    f3 = next(s for s in skus if s["skuPartNumber"] == "SPE_F1")
    f3["servicePlans"].append({"servicePlanId": str(uuid.uuid5(uuid.NAMESPACE_OID, "AAD_PREMIUM")),
                               "servicePlanName": "AAD_PREMIUM", "provisioningStatus": "Success",
                               "appliesTo": "User"})
    store.bulk_load("skus", skus)
    e3 = skus[0]["skuId"]
    users = _employees(rng, employees_count, seed, e3, synced=not store.config["cloud_only"])
    store.bulk_load("users", [*users, _service_mailbox(rng, e3)])
    everyone = [u["id"] for u in users]
    groups = [_group(rng, "Alla anställda", everyone), _group(rng, "Förtroendevalda", [])]
    groups += [_group(rng, f"Politiker {body}", []) for body in BODIES]
    groups.append(_group(rng, "Tjänstemobil pilot", []))
    # Group-based licensing: members of this group get Office 365 E3 (and so a mailbox).
    licensed = _group(rng, "Licens E3 förtroendevalda", [])
    groups.append({**licensed, "assignedLicenses": [{"skuId": e3, "disabledPlans": []}]})
    device_groups = [_group(rng, f"Intune - {name}", []) for name, _ in PILOT_DEVICES]
    store.bulk_load("groups", groups + device_groups)
    _intune(store, rng, users, device_groups)
    _conditional_access(store, rng, staff=groups[0]["id"])


def _conditional_access(store: Store, rng: random.Random, *, staff: str) -> None:
    """A region's usual baseline: MFA for everyone, legacy authentication blocked, a compliant
    device for staff on their work phones, and sign-ins from abroad watched in report-only."""
    from .conditional_access import policy

    sweden = {"@odata.type": "#microsoft.graph.countryNamedLocation", "id": _uuid(rng),
              "displayName": "Sverige", "countriesAndRegions": ["SE"],
              "includeUnknownCountriesAndRegions": False, "countryLookupMethod": "clientIpAddress",
              "createdDateTime": "2024-01-15T08:00:00Z", "modifiedDateTime": None}
    store.bulk_load("namedLocations", [sweden])
    baseline = [
        policy("CA001 Kräv MFA för alla användare", controls=["mfa"]),
        policy("CA002 Blockera äldre autentisering", client_app_types=["exchangeActiveSync", "other"],
               controls=["block"]),
        policy("CA003 Kompatibel enhet för anställda på mobilen",
               users={"includeUsers": [], "includeGroups": [staff]}, apps=["Office365"],
               client_app_types=["mobileAppsAndDesktopClients"],
               platforms={"includePlatforms": ["iOS", "android"], "excludePlatforms": []},
               controls=["compliantDevice"]),
        policy("CA004 Blockera inloggning utanför Sverige (rapport)",
               state="enabledForReportingButNotEnforced", controls=["block"],
               locations={"includeLocations": ["All"], "excludeLocations": [sweden["id"]]}),
    ]
    for n, doc in enumerate(baseline):
        # the same ids for the same seed, and in the order they were made
        doc.update(id=_uuid(rng), createdDateTime=f"2024-02-0{n + 1}T08:00:00Z")
    store.bulk_load("conditionalAccessPolicies", baseline)


def _employees(rng: random.Random, count: int, seed: int, e3: str, *, synced: bool) -> list[Doc]:
    """Employees as Entra Connect syncs them from the region's AD (or cloud-only accounts)."""
    taken: set[str] = set()
    docs = []
    for e in employees(count, seed):
        pnr = e.personal_number
        base = f"{name_token(e.given)}.{name_token(e.surname)}"
        local, n = base, 1
        while local in taken:
            n += 1
            local = f"{base}{n}"
        taken.add(local)
        docs.append({
            "id": _uuid(rng), "createdDateTime": "2020-01-01T08:00:00Z",
            "userPrincipalName": f"{local}@{DOMAIN}", "mailNickname": local,
            "displayName": f"{e.given} {e.surname}", "givenName": e.given, "surname": e.surname,
            "accountEnabled": e.enabled, "employeeId": e.employee_id, "employeeType": "Employee",
            "department": e.department, "jobTitle": e.job_title, "mobilePhone": e.mobile,
            "usageLocation": "SE", "otherMails": list(e.other_mails), "businessPhones": [],
            "companyName": "Region Exempel",
            "onPremisesExtensionAttributes": {
                **{f"extensionAttribute{i}": None for i in range(1, 16)},
                "extensionAttribute1": personal_number_hash(e.personal_number, SANDBOX_PNR_KEY.encode()),
                "extensionAttribute2": f"{pnr[:4]}-{pnr[4:6]}-{pnr[6:8]}"},
            "assignedLicenses": [{"skuId": e3, "disabledPlans": []}],
            "passwordProfile": {"forceChangePasswordNextSignIn": False},
            "_mailboxRequestedAt": 0,
            "_methods": ["microsoftAuthenticator"],  # staff registered Authenticator long ago
            **(_synced(e.employee_id) if synced else {"onPremisesSyncEnabled": None}),
        })
    return docs


def _synced(employee_id: str) -> Doc:
    """The on-premises properties Entra Connect writes (read-only through Graph)."""
    guid = uuid.uuid5(uuid.NAMESPACE_OID, f"ad:{employee_id}")  # the AD objectGUID it anchors on
    return {"onPremisesSyncEnabled": True,
            "onPremisesImmutableId": base64.b64encode(guid.bytes_le).decode(),
            "onPremisesSamAccountName": employee_id.lower(), "onPremisesDomainName": "ad.example-region.se",
            "onPremisesLastSyncDateTime": "2026-11-30T23:40:00Z"}


def _service_mailbox(rng: random.Random, e3: str) -> Doc:
    """The mailbox guides are sent from (guide.sender)."""
    return {"id": _uuid(rng), "createdDateTime": "2020-01-01T08:00:00Z",
            "userPrincipalName": f"lathundar@{DOMAIN}", "mailNickname": "lathundar",
            "displayName": "Lathundar, Region Exempel", "givenName": None, "surname": None,
            "accountEnabled": True, "employeeId": None, "employeeType": "Service",
            "usageLocation": "SE", "otherMails": [], "businessPhones": [],
            "onPremisesExtensionAttributes": {f"extensionAttribute{i}": None for i in range(1, 16)},
            "assignedLicenses": [{"skuId": e3, "disabledPlans": []}],
            "passwordProfile": {"forceChangePasswordNextSignIn": False}, "_mailboxRequestedAt": 0}


def _group(rng: random.Random, name: str, members: list[str]) -> Doc:
    return {"id": _uuid(rng), "displayName": name, "description": name,
            "mailNickname": name_token(name.replace(" ", "-"))[:64] or "group",
            "mailEnabled": False, "securityEnabled": True, "groupTypes": [], "assignedLicenses": [],
            "_members": members}


def _intune(store: Store, rng: random.Random, users: list[Doc], device_groups: list[Doc]) -> None:
    """Device categories, configuration profiles on the device groups, the pilot's devices
    (most enrolled, some waiting to enrol) and a tenth of the other employees' devices."""
    store.bulk_load("deviceCategories", [
        {"id": _uuid(rng), "displayName": name, "description": name}
        for name in ("Tjänstemobil", "Surfplatta")])
    group_ids = [g["id"] for g in device_groups]
    store.bulk_load("deviceConfigurations", [
        {"id": _uuid(rng), "displayName": name, "description": name, "version": 1,
         "_groups": group_ids}
        for name in ("E-post (Exchange ActiveSync)", "Wi-Fi Region Exempel", "Begränsningar")])
    _service_principals(store, rng)
    tenant = Tenant(store)
    by_employee = {u["employeeId"]: u for u in users}
    pending = []
    for staff in pilot_staff():
        user = by_employee.get(staff.employee_id)
        if user is None:
            continue
        if staff.enrolled:
            devices.enroll(tenant, user["userPrincipalName"], staff.serial, staff.intune_model, rng)
        else:
            pending.append({"id": staff.serial, "serialNumber": staff.serial,
                            "model": staff.intune_model, "userPrincipalName": user["userPrincipalName"]})
    store.bulk_load("pendingEnrolments", pending)
    models = [intune for _, intune in PILOT_DEVICES]
    for i, user in enumerate(users):
        if user["employeeId"].startswith("E2") and i % 10 == 0:
            devices.enroll(tenant, user["userPrincipalName"], f"C{i:08d}", models[i % len(models)], rng)


def _service_principals(store: Store, rng: random.Random) -> None:
    """Microsoft Graph's service principal with its application permissions, and this tool's
    app with what a region grants it (`sandbox break permission|role NAME` takes one away)."""
    graph_sp = {"id": _uuid(rng), "appId": authz.GRAPH_APP_ID, "displayName": "Microsoft Graph",
                "appRoles": [{"id": authz.role_id(name), "value": name,
                              "allowedMemberTypes": ["Application"], "isEnabled": True}
                             for name in authz.KNOWN]}
    app_sp = {"id": _uuid(rng), "appId": authz.SANDBOX_APP_ID, "displayName": "provisioner (sandbox)",
              "_granted": [[graph_sp["id"], authz.role_id(n)] for n in authz.GRANTED_BY_DEFAULT],
              "_directoryRoles": list(authz.ROLES_BY_DEFAULT)}
    store.bulk_load("servicePrincipals", [graph_sp, app_sp])
    store.bulk_load("extensionProperties", [{
        "id": _uuid(rng), "_appId": authz.SANDBOX_APP_ID, "dataType": "String", "isMultiValued": False,
        "isSyncedFromOnPremises": False, "targetObjects": ["User"], "appDisplayName": app_sp["displayName"],
        "name": f"extension_{authz.SANDBOX_APP_ID.replace('-', '')}_{ADOPTION_EXTENSION}"}])
