"""Leavers: managed people no longer in the roster, taken out in stages with dates.

    at once                   sign-in disabled, the official's groups removed, an automatic
                              reply saying where to write instead
    remove_license_after_days the licence removed (the mailbox is kept by Exchange for a while)
    delete_after_days         the account soft-deleted (restorable for 30 days)

Each stage is its own planned change on a later run; until then `plan` shows it as scheduled.
An adopted employee account (dual role, use_existing) is the employee's: only what the
official role added (the groups, our mark) is removed. The day a person started leaving is
the day the first stage was applied (the journal knows it); the clock is injectable.
"""

from __future__ import annotations

import datetime as dt

from .model import Action, Change, Json
from .playbook import Playbook
from .snapshot import DirectoryUser, Snapshot, mark
from .steps.base import PlanContext

LEAVERS = "leavers"


def leaver_changes(ctx: PlanContext, pid: str, user: DirectoryUser, now: dt.datetime,
                   schedule: dict[str, list[str]]) -> list[Change]:
    pb, snap = ctx.playbook, ctx.snapshot
    since_iso = snap.leaving_since.get(pid)
    since = dt.datetime.fromisoformat(since_iso) if since_iso else now
    changes = _remove_groups(pb, snap, pid, user)
    if user.adopted:  # only the mark goes; the account is the employee's
        ext = user.attributes.get("onPremisesExtensionAttributes") or {}
        in_slot = ext.get(pb.account.ownership_attribute) == user.owner_tag  # marked before 0.2
        before, after = mark(user, pb, None, adopted=not in_slot)
        changes.append(Change("account", pid, Action.UPDATE, f"user:{user.upn}", before, after))
        return changes
    if user.attributes.get("accountEnabled", True):
        changes.append(Change("account", pid, Action.UPDATE, f"user:{user.upn}",
                              {"accountEnabled": True}, {"accountEnabled": False}))
    reply = _auto_reply(pb, snap, pid, user)
    if reply is not None:
        changes.append(reply)
    licence_day = since + dt.timedelta(days=pb.leavers.remove_license_after_days)
    delete_day = since + dt.timedelta(days=pb.leavers.delete_after_days)
    if pb.license is not None and "license" in pb.steps:
        sku = snap.skus.get(pb.license.sku)
        via = next((g for g in snap.groups.get(pb.license.via_group or "", [])
                    if user.id in g.member_ids), None)
        if sku is not None and sku.sku_id in user.license_ids:
            if now >= licence_day:
                before = {"skuPartNumber": sku.part_number, "skuId": sku.sku_id,
                          "disabledPlans": sorted(user.license_ids[sku.sku_id])}
                if via is not None:  # group-based licensing: the membership goes
                    before |= {"viaGroup": via.name, "groupId": via.id}
                changes.append(Change("license", pid, Action.DELETE,
                                      f"license:{user.upn}:{sku.part_number}", before, None))
            else:
                schedule.setdefault(pid, []).append(f"remove licence on {licence_day:%Y-%m-%d}")
    if now >= delete_day:
        changes.append(Change("account", pid, Action.DELETE, f"user:{user.upn}",
                              {"userPrincipalName": user.upn, "restoreDeletedUser": user.id}, None))
    else:
        schedule.setdefault(pid, []).append(f"soft-delete on {delete_day:%Y-%m-%d}")
    return changes


def _remove_groups(pb: Playbook, snap: Snapshot, pid: str, user: DirectoryUser) -> list[Change]:
    out = []
    for name in sorted(snap.playbook_groups):
        for group in snap.groups.get(name, []):
            if user.id in group.member_ids:
                out.append(Change("groups", pid, Action.DELETE, f"group:{name}:{user.upn}",
                                  {"group": name, "groupId": group.id, "member": user.upn}, None))
    return out


def _auto_reply(pb: Playbook, snap: Snapshot, pid: str, user: DirectoryUser) -> Change | None:
    if "mailbox_settings" not in pb.steps:
        return None
    wanted: Json = {"status": "alwaysEnabled", "externalAudience": "all",
                    "internalReplyMessage": pb.leavers.auto_reply,
                    "externalReplyMessage": pb.leavers.auto_reply}
    current = (snap.mailboxes.get(user.id) or {}).get("automaticRepliesSetting")
    if current is None:
        return None  # no mailbox (yet, or any more): nothing to answer from
    have = {k: current.get(k) for k in wanted}
    if have == wanted:
        return None
    return Change("mailbox_settings", pid, Action.UPDATE, f"mailbox:{user.upn}",
                  {"automaticRepliesSetting": have}, {"automaticRepliesSetting": wanted})
