"""What a step is: one module owns everything about one kind of change.

A step declares its playbook section (schema), what it reads into the snapshot, its plan
(pure: desired state vs snapshot → Changes and notes), how it applies, reads back and undoes
a Change, what a leaver loses, its verify checks, the Graph requests it makes (permissions),
its preflight checks and which of its changes can share one write. ``BaseStep`` gives every
answer a default, so a step says only what is particular to it; ``steps/__init__.py`` lists
the steps, and the rest of the code asks them, never matching a step's name.

``current`` returns the target's state in the shape of the Change's ``after`` (or, for a
DELETE, its ``before``), or None when the object is not there. With it, resume asks "is
this write already made?" and rollback asks "did someone change this since we did?", in
one place (``is_done`` and ``drift`` below) for every step.

Steps never call each other; the apply loop runs a person's Changes in step order and
hands each step the person's account id through ``PersonRun``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from ..checks import Check
from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..naming import Names
from ..roster import Person
from ..snapshot import DirectoryUser, Snapshot

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..model import Plan
    from ..playbook import Playbook


Problems = dict[str, list[str]]  # person_id → what is wrong


class Reversibility(enum.StrEnum):
    REVERSIBLE = "reversible"    # an attribute, a membership, a licence
    COMPENSABLE = "compensable"  # a created user: soft-deleted on undo, restorable for 30 days
    ONE_WAY = "one-way"          # cannot be undone (an e-mail already sent)


REVERSIBLE, COMPENSABLE, ONE_WAY = Reversibility


@dataclass(frozen=True, slots=True)
class PlanContext:
    playbook: Playbook
    snapshot: Snapshot
    owner_prefix: str
    cohort_of: Mapping[str, str] = field(default_factory=dict)  # person_id → cohort
    starts: Mapping[str, str] = field(default_factory=dict)     # person_id → cohort start date


class StepPlan(NamedTuple):
    """What a step plans for one person: its changes, and what it noticed that is not a change.
    (A NamedTuple, made four times a person: a frozen dataclass takes three times as long.)"""

    changes: Sequence[Change] = ()
    notes: Sequence[str] = ()      # for the admin to act on (a name change, an unknown model)
    awaiting: str | None = None    # a device awaiting enrolment: why


@dataclass(frozen=True, slots=True)
class Leaver:
    """A managed person no longer in the roster, and the day they started leaving."""

    person_id: str
    user: DirectoryUser
    now: dt.datetime
    since: dt.datetime  # the day the first leaver stage was applied (now, the first time)


@dataclass(frozen=True, slots=True)
class Leaving:
    changes: Sequence[Change] = ()
    scheduled: Sequence[str] = ()  # later stages, with their dates
    last: Sequence[Change] = ()    # after every step's other changes (the account's deletion)


@dataclass(frozen=True, slots=True)
class Planned:
    """What preflight's plan checks look at: the plan, the next cohort's part of it, and the
    snapshot it was made from."""

    playbook: Playbook
    snapshot: Snapshot
    plan: Plan
    part: Plan
    cohort: str | None  # the next cohort (None: the whole plan)

    @property
    def who(self) -> str:
        return f"cohort {self.cohort}" if self.cohort else "the plan"


@dataclass(frozen=True, slots=True)
class VerifyFacts:
    """What the verify gate has read about the people it checks, for each step's checks."""

    playbook: Playbook
    people: Sequence[Person]
    upns: Mapping[str, str]                       # person_id → userPrincipalName
    users: Mapping[str, Json]                     # person_id → their account as read now
    last_applied: Mapping[str, Mapping[str, str]]  # step → person_id → when its change was made
    # What does not change while the gate polls (the tenant's SKUs, the groups' ids): read in
    # the first round, kept for the next ones (the gate passes the same dict every round).
    kept: dict[str, Any] = field(default_factory=dict)

    async def once(self, key: str, read: Callable[[], Awaitable[Any]]) -> Any:
        if key not in self.kept:
            self.kept[key] = await read()
        return self.kept[key]


@dataclass(frozen=True, slots=True)
class PersonView:
    """A roster person with the names the policy gave them and their account, if any."""

    person: Person
    names: Names
    user: DirectoryUser | None
    adopted: bool = False             # user is an existing account taken over (use_existing)
    link: DirectoryUser | None = None  # separate_account: the employee account to link to


@dataclass(slots=True)
class PersonRun:
    """Mutable state of one person during apply."""

    person_id: str
    upn: str
    user_id: str | None
    # What a step saw just before its write, where the plan could not know it (a new
    # mailbox's settings): the journal keeps it as the image to undo to.
    observed: dict[str, Json] = field(default_factory=dict)
    # First sign-in secrets made in this run, for this person's guide only: in memory, never
    # journaled, logged or audited.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    pass_id: str | None = None  # the id (never the secret) of the pass issued in this run
    state_dir: Path | None = None  # where files a step writes (guides) live


