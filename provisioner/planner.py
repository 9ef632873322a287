"""snapshot + roster + playbook → Plan. Pure: it never talks to Graph."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from . import clock
from .cohorts import Assignment, assign
from .dualrole import ADOPT, OWN, DualRoleView, analyse
from .errors import ConfigurationError, RosterError
from .leavers import LEAVERS, leaver_changes
from .model import GROUP_SUBJECT, PREREQUISITES, Change, PersonTarget, Plan
from .naming import Namer, Names, NamingPolicy
from .playbook import Playbook
from .roster import Person, Roster
from .snapshot import DirectoryUser, Snapshot, owner_prefix
from .steps import PersonView, PlanContext, Step, needed_groups, used
from .steps.groups import group_changes, own_groups


def make_plan(playbook: Playbook, roster: Roster, snapshot: Snapshot,
              assignment: Assignment | None = None) -> Plan:
    """The changes for every person, cohort by cohort (canary accounts first in theirs)."""
    assignment = assignment or assign(playbook, roster)
    persons = [p for name in (c.name for c in assignment.order) for p in assignment.members[name]]
    snapshot = own_groups(playbook, persons, snapshot)
    starts = {c.name: c.starts.isoformat() for c in assignment.order if c.starts}
    ctx = PlanContext(playbook, snapshot, owner_prefix(playbook),
                      cohort_of=dict(assignment.cohort_of),
                      starts={pid: starts[c] for pid, c in assignment.cohort_of.items() if c in starts})
    steps = used(playbook)
    check_groups(playbook, snapshot, persons)
    managed = snapshot.managed(ctx.owner_prefix)
    naming = playbook.naming_policy  # made anew each time it is asked for
    names = assign_names(naming, roster.path, persons, snapshot, managed)
    notes: dict[str, list[str]] = {}
    for person in persons:
        lost = naming.dropped(person) if person.person_id not in managed else []
        if lost and person.person_id in names:
            notes.setdefault(person.person_id, []).append(
                f"the {' and the '.join(lost)} has no Latin letters and is left out of the address"
                f" {names[person.person_id].upn}; an upn_local column in the roster chooses it")
    dual = analyse(playbook, persons, snapshot, ctx.owner_prefix)
    changes: list[Change] = group_changes(playbook, snapshot)  # the groups it owns come first
    people: dict[str, PersonTarget] = {
        c.person_id: PersonTarget(c.person_id.removeprefix(GROUP_SUBJECT), _group_id(snapshot, c.person_id))
        for c in changes}
    prerequisites = {pid: PREREQUISITES for pid in people}
    held: dict[str, str] = {}
    awaiting: dict[str, str] = {}
    for person in persons:
        view = _view(playbook, snapshot, person, names[person.person_id], managed.get(person.person_id),
                     dual.get(person.person_id))
        if view is None:
            found = dual.get(person.person_id)
            held[person.person_id] = (
                found.resolution.reason if found and found.resolution.kind == "held"
                else "no existing account matches, and this playbook creates none (account.create: false)")
            continue
        user = view.user
        people[person.person_id] = PersonTarget(user.upn if user else view.names.upn,
                                                user.id if user else None)
        for step in steps:
            planned = step.plan(ctx, view)
            changes.extend(planned.changes)
            notes.setdefault(person.person_id, []).extend(planned.notes)
            if planned.awaiting:
                awaiting[person.person_id] = planned.awaiting
    # Leavers: accounts this playbook manages whose person is no longer in the roster.
    cohort_of = {**prerequisites, **assignment.cohort_of}
    order = ((PREREQUISITES,) if prerequisites else ()) + tuple(c.name for c in assignment.order)
    schedule: dict[str, list[str]] = {}
    in_roster = {p.person_id for p in persons}
    now = clock.now()
    for pid, user in sorted(managed.items()):
        if pid in in_roster:
            continue
        leaving, later = leaver_changes(ctx, steps, pid, user, now)
        if later:
            schedule[pid] = later
        if leaving or later:
            people[pid] = PersonTarget(user.upn, user.id)
            cohort_of[pid] = LEAVERS
            changes.extend(leaving)
    if any(cohort_of.get(pid) == LEAVERS for pid in people):
        order = (*order, LEAVERS)
    return Plan(
        playbook_name=playbook.name, playbook_path=str(playbook.source),
        playbook_digest=playbook.digest, roster_digest=roster.digest, people=people,
        changes=tuple(changes), warnings=tuple(w for s in steps for w in s.warnings(ctx, changes)),
        steps=playbook.steps, reversibility=_reversibility(steps, changes),
        cohort_of=cohort_of, cohort_order=order, held=held, awaiting=awaiting,
        scheduled={pid: "; ".join(items) for pid, items in schedule.items()},
        notes={pid: "; ".join(said) for pid, said in notes.items() if said},
    )


def _reversibility(steps: Sequence[Step], changes: Sequence[Change]) -> dict[str, str]:
    by_name = {s.name: s for s in steps}
    return {c.id: by_name[c.step].reversibility(c) for c in changes}


def _group_id(snapshot: Snapshot, subject: str) -> str | None:
    group = snapshot.groups[subject.removeprefix(GROUP_SUBJECT)][0]
    return None if group.planned else group.id


def check_groups(playbook: Playbook, snapshot: Snapshot, persons: Sequence[Person]) -> None:
    """Every group the roster needs exists exactly once, or one error lists them all."""
    problems = []
    for name, count in sorted(needed_groups(playbook, persons).items()):
        found = snapshot.groups.get(name, [])
        if not found:
            problems.append(f"groups: no group named {name!r} in the tenant ({count} people need it)")
        elif len(found) > 1:
            problems.append(f"groups: {len(found)} groups are named {name!r}; rename all but one")
    if problems:
        raise ConfigurationError("\n".join(problems))


def _view(playbook: Playbook, snapshot: Snapshot, person: Person, names: Names,
          mine: DirectoryUser | None, dual: DualRoleView | None) -> PersonView | None:
    """How the steps see a person: their account (own or adopted) and the employee account
    an own account links to. None: held for a dual-role decision."""
    resolution = dual.resolution if dual else None
    if mine is not None:  # already provisioned: the account stays what it is
        if mine.adopted:
            return PersonView(person, names, mine, adopted=True)
        if resolution is not None and resolution.kind == OWN:
            return PersonView(person, names, mine, link=resolution.user)
        current = (mine.attributes.get("onPremisesExtensionAttributes") or {}).get(
            playbook.dual_role.link_attribute) or ""
        return PersonView(person, names, mine,
                          link=snapshot.users.get(current.removeprefix("dual-role:")))
    if resolution is None or resolution.kind == OWN:
        if not playbook.account.create:
            return None
        return PersonView(person, names, None, link=resolution.user if resolution else None)
    if resolution.kind == ADOPT:
        return PersonView(person, names, resolution.user, adopted=True)
    return None


def assign_names(policy: NamingPolicy, roster_path: Path, persons: Sequence[Person],
                 snapshot: Snapshot, managed: Mapping[str, DirectoryUser]) -> dict[str, Names]:
    """Existing accounts keep their names; new people are named in person_id order, so the
    same roster against the same directory always gives the same addresses."""
    taken_upn, taken_nick = snapshot.names_taken()
    namer = Namer(policy, lambda upn: upn.lower() in taken_upn, lambda nick: nick.lower() in taken_nick)
    out: dict[str, Names] = {}
    problems: list[str] = []
    for person in sorted(persons, key=lambda p: p.person_id):
        user = managed.get(person.person_id)
        if user is not None:
            out[person.person_id] = Names(user.upn, user.mail_nickname, policy.display_name(person))
            continue
        try:
            names = namer.assign(person)
        except ValueError as exc:
            problems.append(f"{roster_path}:{person.line}: given_name/surname: {exc}")
            continue
        taken_upn.add(names.upn.lower())
        taken_nick.add(names.mail_nickname.lower())
        out[person.person_id] = names
    if problems:
        raise RosterError(problems)
    return out
