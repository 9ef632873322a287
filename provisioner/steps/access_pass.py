"""``access_pass``: first sign-in without a password in the open.

A Temporary Access Pass (one-time, limited lifetime) lets the person sign in once and register
their own methods; as a fallback a generated password to change at first sign-in. The secret
lives only in this run's memory (``PersonRun.secrets``) until the guide step writes it into the
person's guide: never into the journal, the audit log, an error or a log line. Planned only
for people whose guide has not been delivered, so a lost secret (a crash between the pass and
the guide) is replaced by a new pass on the next apply. Undo revokes the pass.
"""

from __future__ import annotations

from typing import ClassVar

from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from .account import generate_password
from .base import ONE_WAY, REVERSIBLE, PersonRun, PersonView, PlanContext, removal


def valid_from(day: str, at: str, zone: str) -> str | None:
    """The cohort's start day at the local time ``at``, in UTC, for startDateTime; None when
    that moment has passed (a pass cannot start in the past: it is valid from now)."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from .. import clock

    local = dt.datetime.fromisoformat(f"{day}T{at}").replace(tzinfo=ZoneInfo(zone))
    if local <= clock.now():
        return None
    return local.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AccessPassStep:
    name: ClassVar[str] = "access_pass"

    def plan(self, ctx: PlanContext, view: PersonView) -> list[Change]:
        spec = ctx.playbook.access_pass
        assert spec is not None
        pid = view.person.person_id
        if view.adopted or pid in ctx.snapshot.guides or pid in ctx.snapshot.uncertain:
            # staff sign in as always; a delivered guide already carried a secret; an
            # uncertain one waits for a human (the guide step says so)
            return []
        upn = view.user.upn if view.user else view.names.upn
        after = {"method": spec.method, "lifetimeInMinutes": spec.lifetime_minutes,
                 "isUsableOnce": spec.usable_once}
        starts = ctx.starts.get(pid)
        if spec.method == "temporary_access_pass" and starts:
            after["startDateTime"] = valid_from(starts, spec.valid_from, spec.time_zone)
        return [Change(self.name, pid, Action.CREATE, f"access-pass:{upn}", None, after)]

    def reversibility(self, change: Change) -> str:
        method = (change.after or change.before or {}).get("method")
        return ONE_WAY if method == "password" else REVERSIBLE

    def undo(self, change: Change, before_image: Json | None) -> Change | None:
        if (change.after or {}).get("method") == "password" or not before_image:
            return None  # the old password is unknown: a new one cannot be taken back
        return Change(self.name, change.person_id, Action.DELETE, change.target,
                      {**(change.after or {}), **before_image}, None)

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None:
        wanted = change.before if change.action is Action.DELETE else change.after
        assert wanted is not None
        if wanted.get("method") == "password" or run.user_id is None:
            return None  # a password cannot be read back
        passes = await graph.access_passes(run.user_id)
        if change.action is Action.DELETE:
            return wanted if any(p["id"] == wanted.get("methodId") for p in passes) else None
        return dict(wanted) if passes else None

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        assert run.user_id is not None
        if change.action is Action.DELETE:
            assert change.before is not None
            return await removal(graph.delete_access_pass(run.user_id, change.before["methodId"]))
        assert change.after is not None
        if change.after["method"] == "password":
            password = generate_password()
            await graph.update_user(run.user_id, {"passwordProfile": {
                "password": password, "forceChangePasswordNextSignIn": True}})
            run.secrets["password"] = password
            return Outcome.APPLIED
        issued = await graph.create_access_pass(run.user_id, change.after["lifetimeInMinutes"],
                                                change.after["isUsableOnce"],
                                                change.after.get("startDateTime"))
        run.secrets["access_pass"] = str(issued["temporaryAccessPass"])
        run.pass_id = str(issued["id"])
        run.observed[change.id] = {"methodId": issued["id"]}  # what undo revokes; not the pass
        return Outcome.APPLIED
