"""Leavers: managed people no longer in the roster, taken out in stages with dates.

    at once                   sign-in disabled, the official's groups removed, an automatic
                              reply saying where to write instead
    remove_license_after_days the licence removed (the mailbox is kept by Exchange for a while)
    delete_after_days         the account soft-deleted (restorable for 30 days)

Each step says what a leaver loses of what it made (``Step.leave``); this module only puts
their answers in order. Each stage is its own planned change on a later run; until then
`plan` shows it as scheduled. An adopted employee account (dual role, use_existing) is the
employee's: only what the official role added (the groups, our mark) is removed. The day a
person started leaving is the day the first stage was applied (the journal knows it); the
clock is injected.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from .model import Change
from .snapshot import DirectoryUser
from .steps.base import Leaver, PlanContext, Step

LEAVERS = "leavers"


def leaver_changes(ctx: PlanContext, steps: Sequence[Step], pid: str, user: DirectoryUser,
                   now: dt.datetime) -> tuple[list[Change], list[str]]:
    """(the changes due now, the later stages with their dates), asking every step."""
    since_iso = ctx.snapshot.leaving_since.get(pid)
    leaver = Leaver(pid, user, now, dt.datetime.fromisoformat(since_iso) if since_iso else now)
    answers = [step.leave(ctx, leaver) for step in sorted(steps, key=lambda s: s.leave_rank)]
    changes = [c for a in answers for c in a.changes] + [c for a in answers for c in a.last]
    later = sorted((s for a in answers for s in a.scheduled), key=lambda s: (s.rsplit(" ", 1)[-1], s))
    return changes, later
