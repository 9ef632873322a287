"""Policies that refuse an apply before it writes anything: the mass-change guard (Entra's
accidental-deletion prevention, ours) and the re-issue guard (a journal that knows nothing of
a playbook whose accounts exist)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import MassChangeError
from .journal import Journal
from .model import Action, Plan
from .playbook import Playbook
from .snapshot import Snapshot, owner_prefix
from .steps import STEPS

if TYPE_CHECKING:
    pass


def check_mass_change(pb: Playbook, plan: Plan, snapshot: Snapshot, allowed: int | None) -> None:
    """Refuse to disable, unlicense or delete more people than the threshold at once, unless
    the operator says how many they expect (Entra's accidental-deletion prevention, ours)."""
    drastic = sorted({c.person_id for c in plan.changes if STEPS[c.step].drastic(c)})
    managed = len(snapshot.managed(owner_prefix(pb)))
    limit = pb.mass_change.threshold(managed)
    if len(drastic) <= limit or allowed == len(drastic):
        return
    shown = ", ".join(f"{pid} ({plan.people[pid].upn})" for pid in drastic[:30])
    more = f" and {len(drastic) - 30} more" if len(drastic) > 30 else ""
    asked = f"; --allow-mass-change {allowed} does not match" if allowed is not None else ""
    raise MassChangeError(
        f"this apply would disable, unlicense or delete {len(drastic)} people, more than the"
        f" threshold of {limit} ({pb.mass_change.ratio:.0%} of {managed} managed accounts, at least"
        f" {pb.mass_change.people}){asked}. Is the roster complete? If this is meant (an election),"
        f" run again with --allow-mass-change {len(drastic)}. People: {shown}{more}")


def check_reissue(pb: Playbook, plan: Plan, snapshot: Snapshot, journal: Journal, reissue: bool) -> None:
    """A journal that knows nothing of this playbook, beside a tenant that holds accounts it
    manages (another state dir made them, or this one was lost): the plan would issue new
    passes and send guides again to people who already have them. Only when asked."""
    if reissue or journal.runs(pb.name):
        return
    managed = snapshot.managed(owner_prefix(pb))
    again = sorted({c.person_id for c in plan.changes if STEPS[c.step].hands_over
                    and c.action is Action.CREATE and c.person_id in managed})
    if again:
        raise MassChangeError(
            f"the journal in this state dir knows nothing of {pb.name}, but {len(managed)} accounts in"
            f" the tenant are managed by it: apply would issue new passes and send guides again to"
            f" {len(again)} people who have theirs ({', '.join(again[:10])}"
            f"{' ...' if len(again) > 10 else ''}). Run from the state dir that made them, or"
            " apply --reissue if new passes and guides are meant")
