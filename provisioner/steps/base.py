"""What a step is: plan (pure: desired state vs snapshot → Changes), apply one Change,
read the current state of a Change's target, and say how a Change is undone.

``current`` returns the target's state in the shape of the Change's ``after`` (or, for a
DELETE, its ``before``), or None when the object is not there. With it, resume asks "is
this write already made?" and rollback asks "did someone change this since we did?", in
one place (``is_done`` and ``drift`` below) for every step.

Steps never call each other; the apply loop runs a person's Changes in step order and
hands each step the person's account id through ``PersonRun``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..naming import Names
from ..playbook import Playbook
from ..roster import Person
from ..snapshot import DirectoryUser, Snapshot


@dataclass(frozen=True, slots=True)
class PlanContext:
    playbook: Playbook
    snapshot: Snapshot
    owner_prefix: str
    # What steps notice but is not a change: a device awaiting enrolment (person_id → why).
    awaiting: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    cohort_of: dict[str, str] = field(default_factory=dict)  # person_id → cohort
    starts: dict[str, str] = field(default_factory=dict)     # person_id → cohort start date


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


REVERSIBLE = "reversible"    # an attribute, a membership, a licence
COMPENSABLE = "compensable"  # a created user: soft-deleted on undo, restorable for 30 days
ONE_WAY = "one-way"          # cannot be undone (an e-mail already sent)


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


class Step(Protocol):
    name: ClassVar[str]

    def plan(self, ctx: PlanContext, view: PersonView) -> list[Change]: ...

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome: ...

    def reversibility(self, change: Change) -> str: ...

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None: ...

    def undo(self, change: Change, before_image: Json | None) -> Change | None: ...


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
