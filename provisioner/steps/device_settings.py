"""``device_settings``: a person's device joins the device groups of its model's profile (the
groups Intune's mail, Wi-Fi and restriction profiles are assigned to), gets its device
category, and is asked to sync.

Devices are found by the person's UPN or, before the account owns them, by the roster's
device_serial. A device not enrolled yet is not an error: the person is reported as awaiting
enrolment and a later apply picks the device up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field

from ..cohorts import is_canary
from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..roster import Person
from ..schema import Strict
from ..snapshot import ManagedDevice, Snapshot, read_intune
from .base import (
    ALREADY_MEMBER,
    BaseStep,
    PersonRun,
    PersonView,
    PlanContext,
    StepPlan,
    VerifyFacts,
    memberships,
    shape,
)

if TYPE_CHECKING:
    from ..playbook import Playbook


class DeviceProfile(Strict):
    """Intune settings for one device model: the device groups its configuration profiles
    (mail, Wi-Fi, restrictions) are assigned to, a device category, and whether to sync."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    model: str = Field(description="the model as the roster's device_model names it")
    intune_models: tuple[str, ...] = Field((), description="the model as Intune reports it")
    os: str | None = None
    groups: tuple[str, ...] = Field(min_length=1)
    category: str | None = None
    sync: bool = True

    def reports(self, model: str, os: str | None) -> bool:
        models = {m.casefold() for m in (self.intune_models or (self.model,))}
        return model.casefold() in models and (self.os is None or (os or "").casefold() == self.os.casefold())


class Devices(Strict):
    profiles: tuple[DeviceProfile, ...] = Field(min_length=1)

    def for_model(self, roster_model: str) -> DeviceProfile | None:
        return next((p for p in self.profiles if p.model.casefold() == roster_model.casefold()), None)


def profile_for(ctx: PlanContext, view: PersonView) -> DeviceProfile | None:
    devices = ctx.playbook.section("devices")
    if view.person.device_model:
        return devices.for_model(view.person.device_model)
    for device in ctx.snapshot.intune.for_person(_upn(view), view.person.device_serial):
        found = next((p for p in devices.profiles if p.reports(device.model, device.os)), None)
        if found:
            return found
    return None


def device_for(ctx: PlanContext, view: PersonView, profile: DeviceProfile) -> ManagedDevice | None:
    candidates = ctx.snapshot.intune.for_person(_upn(view), view.person.device_serial)
    if view.person.device_serial:  # the roster names the very device
        return next((d for d in candidates
                     if d.serial.casefold() == view.person.device_serial.casefold()), None)
    return next((d for d in candidates if profile.reports(d.model, d.os)), None)


def _upn(view: PersonView) -> str:
    return view.user.upn if view.user is not None else ""


