"""``access_pass``: first sign-in without a password in the open.

A Temporary Access Pass (one-time, limited lifetime) lets the person sign in once and register
their own methods; as a fallback a generated password to change at first sign-in. The secret
lives only in this run's memory (``PersonRun.secrets``) until the guide step writes it into the
person's guide: never into the journal, the audit log, an error or a log line. Planned only
for people whose guide has not been delivered, so a lost secret (a crash between the pass and
the guide) is replaced by a new pass on the next apply. Undo revokes the pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from ..checks import Check, fail, ok
from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..schema import Strict
from ..snapshot import Snapshot
from .account import generate_password
from .base import (
    ONE_WAY,
    REVERSIBLE,
    BaseStep,
    PersonRun,
    PersonView,
    PlanContext,
    Reversibility,
    StepPlan,
    removal,
)
from .groups import static_groups

if TYPE_CHECKING:
    from ..playbook import Playbook


class AccessPass(Strict):
    """First sign-in without a password in the open: a Temporary Access Pass (shown only in
    the person's guide), or as a fallback a generated password to change at first sign-in."""

    method: Literal["temporary_access_pass", "password"] = "temporary_access_pass"
    # A default tenant's policy allows 60 to 480 minutes: a pass valid for the first working
    # day. A longer one needs the region's policy changed first (preflight checks it).
    lifetime_minutes: Annotated[int, Field(ge=10, le=43200)] = 480
    usable_once: bool = True
    # When a cohort has a start date, its passes become valid at this local time that day
    # (startDateTime), not when the guide is written weeks earlier.
    valid_from: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "08:00"
    time_zone: str = "Europe/Stockholm"


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


class AccessPassStep(BaseStep):
    name: ClassVar[str] = "access_pass"
    section: ClassVar[str | None] = "access_pass"
    schema: ClassVar[type[Strict] | None] = AccessPass
    requires: ClassVar[dict[str, str]] = {"guide": "the pass is shown only in the guide"}
    hands_over: ClassVar[bool] = True
    undo_rank: ClassVar[int] = 20

    def operations(self, playbook: Playbook) -> dict[str, str]:
        if playbook.section("access_pass").method == "password":
            return {"reset_password": "set a first password people change at sign-in"}
        return {"create_access_pass": "issue Temporary Access Passes",
                "delete_access_pass": "revoke a Temporary Access Pass (rollback)",
                "access_passes": "find a person's pass (resume, rollback)",
                "access_pass_policy": "preflight: the tenant's Temporary Access Pass policy",
                "method_configuration": "preflight: a method people can register after the pass"}

    async def tenant_preflight(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> list[Check]:
        return [await _policy(graph, playbook, snapshot), await _after_the_pass(graph, playbook, snapshot)]

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        return StepPlan(self._changes(ctx, view))

    def _changes(self, ctx: PlanContext, view: PersonView) -> list[Change]:
        spec = ctx.playbook.section("access_pass")
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

    def reversibility(self, change: Change) -> Reversibility:
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


async def _policy(graph: Graph, playbook: Playbook, snapshot: Snapshot) -> Check:
    """The tenant's Temporary Access Pass policy must let every pass the playbook asks for be
    issued: enabled, covering the officials, the lifetime inside its bounds."""
    spec = playbook.section("access_pass")
    if spec.method != "temporary_access_pass":
        return ok("access pass", "no Temporary Access Pass step")
    try:
        policy = await graph.access_pass_policy()
    except GraphError as exc:
        if exc.status != 403:
            raise
        return fail("access pass", f"cannot read the Temporary Access Pass policy ({exc.code}):"
                    " see permissions")
    where = "Entra admin center, Protection, Authentication methods, Temporary Access Pass"
    if policy.get("state") != "enabled":
        return fail("access pass", f"Temporary Access Pass is disabled in the tenant: enable it ({where})")
    low, high = policy.get("minimumLifetimeInMinutes", 60), policy.get("maximumLifetimeInMinutes", 480)
    problems = []
    if not low <= spec.lifetime_minutes <= high:
        problems.append(f"access_pass.lifetime_minutes is {spec.lifetime_minutes}, the policy allows"
                        f" {low} to {high}: change one or the other")
    if policy.get("isUsableOnce") and not spec.usable_once:
        problems.append("the policy allows one-time passes only: set access_pass.usable_once: true")
    targets = {t.get("id") for t in policy.get("includeTargets") or []}
    mine = {g.id: name for name in static_groups(playbook) for g in snapshot.groups.get(name, [])}
    if "all_users" not in targets and not targets & set(mine):
        problems.append("the policy enables passes only for groups none of which this playbook puts"
                        f" people in: add one of {', '.join(sorted(set(mine.values()))) or 'its groups'}"
                        f" to the policy's targets ({where})")
    if problems:
        return fail("access pass", "; ".join(problems))
    return ok("access pass", f"enabled for these people, {spec.lifetime_minutes} minutes"
              f" is within {low}–{high}")


async def _after_the_pass(graph: Graph, playbook: Playbook, snapshot: Snapshot) -> Check:
    """Once the pass is used or expired, people sign in with a method they registered with
    it: the authentication methods policy must let them register one."""
    from ..signin import AFTER_THE_PASS, offered

    if playbook.section("access_pass").method != "temporary_access_pass":
        return ok("methods", "no Temporary Access Pass step")
    groups = {g.id for name in static_groups(playbook) for g in snapshot.groups.get(name, [])}
    found = []
    for method in AFTER_THE_PASS:
        try:
            config = await graph.method_configuration(method)
        except GraphError as exc:
            if exc.status == 403:
                return fail("methods", f"cannot read the authentication methods policy ({exc.code}):"
                            " see permissions")
            if exc.status != 404:
                raise
            continue
        if offered(config, groups):
            found.append(method)
    if not found:
        return fail("methods", "after the pass, people sign in with a method they registered with it,"
                    " but the authentication methods policy offers them none (Microsoft Authenticator,"
                    " FIDO2, OATH, SMS, voice): enable Microsoft Authenticator for them (Entra admin"
                    " center, Protection, Authentication methods, Policies)")
    return ok("methods", f"after the pass they can register: {', '.join(found)}")

