"""``license``: the playbook's SKU (by skuPartNumber), with its disabled service plans."""

from __future__ import annotations

from typing import ClassVar

from ..errors import ConfigurationError, GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..snapshot import Sku
from .base import REVERSIBLE, PersonRun, PersonView, PlanContext, inverse, settle, shape


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


class LicenseStep:
    name: ClassVar[str] = "license"

    def plan(self, ctx: PlanContext, view: PersonView) -> list[Change]:
        assert ctx.playbook.license is not None
        sku = resolve_sku(ctx)
        disabled = sorted(sku.plans[p] for p in ctx.playbook.license.disabled_plans)
        after = {"skuPartNumber": sku.part_number, "skuId": sku.sku_id, "disabledPlans": disabled}
        target = f"license:{view.names.upn if view.user is None else view.user.upn}:{sku.part_number}"
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
        user = await graph.get_user(run.user_id or run.upn, ("id", "assignedLicenses"))
        for lic in (user or {}).get("assignedLicenses") or []:
            if lic["skuId"] == wanted["skuId"]:
                return {**wanted, "disabledPlans": sorted(lic.get("disabledPlans") or [])}
        return None

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        assert run.user_id is not None
        if change.action is Action.DELETE:
            assert change.before is not None
            try:
                await graph.assign_license(run.user_id, [], [change.before["skuId"]])
            except GraphError as exc:
                if exc.status == 400 and "does not have a corresponding license" in exc.message:
                    return Outcome.UNCHANGED
                raise
            return Outcome.APPLIED
        assert change.after is not None
        add = [{"skuId": change.after["skuId"], "disabledPlans": change.after["disabledPlans"]}]
        # Right after a create, Graph may not know the user or its usageLocation yet.
        await settle(lambda: graph.assign_license(run.user_id, add, []), _replication_lag)
        return Outcome.APPLIED


def _replication_lag(exc: GraphError) -> bool:
    return exc.status == 404 or "invalid usage location" in exc.message
