"""``account``: the official's own user account, created once and kept in line with the roster."""

from __future__ import annotations

import re
import secrets
import string
from typing import Any, ClassVar

from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..snapshot import ADOPTED, adoption_property
from .base import (
    COMPENSABLE,
    REVERSIBLE,
    PersonRun,
    PersonView,
    PlanContext,
    inverse,
    removal,
    shape,
)

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


class AccountStep:
    name: ClassVar[str] = "account"

    def plan(self, ctx: PlanContext, view: PersonView) -> list[Change]:
        pid = view.person.person_id
        marks = _marks(ctx, view)
        if view.user is None:
            after = {"userPrincipalName": view.names.upn, "mailNickname": view.names.mail_nickname,
                     **desired_attributes(ctx, view),
                     "onPremisesExtensionAttributes": {k: v for k, v in marks.items() if v}}
            return [Change(self.name, pid, Action.CREATE, f"user:{view.names.upn}", None, after)]
        current = view.user.attributes
        if not view.adopted:
            _note_name_change(ctx, view)
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
            return []
        return [Change(self.name, pid, Action.UPDATE, f"user:{view.user.upn}", before, after)]

    def reversibility(self, change: Change) -> str:
        return REVERSIBLE if change.action is Action.UPDATE else COMPENSABLE

    def undo(self, change: Change, before_image: Json | None) -> Change | None:
        return inverse(change, before_image)

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


def _note_name_change(ctx: PlanContext, view: PersonView) -> None:
    """A new name (a marriage) gives a new address by the policy. Changing a UPN breaks sign-in
    on every device at once, so the tool does not do it: it tells the admin, who renames in
    Entra and keeps the old address as an alias (proxyAddresses)."""
    assert view.user is not None
    try:
        wanted = ctx.playbook.naming_policy.base_local(view.person)
    except ValueError:
        return
    local = view.user.upn.split("@")[0]
    if re.sub(r"\.\d+$", "", local) != wanted:
        ctx.notes[view.person.person_id] = (
            f"name change: the address stays {view.user.upn}; by the naming policy it would be"
            f" {wanted}@{ctx.playbook.naming_policy.domain}. Rename it in Entra if wanted, keeping"
            f" {view.user.upn} as an alias")


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
