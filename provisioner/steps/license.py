"""``license``: the playbook's SKU (by skuPartNumber), with its disabled service plans."""

from __future__ import annotations

from typing import ClassVar

from ..errors import ConfigurationError, GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Outcome
from ..snapshot import Sku
from .base import PersonRun, PersonView, PlanContext, settle


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

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        assert change.after is not None and run.user_id is not None
        add = [{"skuId": change.after["skuId"], "disabledPlans": change.after["disabledPlans"]}]
        # Right after a create, Graph may not know the user or its usageLocation yet.
        await settle(lambda: graph.assign_license(run.user_id, add, []), _replication_lag)
        return Outcome.APPLIED


def _replication_lag(exc: GraphError) -> bool:
    return exc.status == 404 or "invalid usage location" in exc.message
