"""``groups``: membership of the playbook's groups, named by templates over roster fields
(``Politiker {body}``). A template that uses an empty field gives no group for that person."""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar

from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..roster import Person
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


def static_groups(playbook: Playbook) -> list[str]:
    """The groups every person of the playbook is put in (names without placeholders)."""
    return [g for g in playbook.groups if "{" not in g] if GroupsStep.name in playbook.steps else []


def group_names(templates: Iterable[str], person: Person) -> list[str]:
    names = []
    for template in templates:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        values = {f: getattr(person, f) for f in fields}
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
        return [] if playbook.groups else ["steps: `groups` is listed but `groups` is empty"]

    def groups(self, playbook: Playbook, person: Person | None) -> list[str]:
        return group_names(playbook.groups, person) if person is not None else []

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        upn = view.user.upn if view.user else view.names.upn
        changes = []
        wanted = set(group_names(ctx.playbook.groups, view.person))
        if view.user is not None:  # a mover leaves the playbook's groups they no longer belong in
            for name in sorted(ctx.snapshot.playbook_groups - wanted):
                for group in ctx.snapshot.groups.get(name, []):
                    if view.user.id in group.member_ids:
                        changes.append(Change(self.name, view.person.person_id, Action.DELETE,
                                              f"group:{name}:{upn}",
                                              {"group": name, "groupId": group.id, "member": upn}, None))
        for name in group_names(ctx.playbook.groups, view.person):
            group = ctx.snapshot.groups[name][0]
            if view.user is not None and view.user.id in group.member_ids:
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
                if user.id in group.member_ids:
                    out.append(Change(self.name, leaver.person_id, Action.DELETE, f"group:{name}:{user.upn}",
                                      {"group": name, "groupId": group.id, "member": user.upn}, None))
        return Leaving(out)

    def operations(self, playbook: Playbook) -> dict[str, str]:
        return memberships("add and remove group members")

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
            missing = {ids.get(n, n) for n in group_names(facts.playbook.groups, people[pid])} - have
            if missing:
                out[pid] = [f"groups: {len(missing)} expected memberships missing"]
        return out

    def batch_key(self, change: Change) -> str | None:
        return membership_key(change)

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None:
        wanted = shape(change)
        assert wanted is not None
        if run.user_id is None:
            user = await graph.get_user(run.upn, ("id",))
            if user is None:
                return None
            run.user_id = user["id"]
        groups = await graph.member_of_ids(run.user_id)
        return wanted if wanted["groupId"] in groups else None

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        assert run.user_id is not None
        user_id = run.user_id
        if change.action is Action.DELETE:
            assert change.before is not None
            return await removal(graph.remove_member(change.before["groupId"], user_id))
        assert change.after is not None
        return await add_member(graph, change.after["groupId"], user_id)
