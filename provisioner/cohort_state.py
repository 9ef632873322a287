"""A cohort's life as an explicit state machine: where it can go from where it is.

    pending ──► applying ──► verifying ─┬─► passed
       │            │        soaking    ├─► failed ──► rolled back
       │            │  awaiting approval┘
       └──► held ◄──┘  (guides cannot be delivered in time)

Judged states (the gates' verdicts) are reached only by judging a cohort that was applied:
a pending, held or rolled-back cohort cannot pass. Applying again is allowed from anywhere
(a roster that grew, a fix after a failure); ``Journal.set_cohort_state`` refuses the rest.
"""

from __future__ import annotations

import enum


class CohortState(enum.StrEnum):
    PENDING = "pending"
    APPLYING = "applying"
    VERIFYING = "verifying"
    SOAKING = "soaking"
    AWAITING_APPROVAL = "awaiting approval"
    PASSED = "passed"
    FAILED = "failed"
    HELD = "held"
    ROLLED_BACK = "rolled back"

    @property
    def waiting(self) -> bool:
        return self in WAITING

    @property
    def halts(self) -> bool:
        """The rollout stops here until a human acts."""
        return self in (CohortState.FAILED, CohortState.ROLLED_BACK, CohortState.HELD)


WAITING = frozenset({CohortState.VERIFYING, CohortState.SOAKING, CohortState.AWAITING_APPROVAL})
JUDGED = WAITING | {CohortState.PASSED, CohortState.FAILED}
_ANYWHERE = frozenset({CohortState.APPLYING, CohortState.HELD, CohortState.ROLLED_BACK})

TRANSITIONS: dict[CohortState, frozenset[CohortState]] = {
    CohortState.PENDING: _ANYWHERE,
    CohortState.APPLYING: _ANYWHERE | JUDGED,
    **{s: _ANYWHERE | JUDGED for s in WAITING},
    CohortState.PASSED: _ANYWHERE,
    CohortState.FAILED: _ANYWHERE,
    CohortState.HELD: _ANYWHERE,
    CohortState.ROLLED_BACK: _ANYWHERE,
}


class IllegalTransition(RuntimeError):
    """A bug, not an operator's mistake: the tool tried to move a cohort where it cannot go."""


def advance(old: CohortState, new: CohortState) -> CohortState:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"a cohort cannot go from {old} to {new}")
    return new
