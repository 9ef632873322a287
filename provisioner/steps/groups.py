"""``groups``: membership of the playbook's groups, named by templates over roster fields
(``Politiker {body}``). A template that uses an empty field gives no group for that person.

With ``groups.create`` the playbook owns its groups: the ones the tenant lacks are planned as
changes of their own (person id ``group:NAME``, in the plan's ``(groups)`` part), which apply
makes before any cohort; the licensing group (``license.via_group``) gets its SKU with
``assignLicense`` on the group. Until then a planned group's id is ``new:NAME``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import StepFailure
from ..graph.gateway import Graph
from ..model import GROUP_SUBJECT, Action, Change, Json, Outcome, Plan
from ..naming import slug, template_fields
from ..roster import Person
from ..snapshot import Group, Snapshot, find_sku, owner_prefix
from .base import (
    BaseStep,
    Leaver,
    Leaving,
    PersonRun,
    PersonView,
    PlanContext,
    StepPlan,
    VerifyFacts,
    add_member,
    membership_key,
    memberships,
    removal,
    shape,
)

if TYPE_CHECKING:
    from ..playbook import Playbook


NEW = "new:"  # the id of a group the plan makes, until apply has made it
GROUP_FIELDS_SELECT = ("displayName", "mailNickname", "description", "securityEnabled", "mailEnabled")


def dynamic(playbook: Playbook) -> bool:
    return bool(playbook.groups.create and playbook.groups.dynamic and GroupsStep.name in playbook.steps)


def rule_terms(playbook: Playbook, persons: Iterable[Person]) -> dict[str, list[tuple[str, str, str]]]:
    """Each dynamic group's membership rule as (attribute, operator, value) terms, all of which
    an account must meet: the tool's ownership mark, which every account it made for this
    playbook carries, and for a group named by ``{body}`` (or ``{category}``) the department
    the account step sets from it (graph: groups-dynamic-membership)."""
    if not dynamic(playbook):
        return {}
    mark = (f"onPremisesExtensionAttributes.{playbook.account.ownership_attribute}", "startsWith",
            owner_prefix(playbook))
    out: dict[str, list[tuple[str, str, str]]] = {name: [mark] for name in owned_groups(playbook, persons)}
    for person in persons:
        for template in playbook.groups.names:
            fields = template_fields(template)
            names = group_names([template], person)
            if fields and names:
                out[names[0]] = [mark, ("department", "eq", getattr(person, fields[0]))]
    return out


def membership_rule(terms: Sequence[tuple[str, str, str]]) -> str:
    """Entra's rule syntax: ``(user.extensionAttribute15 -startsWith "provisioner:x:") -and
    (user.department -eq "Kulturnämnden")``; a double quote in a value is escaped with a
    backtick, as groups-dynamic-membership says."""
    def one(attr: str, op: str, value: str) -> str:
        quoted = value.replace('"', '`"')
        return f'(user.{attr.rsplit(".", 1)[-1]} -{op} "{quoted}")'
    return " -and ".join(one(*t) for t in terms)


def rule_selects(terms: Sequence[tuple[str, str, str]], user: Json) -> bool:
    """Does an account (as Graph shows it) meet every term? Entra compares case-insensitively."""
    for attr, op, value in terms:
        have: Any = user
        for part in attr.split("."):
            have = (have or {}).get(part) if isinstance(have, dict) else None
        have, value = str(have or "").lower(), value.lower()
        if not (have == value if op == "eq" else have.startswith(value)):
            return False
    return True


def owned_groups(playbook: Playbook, persons: Iterable[Person]) -> list[str]:
    """The groups a playbook with ``groups.create`` makes: its groups for these people and its
    licensing group."""
    if not playbook.groups.create or GroupsStep.name not in playbook.steps:
        return []
    names = set(static_groups(playbook)) | {n for p in persons for n in group_names(playbook.groups.names, p)}
    via = _licensing_group(playbook)
    return sorted(names | {via} if via else names)


def _licensing_group(playbook: Playbook) -> str | None:
    """``license.via_group`` when the license step gives the licence through it."""
    licence = playbook.section("license")
    return licence.via_group if licence is not None and "license" in playbook.steps else None


def own_groups(playbook: Playbook, persons: Iterable[Person], snapshot: Snapshot) -> Snapshot:
    """The directory as apply will leave it once it has made the playbook's own groups: each
    missing one a placeholder, the licensing group with its SKU. Idempotent."""
    persons = list(persons)
    names = owned_groups(playbook, persons)
    if not names:
        return snapshot
    rules = {name: membership_rule(terms) for name, terms in rule_terms(playbook, persons).items()}
    groups = dict(snapshot.groups)
    for name in names:
        groups.setdefault(name, [Group(NEW + name, name, frozenset(), planned=True, rule=rules.get(name))])
    via, licence = _licensing_group(playbook), playbook.section("license")
    sku = find_sku(snapshot.skus, licence.sku) if via else None
    if sku is not None and len(groups[via]) == 1 and all(p in sku.plans for p in licence.disabled_plans):
        group = groups[via][0]
        disabled = sorted(sku.plans[p] for p in licence.disabled_plans)
        if group.licenses.get(sku.sku_id) != disabled:
            groups[via] = [replace(
                group, licenses={**group.licenses, sku.sku_id: disabled},
                licence_before={sku.sku_id: group.licenses.get(sku.sku_id)})]
    return replace(snapshot, groups=groups)


def group_changes(playbook: Playbook, snapshot: Snapshot) -> list[Change]:
    """The changes that make the playbook's own groups (``own_groups`` planned them)."""
    changes = []
    skus = {s.sku_id: s.part_number for s in snapshot.skus.values()}
    for name, found in sorted(snapshot.groups.items()):
        group, subject = found[0], GROUP_SUBJECT + name
        if group.planned:
            made: Json = {"displayName": name, "mailNickname": _nickname(name),
                          "description": f"Made by provisioner for the playbook {playbook.name}",
                          "securityEnabled": True, "mailEnabled": False}
            if group.rule is not None:
                made |= {"groupTypes": ["DynamicMembership"], "membershipRule": group.rule,
                         "membershipRuleProcessingState": "On"}
            changes.append(Change(GroupsStep.name, subject, Action.CREATE, subject, None, made))
        for sku_id, before in group.licence_before.items():
            after = {"group": name, "skuPartNumber": skus[sku_id], "skuId": sku_id,
                     "disabledPlans": group.licenses[sku_id]}
            action = Action.CREATE if before is None else Action.UPDATE
            changes.append(Change(GroupsStep.name, subject, action, f"license:{subject}:{skus[sku_id]}",
                                  None if before is None else {**after, "disabledPlans": before}, after))
    return changes


