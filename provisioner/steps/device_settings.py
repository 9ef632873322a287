"""``device_settings``: a person's device joins the device groups of its model's profile (the
groups Intune's mail, Wi-Fi and restriction profiles are assigned to), gets its device
category, and is asked to sync.

Devices are found by the person's UPN or, before the account owns them, by the roster's
device_serial. A device not enrolled yet is not an error: the person is reported as awaiting
enrolment and a later apply picks the device up.
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..playbook import DeviceProfile
from ..snapshot import ManagedDevice
from .base import ALREADY_MEMBER, REVERSIBLE, PersonRun, PersonView, PlanContext, shape


def profile_for(ctx: PlanContext, view: PersonView) -> DeviceProfile | None:
    assert ctx.playbook.devices is not None
    if view.person.device_model:
        return ctx.playbook.devices.for_model(view.person.device_model)
    for device in ctx.snapshot.intune.for_person(_upn(view), view.person.device_serial):
        found = next((p for p in ctx.playbook.devices.profiles if p.reports(device.model, device.os)), None)
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


class DeviceSettingsStep:
    name: ClassVar[str] = "device_settings"
    goes_with_user: ClassVar[bool] = False  # memberships of the device, not of the account

    def plan(self, ctx: PlanContext, view: PersonView) -> list[Change]:
        profile = profile_for(ctx, view)
        if profile is None:
            if view.person.device_model:
                ctx.notes[view.person.person_id] = (
                    f"no device profile for the model {view.person.device_model!r}")
            return []
        device = device_for(ctx, view, profile)
        pid = view.person.person_id
        if device is None:
            serial = f", serial {view.person.device_serial}" if view.person.device_serial else ""
            ctx.awaiting[pid] = f"{profile.model}{serial}: awaiting enrolment"
            return []
        object_id = ctx.snapshot.intune.object_ids.get(device.azure_ad_device_id)
        if object_id is None:
            ctx.awaiting[pid] = f"{profile.model}, serial {device.serial}: not registered in Entra yet"
            return []
        changes = []
        assert ctx.playbook.devices is not None
        others = {g for p in ctx.playbook.devices.profiles for g in p.groups} - set(profile.groups)
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
        return changes

    def reversibility(self, change: Change) -> str:
        return REVERSIBLE

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
