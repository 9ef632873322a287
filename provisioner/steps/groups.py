"""``groups``: membership of the playbook's groups, named by templates over roster fields
(``Politiker {body}``). A template that uses an empty field gives no group for that person."""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import ClassVar

from ..errors import ConfigurationError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..playbook import Playbook
from ..roster import Person
from .base import REVERSIBLE, PersonRun, PersonView, PlanContext, add_member, inverse, removal, shape


def group_names(templates: Iterable[str], person: Person) -> list[str]:
    names = []
    for template in templates:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        values = {f: getattr(person, f) for f in fields}
        if all(values.values()):
            names.append(template.format_map(values))
    return names


def needed_groups(playbook: Playbook, persons: Iterable[Person]) -> dict[str, int]:
    """Every group name the playbook needs for these people (user and device groups), with
    how many people need it."""
    needed: dict[str, int] = {}
    templates = playbook.groups if "groups" in playbook.steps else ()
    profiles = playbook.devices.profiles if playbook.devices and "device_settings" in playbook.steps else ()
    for p in persons:
        names = group_names(templates, p)
        profile = next((x for x in profiles if x.model.casefold() == p.device_model.casefold()), None)
        names += list(profile.groups) if profile else []
        if playbook.license and playbook.license.via_group and "license" in playbook.steps:
            names.append(playbook.license.via_group)
        for name in names:
            needed[name] = needed.get(name, 0) + 1
    for x in profiles:  # every profile's groups: a device that changed model leaves the old ones
        for name in x.groups:
            needed.setdefault(name, 0)
    return needed


def check_groups(ctx: PlanContext, persons: Iterable[Person]) -> None:
    """Every group the roster needs exists exactly once, or one error lists them all."""
    needed = needed_groups(ctx.playbook, persons)
    problems = []
    for name, count in sorted(needed.items()):
        found = ctx.snapshot.groups.get(name, [])
        if not found:
            problems.append(f"groups: no group named {name!r} in the tenant ({count} people need it)")
        elif len(found) > 1:
            problems.append(f"groups: {len(found)} groups are named {name!r}; rename all but one")
    if problems:
        raise ConfigurationError("\n".join(problems))


class GroupsStep:
    name: ClassVar[str] = "groups"

    def plan(self, ctx: PlanContext, view: PersonView) -> list[Change]:
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
        return changes

    def reversibility(self, change: Change) -> str:
        return REVERSIBLE

    def undo(self, change: Change, before_image: Json | None) -> Change | None:
        return inverse(change, before_image)

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
