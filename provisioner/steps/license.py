"""``license``: the playbook's SKU (by skuPartNumber), with its disabled service plans.

Directly (one assignLicense per person) or, with ``license.via_group``, through group-based
licensing: the change is then a membership of that group, added with others in one write."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from ..checks import Check, fail, ok
from ..errors import ConfigurationError, GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..schema import Strict
from ..snapshot import Group, Sku, Snapshot, find_sku, read_skus, sku_labels
from .base import (
    BaseStep,
    Leaver,
    Leaving,
    PersonRun,
    PersonView,
    PlanContext,
    Planned,
    StepPlan,
    VerifyFacts,
    add_member,
    inverse,
    membership_key,
    memberships,
    removal,
    settle,
    shape,
    verifies,
)

if TYPE_CHECKING:
    from ..model import Plan
    from ..playbook import Playbook


class License(Strict):
    sku: str = Field(description="skuPartNumber, e.g. ENTERPRISEPACK")
    disabled_plans: tuple[str, ...] = ()
    # Group-based licensing: the licence comes from membership of this group (which must assign
    # the SKU with the same disabled plans). Memberships are added 20 to a write, so this
    # saves one Entra write per person against one assignLicense each.
    via_group: str | None = Field(None, min_length=1)


def resolve_sku(ctx: PlanContext) -> Sku:
    spec = ctx.playbook.section("license")
    sku = find_sku(ctx.snapshot.skus, spec.sku)
    if sku is None:
        raise ConfigurationError(f"license.sku: the tenant has no subscription {spec.sku!r}"
                                 f" (subscribedSkus: {sku_labels(ctx.snapshot.skus)})")
    unknown = [p for p in spec.disabled_plans if p not in sku.plans]
    if unknown:
        raise ConfigurationError(f"license.disabled_plans: {', '.join(unknown)} not in {sku.part_number}"
                                 f" (plans: {', '.join(sorted(sku.plans))})")
    return sku


def licensing_group(ctx: PlanContext, sku: Sku, disabled: list[str]) -> Group | None:
    """The group whose membership gives the licence (``license.via_group``), checked to assign
    exactly the playbook's SKU and disabled plans; None when licences are assigned directly."""
    spec = ctx.playbook.section("license")
    if spec.via_group is None:
        return None
    found = ctx.snapshot.groups.get(spec.via_group) or []
    if len(found) != 1:
        raise ConfigurationError(f"license.via_group: {len(found)} groups are named"
                                 f" {spec.via_group!r}; exactly one must be")
    group = found[0]
    if sku.sku_id not in group.licenses:
        raise ConfigurationError(f"license.via_group: the group {spec.via_group!r} does not assign"
                                 f" {sku.part_number}: assign it to the group in Entra (Licenses)")
    if group.licenses[sku.sku_id] != disabled:
        raise ConfigurationError(f"license.via_group: the group {spec.via_group!r} assigns"
                                 f" {sku.part_number} with other disabled plans than"
                                 " license.disabled_plans: make them the same")
    return group


