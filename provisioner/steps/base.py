"""What a step is: plan (pure: desired state vs snapshot → Changes) and apply (one Change).

Steps never call each other; the apply loop runs a person's Changes in step order and
hands each step the person's account id through ``PersonRun``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Change, Outcome
from ..naming import Names
from ..playbook import Playbook
from ..roster import Person
from ..snapshot import DirectoryUser, Snapshot


@dataclass(frozen=True, slots=True)
class PlanContext:
    playbook: Playbook
    snapshot: Snapshot
    owner_prefix: str


@dataclass(frozen=True, slots=True)
class PersonView:
    """A roster person with the names the policy gave them and their account, if any."""

    person: Person
    names: Names
    user: DirectoryUser | None


@dataclass(slots=True)
class PersonRun:
    """Mutable state of one person during apply."""

    person_id: str
    upn: str
    user_id: str | None
    notes: list[str] = field(default_factory=list)


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