class Step(Protocol):
    """Everything the rest of the tool asks a step. ``BaseStep`` answers each by default."""

    name: ClassVar[str]
    section: ClassVar[str | None]                 # its playbook key
    schema: ClassVar[type[BaseModel] | None]      # that section's model
    holds_account: ClassVar[bool]   # its failure stops the person; its create is the account
    goes_with_user: ClassVar[bool]  # undone by deleting the user it was made on
    hands_over: ClassVar[bool]      # reaches the person (a pass, a guide): not re-sent unasked
    guide: ClassVar[bool]           # the person's guide: gates check it was delivered in time
    manages_devices: ClassVar[bool]  # the person's roster device is enrolled in Intune (compliant)
    undo_rank: ClassVar[int]        # rollback lists steps from the lowest rank
    leave_rank: ClassVar[int]       # leaver changes go from the lowest rank
    verify_checks: ClassVar[tuple[str, ...]]  # the verify gate's checks it answers

    def check(self, playbook: Playbook) -> list[str]: ...
    def groups(self, playbook: Playbook, person: Person | None) -> list[str]: ...
    async def read(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> dict[str, Any]: ...
    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan: ...
    def warnings(self, ctx: PlanContext, changes: Sequence[Change]) -> list[str]: ...
    def leave(self, ctx: PlanContext, leaver: Leaver) -> Leaving: ...
    def drastic(self, change: Change) -> bool: ...
    def operations(self, playbook: Playbook) -> dict[str, str]: ...
    def preflight(self, planned: Planned) -> list[Check]: ...
    async def tenant_preflight(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> list[Check]: ...
    async def verify(self, graph: Graph, facts: VerifyFacts, checks: Sequence[str]) -> Problems: ...
    def batch_key(self, change: Change) -> str | None: ...
    async def ready(self, graph: Graph, waiting: list[tuple[Change, PersonRun]]) -> list[Change]: ...
    def reversibility(self, change: Change) -> Reversibility: ...
    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None: ...
    def undo(self, change: Change, before_image: Json | None) -> Change | None: ...
    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome: ...


class BaseStep:
    """The defaults: no section, nothing read, nothing lost when leaving, reversible, each
    change its own write. A step overrides what is particular to it."""

    name: ClassVar[str]
    section: ClassVar[str | None] = None
    schema: ClassVar[type[BaseModel] | None] = None
    requires: ClassVar[dict[str, str]] = {}  # step → why it must be listed too
    holds_account: ClassVar[bool] = False
    goes_with_user: ClassVar[bool] = True
    hands_over: ClassVar[bool] = False
    guide: ClassVar[bool] = False
    manages_devices: ClassVar[bool] = False
    undo_rank: ClassVar[int] = 50
    leave_rank: ClassVar[int] = 50
    verify_checks: ClassVar[tuple[str, ...]] = ()

    def spec(self, playbook: Playbook) -> Any:
        """This step's section of the playbook."""
        return playbook.section(self.section) if self.section else None

    def check(self, playbook: Playbook) -> list[str]:
        """Why the playbook cannot run this step as written (with ``steps:`` listing it)."""
        problems = []
        if self.schema is not None and self.spec(playbook) is None:
            problems.append(f"steps: `{self.name}` is listed but the `{self.section}` section is missing")
        problems += [f"steps: `{self.name}` needs `{other}` ({why})"
                     for other, why in self.requires.items() if other not in playbook.steps]
        return problems

    def groups(self, playbook: Playbook, person: Person | None) -> list[str]:
        """The groups (by displayName) this step puts ``person`` in; with None, every group
        it manages for anyone (a mover leaves the ones no longer theirs)."""
        return []

    async def read(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> dict[str, Any]:
        """What this step adds to the snapshot (fields of ``Snapshot``), read once in bulk."""
        return {}

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        raise NotImplementedError

    def warnings(self, ctx: PlanContext, changes: Sequence[Change]) -> list[str]:
        return []

    def leave(self, ctx: PlanContext, leaver: Leaver) -> Leaving:
        return Leaving()

    def drastic(self, change: Change) -> bool:
        """Does the change disable, unlicense or delete a person (the mass-change guard)?"""
        return False

    def operations(self, playbook: Playbook) -> dict[str, str]:
        """gateway method → what this step uses it for (permissions.py has the table)."""
        return {}

    def preflight(self, planned: Planned) -> list[Check]:
        """Checks on what the next cohort (``planned.part``) would do."""
        return []

    async def tenant_preflight(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> list[Check]:
        """Checks on the tenant's settings that need no plan."""
        return []

    async def verify(self, graph: Graph, facts: VerifyFacts, checks: Sequence[str]) -> dict[str, list[str]]:
        """person_id → what is wrong, for this step's ``verify_checks`` among ``checks``."""
        return {}

    def batch_key(self, change: Change) -> str | None:
        """Changes with the same key go in one write (memberships of one group)."""
        return None

    async def ready(self, graph: Graph, waiting: list[tuple[Change, PersonRun]]) -> list[Change]:
        """Which of these changes Graph is ready for now (cheap batched reads)."""
        return [c for c, _ in waiting]

    def reversibility(self, change: Change) -> Reversibility:
        return REVERSIBLE

    def undo(self, change: Change, before_image: Json | None) -> Change | None:
        return inverse(change, before_image)


def verifies(playbook: Playbook, check: str) -> bool:
    """Does some cohort's verify gate run ``check``? (No checks listed: all of them.)"""
    return any(c.gates.verify is not None and (not c.gates.verify.checks or check in c.gates.verify.checks)
               for c in playbook.cohorts)


def memberships(why: str) -> dict[str, str]:
    """The gateway methods of adding people (or devices) to groups found by name."""
    return {"list_groups": "find the playbook's groups by name", "group_member_ids": "read group members",
            "member_of": "read a person's memberships", "bind_members": why, "add_member": why,
            "remove_member": why}


def membership_key(change: Change) -> str | None:
    """The group a change adds its person to, when it is only that (so it can be batched)."""
    if change.action is Action.CREATE and change.after:
        group_id = change.after.get("groupId")
        return str(group_id) if group_id else None
    return None


def shape(change: Change) -> Json | None:
    return change.before if change.action is Action.DELETE else change.after


def project(state: Json | None, keys: Json | None) -> Json | None:
    if state is None or keys is None:
        return state
    return {k: state.get(k) for k in keys}


def is_done(change: Change, current: Json | None) -> bool:
    """Is the change's end state in place? (resume: reconcile an intent)"""
    if change.action is Action.DELETE:
        return current is None
    return project(current, change.after) == change.after


def drift(undo: Change, current: Json | None) -> str | None:
    """Why an undo must not go ahead: the object is not as the tool left it. None: go."""
    if undo.before is None or is_done(undo, current):
        return None
    if current is None:
        return f"{undo.target} no longer exists"
    diffs = [f"{k} is {current.get(k)!r}, the tool left {v!r}"
             for k, v in undo.before.items() if current.get(k) != v]
    return f"{undo.target} changed since the tool changed it: " + "; ".join(diffs) if diffs else None


async def removal(remove: Awaitable[None]) -> Outcome:
    """A removal through Graph; a 404 means it is already gone (a retry, or someone else)."""
    try:
        await remove
    except GraphError as exc:
        if exc.status == 404:
            return Outcome.UNCHANGED
        raise
    return Outcome.APPLIED


ALREADY_MEMBER = "One or more added object references already exist"


async def add_member(graph: Graph, group_id: str, member_id: str) -> Outcome:
    """One membership (the apply loop batches many into one write; this is the single path)."""
    try:
        await settle(lambda: graph.add_member(group_id, member_id), lambda exc: exc.status == 404)
    except GraphError as exc:
        if exc.status == 400 and ALREADY_MEMBER in exc.message:
            return Outcome.UNCHANGED
        raise
    return Outcome.APPLIED


async def settle(write: Callable[[], Awaitable[None]], lagging: Callable[[GraphError], bool],
                 timeout: float = 30.0) -> None:
    """Run ``write``, retrying while Graph's replicas have not caught up with a just-made object
    (Entra is eventually consistent: a new user can be unknown to the next request)."""
    delay, waited = 0.5, 0.0
    while True:
        try:
            await write()
            return
        except GraphError as exc:
            if not lagging(exc) or waited >= timeout:
                raise
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 8.0)


def inverse(change: Change, before_image: Json | None) -> Change | None:
    """The usual undo: a CREATE is deleted; an UPDATE gets its before-image back."""
    if change.action is Action.CREATE:
        return Change(change.step, change.person_id, Action.DELETE, change.target, change.after, None)
    if change.action is Action.UPDATE and before_image is not None:
        return Change(change.step, change.person_id, Action.UPDATE, change.target, change.after,
                      before_image)
    if change.action is Action.DELETE and change.before is not None:
        return Change(change.step, change.person_id, Action.CREATE, change.target, None, change.before)
    return None