class DeviceSettingsStep(BaseStep):
    name: ClassVar[str] = "device_settings"
    manages_devices: ClassVar[bool] = True
    section: ClassVar[str | None] = "devices"
    schema: ClassVar[type[Strict] | None] = Devices
    goes_with_user: ClassVar[bool] = False  # memberships of the device, not of the account
    undo_rank: ClassVar[int] = 40
    verify_checks: ClassVar[tuple[str, ...]] = ("device",)

    def groups(self, playbook: Playbook, person: Person | None) -> list[str]:
        """The device groups of the person's model; with None, every profile's (a device that
        changed model leaves the old ones)."""
        devices = playbook.section("devices")
        if person is None:
            return [g for p in devices.profiles for g in p.groups]
        profile = next((x for x in devices.profiles if x.model.casefold() == person.device_model.casefold()),
                       None)
        return list(profile.groups) if profile else []

    async def read(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> dict[str, Any]:
        return {"intune": await read_intune(graph)}

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        profile = profile_for(ctx, view)
        if profile is None:
            if view.person.device_model:
                return StepPlan(notes=[f"no device profile for the model {view.person.device_model!r}"])
            return StepPlan()
        device = device_for(ctx, view, profile)
        pid = view.person.person_id
        if device is None:
            serial = f", serial {view.person.device_serial}" if view.person.device_serial else ""
            return StepPlan(awaiting=f"{profile.model}{serial}: awaiting enrolment")
        object_id = ctx.snapshot.intune.object_ids.get(device.azure_ad_device_id)
        if object_id is None:
            return StepPlan(awaiting=f"{profile.model}, serial {device.serial}: not registered in Entra yet")
        changes = []
        others = {g for p in ctx.playbook.section("devices").profiles for g in p.groups} - set(profile.groups)
        for name in sorted(others):  # a new device model: out of the old profile's groups
            for group in ctx.snapshot.groups.get(name, []):
                if object_id in group.member_ids:
                    before = {"group": name, "groupId": group.id, "deviceObjectId": object_id,
                              "managedDeviceId": device.id, "serial": device.serial,
                              "sync": profile.sync}
                    changes.append(Change(self.name, pid, Action.DELETE,
                                          f"device-group:{name}:{device.serial}", before, None))
        for name in profile.groups:
            group = ctx.snapshot.groups[name][0]
            if object_id in group.member_ids:
                continue
            changes.append(Change(self.name, pid, Action.CREATE, f"device-group:{name}:{device.serial}",
                                  None, {"group": name, "groupId": group.id, "deviceObjectId": object_id,
                                         "managedDeviceId": device.id, "serial": device.serial,
                                         "sync": profile.sync}))
        if profile.category and device.category != profile.category:
            before = {"category": device.category or None,
                      "categoryId": ctx.snapshot.intune.categories.get(device.category)}
            changes.append(Change(self.name, pid, Action.UPDATE, f"device-category:{device.serial}",
                                  {**before, "managedDeviceId": device.id, "sync": profile.sync},
                                  {"category": profile.category,
                                   "categoryId": ctx.snapshot.intune.categories[profile.category],
                                   "managedDeviceId": device.id, "sync": profile.sync}))
        return StepPlan(changes)

    def operations(self, playbook: Playbook) -> dict[str, str]:
        return {"list_managed_devices": "find each person's device",
                "device_categories": "read device categories",
                "set_device_category": "set a device's category",
                "sync_device": "ask a changed device to sync",
                "list_devices": "find the Entra device object of a managed device",
                "add_device_member": "put devices in their profile's device groups",
                **memberships("put devices in their profile's device groups")}

    async def verify(self, graph: Graph, facts: VerifyFacts, checks: Sequence[str]) -> dict[str, list[str]]:
        """Each person's device: in its profile's groups, checked in since the change, compliant."""
        if "device" not in checks:
            return {}
        devices_spec = facts.playbook.section("devices")
        intune = await read_intune(graph)
        groups = {g["displayName"]: g["id"] for g in await graph.list_groups(("id", "displayName"))}
        members: dict[str, set[str]] = {}
        changed = facts.last_applied.get(self.name, {})
        out: dict[str, list[str]] = {}
        for p in facts.people:
            if is_canary(p.person_id) or p.person_id not in facts.users:
                continue  # synthetic accounts have no device; a missing account is reported already
            profile = devices_spec.for_model(p.device_model) if p.device_model else None
            candidates = intune.for_person(facts.upns[p.person_id], p.device_serial)
            device = next((d for d in candidates if (p.device_serial and d.serial == p.device_serial)
                           or (profile and profile.reports(d.model, d.os))), None)
            if profile is None and device is not None:
                profile = next((x for x in devices_spec.profiles if x.reports(device.model, device.os)), None)
            if profile is None:
                continue  # no device for this person in the playbook
            if device is None:
                out[p.person_id] = [f"device: {profile.model} not enrolled yet"]
                continue
            problems = []
            object_id = intune.object_ids.get(device.azure_ad_device_id, "")
            for name in profile.groups:
                if name not in members:
                    gid = groups.get(name)
                    members[name] = set(await graph.group_member_ids(gid)) if gid else set()
                if object_id not in members[name]:
                    problems.append(f"device: {device.serial} is not in {name}")
            since = changed.get(p.person_id)  # the device must check in after its own last change
            if since and device.last_sync < _odata_ms(since):
                problems.append(f"device: {device.serial} has not checked in since the change"
                                f" (last {device.last_sync[:16] or 'never'})")
            if device.compliance != "compliant":
                problems.append(f"device: {device.serial} is {device.compliance or 'not evaluated'}")
            if problems:
                out[p.person_id] = problems
        return out

    def undo(self, change: Change, before_image: Json | None) -> Change | None:
        if change.action is Action.CREATE:
            return Change(self.name, change.person_id, Action.DELETE, change.target, change.after, None)
        return Change(self.name, change.person_id, Action.UPDATE, change.target, change.after,
                      before_image or change.before)

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None:
        wanted = shape(change)
        assert wanted is not None
        if change.target.startswith("device-group:"):
            members = await graph.group_member_ids(wanted["groupId"])
            return wanted if wanted["deviceObjectId"] in members else None
        device = await graph.get_managed_device(wanted["managedDeviceId"])
        if device is None:
            return None
        name = device.get("deviceCategoryDisplayName")
        name = None if name in (None, "", "Unknown") else name
        categories = {c["displayName"]: c["id"] for c in await graph.device_categories()}
        return {**wanted, "category": name, "categoryId": categories.get(name or "")}

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        data = change.after if change.action is not Action.DELETE else change.before
        assert data is not None
        outcome = Outcome.APPLIED
        try:
            if change.action is Action.CREATE:
                await graph.add_member(data["groupId"], data["deviceObjectId"])
            elif change.action is Action.DELETE:
                await graph.remove_member(data["groupId"], data["deviceObjectId"])
            else:
                await graph.set_device_category(data["managedDeviceId"], data.get("categoryId"))
        except GraphError as exc:
            done_already = (exc.status == 400 and ALREADY_MEMBER in exc.message) or (
                change.action is Action.DELETE and exc.status == 404)
            if done_already:
                outcome = Outcome.UNCHANGED
            else:
                raise
        if data.get("sync") and outcome is Outcome.APPLIED:
            # Ask a changed device to check in now, so its new profiles arrive today, not in
            # 8 hours; never for a change that was already made (nothing new to fetch).
            await graph.sync_device(data["managedDeviceId"])
        return outcome


def _odata_ms(iso: str) -> str:
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