class LicenseStep(BaseStep):
    name: ClassVar[str] = "license"
    section: ClassVar[str | None] = "license"
    schema: ClassVar[type[Strict] | None] = License
    undo_rank: ClassVar[int] = 80
    leave_rank: ClassVar[int] = 40
    verify_checks: ClassVar[tuple[str, ...]] = ("license", "mailbox")

    def check(self, playbook: Playbook) -> list[str]:
        spec = playbook.section("license")
        if spec and spec.via_group and spec.via_group in playbook.groups.names:
            return [f"license.via_group: {spec.via_group!r} is also in `groups`;"
                    " list it once (the licence step manages that membership)"]
        return super().check(playbook)

    def groups(self, playbook: Playbook, person: Any) -> list[str]:
        spec = playbook.section("license")
        return [spec.via_group] if spec.via_group else []

    async def read(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> dict[str, Any]:
        return {} if snapshot.skus else {"skus": await read_skus(graph)}

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        spec = ctx.playbook.section("license")
        sku = resolve_sku(ctx)
        disabled = sorted(sku.plans[p] for p in spec.disabled_plans)
        after = {"skuPartNumber": sku.part_number, "skuId": sku.sku_id, "disabledPlans": disabled}
        target = f"license:{view.names.upn if view.user is None else view.user.upn}:{sku.part_number}"
        group = licensing_group(ctx, sku, disabled)
        pid = view.person.person_id
        if group is not None:
            if view.user is not None and view.user.id in group.member_ids:
                return StepPlan()
            if group.rule is not None:
                return StepPlan()  # a dynamic group: Entra adds the account by its rule
            return StepPlan([Change(self.name, pid, Action.CREATE, target, None,
                                    {**after, "viaGroup": group.name, "groupId": group.id})])
        current = view.user.license_ids.get(sku.sku_id) if view.user else None
        if current is None:
            return StepPlan([Change(self.name, pid, Action.CREATE, target, None, after)])
        if sorted(current) != disabled:
            before = {**after, "disabledPlans": sorted(current)}
            return StepPlan([Change(self.name, pid, Action.UPDATE, target, before, after)])
        return StepPlan()

    def warnings(self, ctx: PlanContext, changes: Sequence[Change]) -> list[str]:
        sku = resolve_sku(ctx)
        needed = sum(1 for c in changes if c.step == self.name and c.action is Action.CREATE)
        if needed > sku.free:
            return [f"license: {needed} {sku.part_number} licences needed but only"
                    f" {sku.free} free ({sku.enabled} bought, {sku.consumed} in use)"]
        return []

    def leave(self, ctx: PlanContext, leaver: Leaver) -> Leaving:
        """The licence goes ``leavers.remove_license_after_days`` after leaving (Exchange keeps
        the mailbox a while); an adopted account's licence is the employee's."""
        user, spec, snap = leaver.user, ctx.playbook.section("license"), ctx.snapshot
        sku = find_sku(snap.skus, spec.sku)
        if user.adopted or sku is None or sku.sku_id not in user.license_ids:
            return Leaving()
        day = leaver.since + dt.timedelta(days=ctx.playbook.leavers.remove_license_after_days)
        if leaver.now < day:
            return Leaving(scheduled=[f"remove licence on {day:%Y-%m-%d}"])
        before = {"skuPartNumber": sku.part_number, "skuId": sku.sku_id,
                  "disabledPlans": sorted(user.license_ids[sku.sku_id])}
        via = next((g for g in snap.groups.get(spec.via_group or "", []) if user.id in g.member_ids), None)
        if via is not None:  # group-based licensing: the membership goes
            before |= {"viaGroup": via.name, "groupId": via.id}
        return Leaving([Change(self.name, leaver.person_id, Action.DELETE,
                               f"license:{user.upn}:{sku.part_number}", before, None)])

    def drastic(self, change: Change) -> bool:
        return change.action is Action.DELETE

    def operations(self, playbook: Playbook) -> dict[str, str]:
        ops = {"subscribed_skus": "read subscriptions (licences and free seats)"}
        if playbook.section("license").via_group:
            ops |= memberships("give the licence through its group")
        else:
            ops["assign_license"] = "assign and remove licences"
        if verifies(playbook, "mailbox"):
            ops["get_mailbox_settings"] = "the verify gate reaches each mailbox"
        return ops

    def preflight(self, planned: Planned) -> list[Check]:
        return [_seats(planned), _usage_location(planned.part, planned.snapshot)]

    async def verify(self, graph: Graph, facts: VerifyFacts, checks: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if "license" in checks:
            spec = facts.playbook.section("license")
            skus = await facts.once("skus", lambda: read_skus(graph))
            sku = find_sku(skus, spec.sku)
            for pid, user in facts.users.items():
                problem = licence_problem(user, sku and sku.sku_id, sku.part_number if sku else spec.sku)
                if problem:
                    out[pid] = [problem]
        if "mailbox" in checks:
            pids = list(facts.users)
            found = await graph.batch([graph.mailbox_settings_request(facts.users[pid]["id"])
                                       for pid in pids])
            for pid, res in zip(pids, found, strict=True):
                if res.status != 200:
                    code = ((res.body or {}).get("error") or {}).get("code", res.status)
                    out.setdefault(pid, []).append(f"mailbox: not reachable ({code})")
        return out

    def batch_key(self, change: Change) -> str | None:
        return membership_key(change)

    def undo(self, change: Change, before_image: Json | None) -> Change | None:
        if change.action is Action.UPDATE and before_image is None:
            before_image = change.before
        return inverse(change, before_image)

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None:
        wanted = shape(change)
        assert wanted is not None
        if "groupId" in wanted:
            if run.user_id is None:
                user = await graph.get_user(run.upn, ("id",))
                if user is None:
                    return None
                run.user_id = user["id"]
            return wanted if wanted["groupId"] in await graph.member_of_ids(run.user_id) else None
        user = await graph.get_user(run.user_id or run.upn, ("id", "assignedLicenses"))
        for lic in (user or {}).get("assignedLicenses") or []:
            if lic["skuId"] == wanted["skuId"]:
                return {**wanted, "disabledPlans": sorted(lic.get("disabledPlans") or [])}
        return None

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        assert run.user_id is not None
        if change.action is Action.DELETE:
            assert change.before is not None
            if "groupId" in change.before:
                return await removal(graph.remove_member(change.before["groupId"], run.user_id))
            try:
                await graph.assign_license(run.user_id, [], [change.before["skuId"]])
            except GraphError as exc:
                if exc.status == 400 and "does not have a corresponding license" in exc.message:
                    return Outcome.UNCHANGED
                raise
            return Outcome.APPLIED
        assert change.after is not None
        if "groupId" in change.after:
            return await add_member(graph, change.after["groupId"], run.user_id)
        add = [{"skuId": change.after["skuId"], "disabledPlans": change.after["disabledPlans"]}]
        # Right after a create, Graph may not know the user or its usageLocation yet.
        await settle(lambda: graph.assign_license(run.user_id, add, []), _replication_lag)
        return Outcome.APPLIED


def _replication_lag(exc: GraphError) -> bool:
    return exc.status == 404 or "invalid usage location" in exc.message


# Group-based licensing's errors (licenseAssignmentStates), in words an admin can act on.
LICENCE_ERRORS = {
    "CountViolation": "no licence left to give: buy more or free some, and Entra assigns it",
    "MutuallyExclusiveViolation": "it conflicts with another licence the user has",
    "DependencyViolation": "a service plan it needs is not assigned",
    "ProhibitedInUsageLocationViolation": "it is not available in the user's usageLocation",
    "UniquenessViolation": "an attribute it needs (such as the proxy address) is taken",
}


def licence_problem(user: dict[str, Any], sku_id: str | None, sku_name: str) -> str | None:
    """Why the user does not have the SKU, or None when they have it."""
    if any(lic["skuId"] == sku_id for lic in user.get("assignedLicenses") or []):
        return None
    for state in user.get("licenseAssignmentStates") or []:
        if state.get("skuId") == sku_id and state.get("state") == "Error":
            code = state.get("error") or "Others"
            return (f"license: {sku_name} is not assigned: the licensing group reports {code}"
                    f" ({LICENCE_ERRORS.get(code, 'see the group in Entra, Licenses')})")
    return f"license: {sku_name} is not assigned"


def _seats(planned: Planned) -> Check:
    spec, snapshot, part = planned.playbook.section("license"), planned.snapshot, planned.part
    who = planned.who
    sku = find_sku(snapshot.skus, spec.sku)
    if sku is None:
        return fail("licence", f"the tenant has no subscription {spec.sku}"
                    f" (it has: {sku_labels(snapshot.skus)}): fix license.sku or buy it")
    needed = sum(1 for c in part.changes if c.step == "license" and c.action is Action.CREATE)
    if needed > sku.free:
        return fail("licence", f"{sku.part_number}: {who} needs {needed} licences, {sku.free}"
                    f" are free ({sku.enabled} bought, {sku.consumed} in use): buy"
                    f" {needed - sku.free} more or free some")
    return ok("licence", f"{sku.part_number}: {who} needs {needed}, {sku.free} free")


def _usage_location(part: Plan, snapshot: Snapshot) -> Check:
    """An existing account that gets a licence needs a usageLocation, or Graph refuses."""
    fixed = {c.person_id for c in part.changes if c.step == "account"
             and "usageLocation" in (c.after or {})}
    lacking = []
    for c in part.changes:
        if c.step != "license" or c.action is not Action.CREATE or c.person_id in fixed:
            continue
        target = part.people.get(c.person_id)
        user = snapshot.users.get(target.user_id) if target and target.user_id else None
        if user is not None and not user.attributes.get("usageLocation"):
            lacking.append(user.upn)
    if lacking:
        return fail("usage location", f"{len(lacking)} accounts that get a licence have no"
                    f" usageLocation: {', '.join(sorted(lacking)[:10])}; set it (e.g. SE) first")
    return ok("usage location", "every account that gets a licence has a usageLocation")
