"""``license``: the playbook's SKU (by skuPartNumber), with its disabled service plans.

Directly (one assignLicense per person) or, with ``license.via_group``, through group-based
licensing: the change is then a membership of that group, added with others in one write."""

from __future__ import annotations

from typing import ClassVar

from ..errors import ConfigurationError, GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..snapshot import Group, Sku
from .base import (
    REVERSIBLE,
    PersonRun,
    PersonView,
    PlanContext,
    add_member,
    inverse,
    removal,
    settle,
    shape,
)


def resolve_sku(ctx: PlanContext) -> Sku:
    spec = ctx.playbook.license
    assert spec is not None
    sku = ctx.snapshot.skus.get(spec.sku)
    if sku is None:
        known = ", ".join(sorted(ctx.snapshot.skus)) or "none"
        raise ConfigurationError(f"license.sku: the tenant has no subscription {spec.sku!r}"
                                 f" (subscribedSkus: {known})")
    unknown = [p for p in spec.disabled_plans if p not in sku.plans]
    if unknown:
        raise ConfigurationError(f"license.disabled_plans: {', '.join(unknown)} not in {spec.sku}"
                                 f" (plans: {', '.join(sorted(sku.plans))})")
    return sku


def licensing_group(ctx: PlanContext, sku: Sku, disabled: list[str]) -> Group | None:
    """The group whose membership gives the licence (``license.via_group``), checked to assign
    exactly the playbook's SKU and disabled plans; None when licences are assigned directly."""
    spec = ctx.playbook.license
    assert spec is not None
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


class LicenseStep:
    name: ClassVar[str] = "license"

    def plan(self, ctx: PlanContext, view: PersonView) -> list[Change]:
        assert ctx.playbook.license is not None
        sku = resolve_sku(ctx)
        disabled = sorted(sku.plans[p] for p in ctx.playbook.license.disabled_plans)
        after = {"skuPartNumber": sku.part_number, "skuId": sku.sku_id, "disabledPlans": disabled}
        target = f"license:{view.names.upn if view.user is None else view.user.upn}:{sku.part_number}"
        group = licensing_group(ctx, sku, disabled)
        if group is not None:
            if view.user is not None and view.user.id in group.member_ids:
                return []
            return [Change(self.name, view.person.person_id, Action.CREATE, target, None,
                           {**after, "viaGroup": group.name, "groupId": group.id})]
        current = view.user.license_ids.get(sku.sku_id) if view.user else None
        if current is None:
            return [Change(self.name, view.person.person_id, Action.CREATE, target, None, after)]
        if sorted(current) != disabled:
            before = {**after, "disabledPlans": sorted(current)}
            return [Change(self.name, view.person.person_id, Action.UPDATE, target, before, after)]
        return []

    def reversibility(self, change: Change) -> str:
        return REVERSIBLE

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
