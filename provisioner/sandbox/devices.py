"""Intune in the sandbox: managed devices, Entra device objects, categories, configuration
profiles and their group assignments, enrolment and check-ins.

Like Intune, ``managedDevices`` ignores a ``$filter`` it does not support and returns every
device (GRAPH-NOTES.md), so the tool must re-check what it gets.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterable
from typing import Any

from .odata_filter import FilterError, compile_filter
from .store import Doc
from .tenant import ApiError, Tenant, bad_request, not_found

MANAGED_DEVICE_FIELDS = (
    "id", "deviceName", "model", "manufacturer", "operatingSystem", "osVersion", "serialNumber",
    "userPrincipalName", "userId", "complianceState", "lastSyncDateTime",
    "deviceCategoryDisplayName", "azureADDeviceId", "enrolledDateTime", "managedDeviceOwnerType",
)
# What Intune's managedDevices filter understands; anything else is silently ignored.
MANAGED_DEVICE_FILTERABLE = {"userPrincipalName", "serialNumber", "operatingSystem", "deviceName"}
MODELS = {  # model as Intune reports it → (manufacturer, operating system, version)
    "iPhone 12": ("Apple", "iOS", "17.5.1"),
    "SM-G525F": ("samsung", "Android", "13"),
    "iPad mini (6th generation)": ("Apple", "iPadOS", "17.5.1"),
    "iPad (9th generation)": ("Apple", "iPadOS", "17.5.1"),
}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def view(tenant: Tenant, doc: Doc) -> Doc:
    out = {k: doc.get(k) for k in MANAGED_DEVICE_FIELDS}
    # A device asked to sync checks in a little later, unless it is offline.
    requested = doc.get("_syncRequestedAt")
    if requested and not doc.get("_offline"):
        due = _parse(requested) + dt.timedelta(seconds=tenant.scaled(
            float(tenant.config.get("checkin_delay", 2.0))))
        if dt.datetime.now(dt.UTC) >= due and due.isoformat() > _parse(out["lastSyncDateTime"]).isoformat():
            out["lastSyncDateTime"] = due.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    cat = tenant.store.all("deviceCategories").get(doc.get("_categoryId") or "")
    out["deviceCategoryDisplayName"] = cat["displayName"] if cat else "Unknown"
    apple = out.get("manufacturer") == "Apple"
    # The rest of what managedDevice-get documents, as an enrolled, supervised device has it.
    out |= {"managementAgent": "mdm", "managementState": "managed", "deviceRegistrationState": "registered",
            "deviceEnrollmentType": "appleBulkWithUser" if apple else "androidEnterpriseFullyManaged",
            "azureADRegistered": True, "isEncrypted": True, "isSupervised": apple, "jailBroken": "False",
            "emailAddress": out.get("userPrincipalName"), "easActivated": False,
            "complianceGracePeriodExpirationDateTime": "9999-12-31T23:59:59Z"}
    return out


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def set_offline(tenant: Tenant, serials: Iterable[str], offline: bool = True) -> int:
    """Devices that stop checking in (switched off, lost, no network)."""
    wanted, n = set(serials), 0
    for doc in list(tenant.store.values("managedDevices")):
        if doc["serialNumber"] in wanted:
            tenant.store.put("managedDevices", {**doc, "_offline": offline})
            n += 1
    return n


def list_managed(tenant: Tenant, query: dict[str, str]) -> list[Doc]:
    devices = [view(tenant, d) for d in tenant.store.values("managedDevices")]
    raw = query.get("$filter")
    if raw and "userPrincipalName eq ''" not in raw.replace('"', "'"):
        try:
            pred = compile_filter(raw, MANAGED_DEVICE_FILTERABLE, advanced=True,
                                  resource="managedDevice")
        except FilterError:
            return devices  # Intune: an unsupported filter is ignored, not refused
        devices = [d for d in devices if pred(d)]
    return devices


def find(tenant: Tenant, device_id: str) -> Doc:
    doc = tenant.store.all("managedDevices").get(device_id)
    if doc is None:
        raise ApiError(404, "ResourceNotFound", f"Resource not found: managedDevice {device_id}")
    return doc


def sync(tenant: Tenant, device_id: str) -> None:
    doc = find(tenant, device_id)
    tenant.store.count("syncDevice")
    tenant.store.put("managedDevices", {**doc, "_syncRequestedAt": now_iso()})


def set_category(tenant: Tenant, device_id: str, body: Any) -> None:
    doc = find(tenant, device_id)
    ref = body.get("@odata.id") if isinstance(body, dict) else None
    if not isinstance(ref, str):
        raise bad_request("Invalid request body: '@odata.id' is required.")
    cat_id = ref.rstrip("/").rsplit("/", 1)[-1]
    if cat_id not in tenant.store.all("deviceCategories"):
        raise not_found(cat_id)
    tenant.store.put("managedDevices", {**doc, "_categoryId": cat_id})


def clear_category(tenant: Tenant, device_id: str) -> None:
    doc = find(tenant, device_id)
    tenant.store.put("managedDevices", {k: v for k, v in doc.items() if k != "_categoryId"})


def assign(tenant: Tenant, config_id: str, body: Any) -> None:
    config = tenant.store.all("deviceConfigurations").get(config_id)
    if config is None:
        raise not_found(config_id)
    assignments = body.get("assignments") if isinstance(body, dict) else None
    if not isinstance(assignments, list):
        raise bad_request("Invalid request body: 'assignments' is required.")
    groups = []
    for a in assignments:
        gid = (a.get("target") or {}).get("groupId")
        if gid not in tenant.store.all("groups"):
            raise not_found(str(gid))
        groups.append(gid)
    tenant.store.put("deviceConfigurations", {**config, "_groups": groups})


def assignments(tenant: Tenant, config_id: str) -> list[Doc]:
    config = tenant.store.all("deviceConfigurations").get(config_id)
    if config is None:
        raise not_found(config_id)
    return [{"id": f"{config_id}_{gid}", "target": {
        "@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": gid}}
        for gid in config.get("_groups", [])]


def enroll(tenant: Tenant, upn: str, serial: str, model: str, rng: random.Random) -> Doc:
    """A device enrols for a user: a managed device and its Entra device object."""
    user = tenant.find_user(upn)
    manufacturer, os_name, version = MODELS.get(model, ("Unknown", "Unknown", ""))
    device_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    entra = {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "deviceId": device_id,
             "displayName": f"{user['givenName'] or 'device'}s {model}", "operatingSystem": os_name,
             "accountEnabled": True}
    managed = {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
               "deviceName": entra["displayName"], "model": model, "manufacturer": manufacturer,
               "operatingSystem": os_name, "osVersion": version, "serialNumber": serial,
               "userPrincipalName": user["userPrincipalName"], "userId": user["id"],
               "complianceState": "compliant", "lastSyncDateTime": now_iso(),
               "azureADDeviceId": device_id, "enrolledDateTime": now_iso(),
               "managedDeviceOwnerType": "company"}
    tenant.store.put("devices", entra)
    tenant.store.put("managedDevices", managed)
    return managed


def simulate_checkins(tenant: Tenant, serials: Iterable[str] | None, compliance_rate: float,
                      seed: int = 0) -> dict[str, int]:
    """Devices check in: pending enrolments enrol, every device syncs and reports compliance."""
    rng = random.Random(seed)
    wanted = set(serials) if serials is not None else None
    counts = {"enrolled": 0, "checked in": 0, "compliant": 0, "noncompliant": 0}
    for pending in list(tenant.store.values("pendingEnrolments")):
        if wanted is None or pending["serialNumber"] in wanted:
            try:
                enroll(tenant, pending["userPrincipalName"], pending["serialNumber"],
                       pending["model"], rng)
            except ApiError:
                continue  # the user does not exist (yet)
            tenant.store.remove("pendingEnrolments", pending["id"])
            counts["enrolled"] += 1
    for device in list(tenant.store.values("managedDevices")):
        if (wanted is not None and device["serialNumber"] not in wanted) or device.get("_offline"):
            continue
        state = "compliant" if rng.random() < compliance_rate else "noncompliant"
        tenant.store.put("managedDevices", {**device, "lastSyncDateTime": now_iso(),
                                            "complianceState": state})
        counts["checked in"] += 1
        counts[state] += 1
    return counts
