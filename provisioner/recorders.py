"""The journal and the audit log as hooks on the apply loop."""

from __future__ import annotations

import contextlib
from typing import Any

from .journal import Journal
from .logs import scrub
from .model import Change, Outcome
from .rollout import ChangeResult, Hook
from .steps import STEPS, PersonRun

# Outcomes after which Graph was asked to write (a PENDING mailbox was only read).
WROTE = (Outcome.APPLIED, Outcome.UNCHANGED, Outcome.FAILED)


class JournalHook(Hook):
    """Intent before the write, outcome after, with the image an undo needs."""

    def __init__(self, journal: Journal, run_id: str, cohort: str | None = None,
                 undo_of: dict[str, int] | None = None,
                 goes_with: dict[str, list[int]] | None = None) -> None:
        self.journal = journal
        self.run_id = run_id
        self.cohort = cohort
        self.undo_of = undo_of or {}
        # rollback: a deleted user's change id → the journal rows that went with the user
        self.goes_with = goes_with or {}
        self._seq: dict[str, int] = {}
        self.done: dict[str, int] = {}  # change id → seq of its applied (or unchanged) row

    def starting(self) -> contextlib.AbstractContextManager[object]:
        return self.journal.transaction()  # the intents of a round: one commit

    def started(self, change: Change, run: PersonRun) -> None:
        self._seq[change.id] = self.journal.intend(
            self.run_id, change, reversibility=STEPS[change.step].reversibility(change),
            cohort=self.cohort, upn=run.upn, object_id=run.user_id, before_image=change.before,
            undo_of=self.undo_of.get(change.id))

    def attempted(self, result: ChangeResult, run: PersonRun) -> None:
        seq = self._seq.pop(result.change.id)
        if result.outcome in (Outcome.APPLIED, Outcome.UNCHANGED):
            self.done[result.change.id] = seq
        # A change still waiting on Graph (a mailbox) is tried again: this attempt only waited.
        state = "waiting" if result.outcome is Outcome.PENDING else result.outcome.value
        self.journal.record(seq, state, object_id=run.user_id,
                            before_image=run.observed.get(result.change.id),
                            request_id=result.request_id, error_code=result.code,
                            message=result.message if result.outcome is not Outcome.APPLIED else None)
        if result.change.id in self.done and self.goes_with.get(result.change.id):
            # At once, not when the rollback ends: a rollback killed after this user's delete
            # must not find the user's licence and memberships still waiting to be undone.
            self.journal.mark_undone(self.goes_with[result.change.id], by=seq)

    def finished(self, result: ChangeResult) -> None:
        if result.outcome is Outcome.SKIPPED:  # never attempted: no intent was written
            change = result.change
            seq = self.journal.intend(self.run_id, change,
                                      reversibility=STEPS[change.step].reversibility(change),
                                      cohort=self.cohort, upn=None, object_id=None,
                                      before_image=change.before)
            self.journal.record(seq, Outcome.SKIPPED.value, message=result.message)


class AuditHook(Hook):
    """One audit record per Graph write: whose (person_id, UPN, object id), what (step,
    action, target, the values before and after, secrets redacted), the outcome and Graph's
    request-id. ``audit`` is the log bound to the run (run id, cohort, playbook and its
    digest, the identity Graph saw), on top of the operator, host and tool version that every
    record carries."""

    def __init__(self, audit: Any) -> None:
        self.audit = audit

    def attempted(self, result: ChangeResult, run: PersonRun) -> None:
        if result.outcome not in WROTE:
            return
        c = result.change
        self.audit.msg("graph_write", change_id=c.id, person_id=c.person_id, step=c.step,
                       action=c.action.value, target=c.target, upn=run.upn, object_id=run.user_id,
                       before=scrub(run.observed.get(c.id, c.before)), after=scrub(c.after),
                       outcome=result.outcome.value, request_id=result.request_id,
                       error_code=result.code)