def with_group_ids(plan: Plan, made: Mapping[str, str]) -> Plan:
    """The plan with the ids of the groups apply has just made in place of their placeholders."""
    if not made:
        return plan

    def real(change: Change) -> Change:
        after = change.after or {}
        gid = str(after.get("groupId", ""))
        if not gid.startswith(NEW) or gid[len(NEW):] not in made:
            return change
        return replace(change, after={**after, "groupId": made[gid[len(NEW):]]})

    pairs = [(c, real(c)) for c in plan.changes]
    return replace(plan, changes=tuple(new for _, new in pairs), reversibility={
        new.id: plan.reversibility.get(old.id, "reversible") for old, new in pairs})


def _nickname(name: str) -> str:
    """A mailNickname Graph accepts for a group's displayName: "Politiker Kulturnämnden" →
    "politiker-kulturnamnden"."""
    return slug(name, 64) or "group"


def static_groups(playbook: Playbook) -> list[str]:
    """The groups every person of the playbook is put in (names without placeholders)."""
    return [g for g in playbook.groups.names if "{" not in g] if GroupsStep.name in playbook.steps else []


def group_names(templates: Iterable[str], person: Person) -> list[str]:
    names = []
    for template in templates:
        values = {f: getattr(person, f) for f in template_fields(template) if f}
        if all(values.values()):
            names.append(template.format_map(values))
    return names


