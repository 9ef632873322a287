"""``account``: the official's own user account, created once and kept in line with the roster."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..checks import Check, fail, ok
from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..snapshot import ADOPTED, Snapshot, adoption_property, mark
from .base import (
    COMPENSABLE,
    REVERSIBLE,
    BaseStep,
    Leaver,
    Leaving,
    PersonRun,
    PersonView,
    PlanContext,
    Planned,
    Reversibility,
    StepPlan,
    VerifyFacts,
    removal,
    shape,
)

if TYPE_CHECKING:
    from ..model import Plan
    from ..playbook import Playbook

# Attributes the tool keeps in line with the roster on accounts it manages.
MANAGED = ("accountEnabled", "displayName", "givenName", "surname", "usageLocation", "department",
           "jobTitle", "mobilePhone", "otherMails")


def desired_attributes(ctx: PlanContext, view: PersonView) -> Json:
    p, account = view.person, ctx.playbook.account
    attrs: Json = {"accountEnabled": True, "displayName": view.names.display_name, "givenName": p.given_name,
                   "surname": p.surname, "usageLocation": account.usage_location}
    department = {"body": p.body, "category": p.category}.get(account.department_from)
    job_title = {"role": p.role, "category": p.category}.get(account.job_title_from)
    optional = {"department": department, "jobTitle": job_title, "mobilePhone": p.mobile}
    attrs.update({k: v for k, v in optional.items() if v})
    if p.private_email:
        current = list(view.user.attributes.get("otherMails") or []) if view.user else []
        if p.private_email.lower() not in (m.lower() for m in current):
            current.append(p.private_email)
        attrs["otherMails"] = current
    return attrs


# What Entra Connect syncs from AD: read-only through Graph on a synced user.
ON_PREMISES_MASTERED = frozenset({
    "accountEnabled", "displayName", "givenName", "surname", "userPrincipalName", "mailNickname",
    "department", "jobTitle", "mobilePhone", "businessPhones", "employeeId", "otherMails",
    "onPremisesExtensionAttributes", "passwordProfile"})


class AccountStep(BaseStep):
    name: ClassVar[str] = "account"
    section: ClassVar[str | None] = "account"  # a core section: the snapshot reads its marks
    holds_account: ClassVar[bool] = True
    undo_rank: ClassVar[int] = 90
    leave_rank: ClassVar[int] = 10
    verify_checks: ClassVar[tuple[str, ...]] = ("account_enabled",)

    def check(self, playbook: Playbook) -> list[str]:
        if playbook.steps[0] != self.name:
            return ["steps: `account` must come first (later steps need the account)"]
        return []

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        pid = view.person.person_id
        marks = _marks(ctx, view)
        if view.user is None:
            after = {"userPrincipalName": view.names.upn, "mailNickname": view.names.mail_nickname,
                     **desired_attributes(ctx, view),
                     "onPremisesExtensionAttributes": {k: v for k, v in marks.items() if v}}
            return StepPlan([Change(self.name, pid, Action.CREATE, f"user:{view.names.upn}", None, after)])
        current = view.user.attributes
        notes = [] if view.adopted else _name_change(ctx, view)
        # An adopted account is the employee's: only our mark on it is ours to keep.
        wanted = {} if view.adopted else desired_attributes(ctx, view)
        changed = [k for k in MANAGED if k in wanted and current.get(k) != wanted[k]]
        before = {k: current.get(k) for k in changed}
        after = {k: wanted[k] for k in changed}
        if view.adopted:  # most employees are synced: the mark goes where Graph lets us write
            prop = adoption_property(ctx.playbook)
            if current.get(prop) != marks[ctx.playbook.account.ownership_attribute]:
                before[prop] = current.get(prop)
                after[prop] = marks[ctx.playbook.account.ownership_attribute]
        else:
            have = current.get("onPremisesExtensionAttributes") or {}
            if any(have.get(k) != v for k, v in marks.items()):
                before["onPremisesExtensionAttributes"] = {k: have.get(k) for k in marks}
                after["onPremisesExtensionAttributes"] = marks
        if not after:
            return StepPlan(notes=notes)
        return StepPlan([Change(self.name, pid, Action.UPDATE, f"user:{view.user.upn}", before, after)],
                        notes)

    def leave(self, ctx: PlanContext, leaver: Leaver) -> Leaving:
        """Sign-in off at once, soft-deleted after ``leavers.delete_after_days``; an adopted
        account is the employee's: only the tool's mark on it goes."""
        pb, user, pid = ctx.playbook, leaver.user, leaver.person_id
        if user.adopted:
            ext = user.attributes.get("onPremisesExtensionAttributes") or {}
            in_slot = ext.get(pb.account.ownership_attribute) == user.owner_tag  # marked before 0.2
            before, after = mark(user, pb, None, adopted=not in_slot)
            return Leaving([Change(self.name, pid, Action.UPDATE, f"user:{user.upn}", before, after)])
        changes = []
        if user.attributes.get("accountEnabled", True):
            changes.append(Change(self.name, pid, Action.UPDATE, f"user:{user.upn}",
                                  {"accountEnabled": True}, {"accountEnabled": False}))
        delete_day = leaver.since + dt.timedelta(days=pb.leavers.delete_after_days)
        if leaver.now >= delete_day:
            return Leaving(changes, last=[Change(self.name, pid, Action.DELETE, f"user:{user.upn}", {
                "userPrincipalName": user.upn, "restoreDeletedUser": user.id}, None)])
        return Leaving(changes, scheduled=[f"soft-delete on {delete_day:%Y-%m-%d}"])

    def drastic(self, change: Change) -> bool:
        return change.action is Action.DELETE or (change.after or {}).get("accountEnabled") is False

    def operations(self, playbook: Playbook) -> dict[str, str]:
        ops = {"update_user": "keep accounts in line with the roster; mark adopted accounts"}
        if playbook.account.create:
            ops |= {"create_user": "create accounts",
                    "delete_user": "rollback: soft-delete a created account",
                    "restore_user": "undo a leaver's soft delete"}
            if playbook.leavers.auto_reply:
                ops["update_mailbox_settings"] = "set a leaver's automatic reply"
        return ops

    def preflight(self, planned: Planned) -> list[Check]:
        return [_naming(planned.plan, planned.snapshot),
                _adoption(planned.playbook, planned.part, planned.snapshot),
                _synced(planned.part, planned.snapshot)]

    async def verify(self, graph: Graph, facts: VerifyFacts, checks: Sequence[str]) -> dict[str, list[str]]:
        if "account_enabled" not in checks:
            return {}
        return {pid: ["account_enabled: the account is disabled, sign-in is impossible"]
                for pid, user in facts.users.items() if not user.get("accountEnabled")}

    def reversibility(self, change: Change) -> Reversibility:
        return REVERSIBLE if change.action is Action.UPDATE else COMPENSABLE

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None:
        keys = shape(change) or {}
        if "restoreDeletedUser" in keys:  # a leaver's soft delete, or its undo
            live = await graph.get_user(keys["restoreDeletedUser"], ("id", "userPrincipalName"))
            return None if live is None else dict(keys)
        user = await graph.get_user(run.user_id or run.upn,
                                    ("id", *(k for k in keys if k not in ("passwordProfile",))))
        if user is None:
            return None
        if change.action is Action.CREATE or change.action is Action.DELETE:
            if not _same_owner(user, keys):
                return None  # an account on that address that is not ours
            run.user_id = user["id"]
        state = {k: user.get(k) for k in keys}
        if "onPremisesExtensionAttributes" in keys:
            mine = keys["onPremisesExtensionAttributes"]
            have = user.get("onPremisesExtensionAttributes") or {}
            state["onPremisesExtensionAttributes"] = {k: have.get(k) for k in mine}
        return state

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        if change.action is Action.DELETE:  # the undo of a create: a soft delete
            assert run.user_id is not None
            return await removal(graph.delete_user(run.user_id))
        assert change.after is not None
        if "restoreDeletedUser" in change.after:  # the undo of a leaver's soft delete
            run.user_id = change.after["restoreDeletedUser"]
            return await removal(graph.restore_user(run.user_id))
        if change.action is Action.UPDATE:
            assert run.user_id is not None
            await graph.update_user(run.user_id, change.after)
            return Outcome.APPLIED
        body = {**change.after, "passwordProfile": {
            "password": generate_password(), "forceChangePasswordNextSignIn": True}}
        try:
            created = await graph.create_user(body)
        except GraphError as exc:
            if not exc.has_detail("ObjectConflict", "userPrincipalName"):
                raise
            # A retried POST whose first attempt succeeded, or a run that died after the write:
            # the account exists. It is ours only if it carries our ownership tag.
            existing = await graph.get_user(run.upn, ("id", "onPremisesExtensionAttributes"))
            if existing is None or not _same_owner(existing, change.after):
                raise
            run.user_id = existing["id"]
            return Outcome.UNCHANGED
        run.user_id = created["id"]
        return Outcome.APPLIED


def _name_change(ctx: PlanContext, view: PersonView) -> list[str]:
    """A new name (a marriage) gives a new address by the policy. Changing a UPN breaks sign-in
    on every device at once, so the tool does not do it: it tells the admin, who renames in
    Entra and keeps the old address as an alias (proxyAddresses)."""
    assert view.user is not None
    try:
        wanted = ctx.playbook.naming_policy.base_local(view.person)
    except ValueError:
        return []
    local = view.user.upn.split("@")[0]
    if re.sub(r"\.\d+$", "", local) == wanted:
        return []
    return [f"name change: the address stays {view.user.upn}; by the naming policy it would be"
            f" {wanted}@{ctx.playbook.naming_policy.domain}. Rename it in Entra if wanted, keeping"
            f" {view.user.upn} as an alias"]


def _marks(ctx: PlanContext, view: PersonView) -> dict[str, str | None]:
    """The extension attributes the tool keeps: whose account it is, and for an official who
    is also an employee, which employee account theirs belongs with."""
    account, dual = ctx.playbook.account, ctx.playbook.dual_role
    tag = f"{ctx.owner_prefix}{view.person.person_id}"
    if view.adopted:
        return {account.ownership_attribute: tag + ADOPTED}
    link = f"dual-role:{view.link.id}" if view.link is not None else None
    return {account.ownership_attribute: tag, dual.link_attribute: link}


def _same_owner(existing: Json, after: Json) -> bool:
    wanted: dict[str, Any] = after.get("onPremisesExtensionAttributes") or {}
    if not wanted:
        return True
    have = existing.get("onPremisesExtensionAttributes") or {}
    return all(have.get(k) == v for k, v in wanted.items())


def generate_password(length: int = 24) -> str:
    """A strong initial password that nobody sees: first sign-in goes through a Temporary
    Access Pass or self-service reset. It is sent once to Graph and never kept."""
    alphabet = string.ascii_letters + string.digits + "!#%+-.:=?@_~"
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if (any(c.islower() for c in pw) and any(c.isupper() for c in pw)
                and any(c.isdigit() for c in pw) and any(not c.isalnum() for c in pw)):
            return pw


def _naming(plan: Plan, snapshot: Snapshot) -> Check:
    creates = [c.after or {} for c in plan.changes if c.step == "account" and c.action is Action.CREATE]
    upns = Counter(a.get("userPrincipalName", "").lower() for a in creates)
    nicks = Counter(a.get("mailNickname", "").lower() for a in creates)
    taken_upn, taken_nick = snapshot.names_taken()
    clashes = sorted({u for u, n in upns.items() if n > 1 or u in taken_upn}
                     | {n for n, k in nicks.items() if k > 1 or n in taken_nick})
    if clashes:
        return fail("naming", f"the naming policy gives addresses already in use:"
                    f" {', '.join(clashes[:10])}; change naming in the playbook")
    return ok("naming", f"{len(creates)} new addresses, no collision")


def _adoption(playbook: Playbook, part: Plan, snapshot: Snapshot) -> Check:
    """Adopted accounts are marked in a directory extension the region registers once."""
    prop = adoption_property(playbook)
    adopting = sum(1 for c in part.changes if c.step == "account" and prop in (c.after or {}))
    if not adopting:
        return ok("adoption", "no existing account is adopted")
    if not snapshot.adoption_registered:
        return fail("adoption", f"{adopting} existing accounts would be adopted, but the app has no"
                    f" directory extension {prop}: register it once (POST /applications/{{object id}}"
                    f"/extensionProperties with {{\"name\": \"{playbook.account.adoption_extension}\","
                    ' "dataType": "String", "targetObjects": ["User"]}; see the README, A real tenant)')
    return ok("adoption", f"{adopting} adopted accounts are marked in {prop}")


def _synced(part: Plan, snapshot: Snapshot) -> Check:
    """Nothing the plan writes on an AD-synced account is mastered on-premises: Graph refuses
    those writes (onPremisesExtensionAttributes and the identity attributes the sync flows)."""
    writes = {c.target.split(":", 1)[1] for c in part.changes if c.step == "account"
              and c.action is Action.UPDATE and set(c.after or {}) & ON_PREMISES_MASTERED}
    synced = {u.upn.lower() for u in snapshot.users.values() if u.synced} if writes else set()
    bad = sorted(upn for upn in writes if upn.lower() in synced)
    if bad:
        return fail("synced accounts", f"the plan would change on-premises attributes of"
                    f" {len(bad)} AD-synced accounts ({', '.join(bad[:5])}): change them in AD instead")
    return ok("synced accounts", "nothing mastered on-premises is written")