class GroupsStep(BaseStep):
    name: ClassVar[str] = "groups"
    section: ClassVar[str | None] = "groups"  # a core section: templates over roster fields
    undo_rank: ClassVar[int] = 70
    leave_rank: ClassVar[int] = 0
    verify_checks: ClassVar[tuple[str, ...]] = ("groups",)

    def check(self, playbook: Playbook) -> list[str]:
        if not playbook.groups.names:
            return ["steps: `groups` is listed but `groups` is empty"]
        if not playbook.groups.dynamic:
            return []
        if not playbook.groups.create:
            return ["groups.dynamic: only groups the playbook makes can be dynamic; add `create: true`"]
        department = playbook.account.department_from
        problems = []
        for template in playbook.groups.names:
            fields = template_fields(template)
            if len(fields) > 1 or (fields and fields[0] != department):
                problems.append(f"groups.dynamic: {template!r}: a rule can only use the department the"
                                f" account is given (account.department_from: {department}), so a"
                                f" dynamic group's name may hold at most {{{department}}}")
        return problems

    def groups(self, playbook: Playbook, person: Person | None) -> list[str]:
        return group_names(playbook.groups.names, person) if person is not None else []

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        """Memberships to add and remove; none of a group with a membership rule (a dynamic
        group: Entra puts the account in it, and refuses members by hand)."""
        upn = view.user.upn if view.user else view.names.upn
        changes = []
        wanted = group_names(ctx.playbook.groups.names, view.person)
        if view.user is not None:  # a mover leaves the playbook's groups they no longer belong in
            for name in sorted(ctx.snapshot.playbook_groups.difference(wanted)):
                for group in ctx.snapshot.groups.get(name, []):
                    if view.user.id in group.member_ids and group.rule is None:
                        changes.append(Change(self.name, view.person.person_id, Action.DELETE,
                                              f"group:{name}:{upn}",
                                              {"group": name, "groupId": group.id, "member": upn}, None))
        for name in wanted:
            group = ctx.snapshot.groups[name][0]
            if group.rule is not None or (view.user is not None and view.user.id in group.member_ids):
                continue
            changes.append(Change(self.name, view.person.person_id, Action.CREATE,
                                  f"group:{name}:{upn}", None,
                                  {"group": name, "groupId": group.id, "member": upn}))
        return StepPlan(changes)

    def leave(self, ctx: PlanContext, leaver: Leaver) -> Leaving:
        """Out of every group the playbook manages, at once (an adopted account too)."""
        user, out = leaver.user, []
        for name in sorted(ctx.snapshot.playbook_groups):
            for group in ctx.snapshot.groups.get(name, []):
                if user.id in group.member_ids and group.rule is None:
                    out.append(Change(self.name, leaver.person_id, Action.DELETE, f"group:{name}:{user.upn}",
                                      {"group": name, "groupId": group.id, "member": user.upn}, None))
        return Leaving(out)

    def operations(self, playbook: Playbook) -> dict[str, str]:
        ops = memberships("add and remove group members")
        if playbook.groups.create:
            ops |= {"create_group": "make the playbook's groups (groups.create)",
                    "get_group": "read a group the playbook made",
                    "delete_group": "rollback removes the groups the playbook made"}
            if _licensing_group(playbook):
                ops["assign_group_license"] = "give the licensing group its SKU (groups.create)"
        return ops

    async def verify(self, graph: Graph, facts: VerifyFacts, checks: Sequence[str]) -> dict[str, list[str]]:
        if "groups" not in checks:
            return {}
        found_groups = await facts.once("groups", lambda: graph.list_groups(("id", "displayName")))
        ids = {g["displayName"]: g["id"] for g in found_groups}
        people = {p.person_id: p for p in facts.people}
        pids = list(facts.users)
        found = await graph.batch([graph.member_of_request(facts.users[pid]["id"]) for pid in pids])
        out: dict[str, list[str]] = {}
        for pid, res in zip(pids, found, strict=True):
            have = {g["id"] for g in (res.body or {}).get("value", [])}
            missing = {ids.get(n, n) for n in group_names(facts.playbook.groups.names, people[pid])} - have
            if missing:
                out[pid] = [f"groups: {len(missing)} expected memberships missing"]
        return out

    def batch_key(self, change: Change) -> str | None:
        return membership_key(change)

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None:
        wanted = shape(change)
        assert wanted is not None
        if change.person_id.startswith(GROUP_SUBJECT):
            return await _group_current(graph, change, run)
        if run.user_id is None:
            user = await graph.get_user(run.upn, ("id",))
            if user is None:
                return None
            run.user_id = user["id"]
        groups = await graph.member_of_ids(run.user_id)
        return wanted if wanted["groupId"] in groups else None

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        if change.person_id.startswith(GROUP_SUBJECT):
            return await _group_apply(graph, change, run)
        assert run.user_id is not None
        user_id = run.user_id
        if change.action is Action.DELETE:
            assert change.before is not None
            return await removal(graph.remove_member(change.before["groupId"], user_id))
        assert change.after is not None
        return await add_member(graph, change.after["groupId"], user_id)


async def _find_group(graph: Graph, run: PersonRun) -> Json | None:
    """The group a group change is about: by id once made, else by its name (``run.upn``)."""
    if run.user_id is not None:
        return await graph.get_group(run.user_id, ("id", *GROUP_FIELDS_SELECT, "assignedLicenses"))
    found = [g for g in await graph.list_groups(("id", *GROUP_FIELDS_SELECT, "assignedLicenses"))
             if g["displayName"] == run.upn]
    if found:
        run.user_id = found[0]["id"]
    return found[0] if found else None


async def _group_current(graph: Graph, change: Change, run: PersonRun) -> Json | None:
    group = await _find_group(graph, run)
    if group is None:
        return None
    if "skuId" not in (change.after or change.before or {}):
        return {k: group.get(k) for k in GROUP_FIELDS_SELECT}
    wanted = shape(change) or {}
    lic = next((x for x in group.get("assignedLicenses") or [] if x["skuId"] == wanted["skuId"]), None)
    return None if lic is None else {**wanted, "disabledPlans": sorted(lic.get("disabledPlans") or [])}


async def _group_apply(graph: Graph, change: Change, run: PersonRun) -> Outcome:
    """Make or delete a group the playbook owns, or give it (or take back) its licence."""
    if "skuId" in (change.after or change.before or {}):
        if run.user_id is None and await _find_group(graph, run) is None:
            raise StepFailure("NoGroup", f"the group {run.upn!r} does not exist, so it cannot get a licence")
        assert run.user_id is not None
        if change.action is Action.DELETE:
            assert change.before is not None
            await graph.assign_group_license(run.user_id, [], [change.before["skuId"]])
        else:
            assert change.after is not None
            add = {"skuId": change.after["skuId"], "disabledPlans": change.after["disabledPlans"]}
            await graph.assign_group_license(run.user_id, [add], [])
        return Outcome.APPLIED
    if change.action is Action.DELETE:
        assert run.user_id is not None
        members = await graph.group_member_ids(run.user_id)
        if members:  # someone else put people in it after the rollback began: it stays
            raise StepFailure("GroupNotEmpty", f"the group {run.upn!r} has {len(members)} members"
                              " this rollback did not remove; it stays")
        return await removal(graph.delete_group(run.user_id))
    assert change.after is not None
    existing = await _find_group(graph, run)  # a retried create must not make a second one
    if existing is not None:
        return Outcome.UNCHANGED
    run.user_id = (await graph.create_group(change.after))["id"]
    return Outcome.APPLIED
