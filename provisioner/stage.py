"""One cohort's stage: canaries first (verified before any real person), then its people,
then its gates; on failure, halt or roll the cohort back. And which cohort goes next."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from . import clock
from .cohort_state import CohortState
from .cohorts import Assignment, is_canary
from .errors import InputError
from .gates import (
    FAIL,
    PASS,
    GateContext,
    GateResult,
    cohort_state,
    evaluate,
    guides_late,
    verdict_of,
    verify_people,
)
from .graph.gateway import Graph
from .journal import Journal
from .leavers import LEAVERS
from .model import PREREQUISITES, Json, Outcome, Plan
from .playbook import Cohort, Gates, Playbook, Selector, VerifyGate
from .recorders import AuditHook, JournalHook
from .rolling_back import RolledBack, rollback_with
from .rollout import ChangeResult, Hook, Report, apply_plan
from .session import Loaded, Session
from .steps import PersonRun, guide_step

if TYPE_CHECKING:
    pass


log = structlog.get_logger("provisioner.stage")


@dataclass
class CohortOutcome:
    cohort: str
    plan: Plan
    report: Report | None = None      # what was applied now (None: nothing to apply)
    gates: list[GateResult] = field(default_factory=list)
    state: CohortState = CohortState.PENDING
    run_ids: list[str] = field(default_factory=list)
    rolled_back: RolledBack | None = None
    made: dict[str, str] = field(default_factory=dict)  # groups.create: group name → id

    def to_json(self) -> Json:
        counts = self.report.counts() if self.report else {}
        failed = [{"step": r.change.step, "person_id": r.change.person_id, "target": r.change.target,
                   "code": r.code, "message": r.message, "request_id": r.request_id}
                  for r in (self.report.failed if self.report else [])]
        return {"cohort": self.cohort, "state": self.state, "run_ids": self.run_ids,
                "outcomes": dict(counts), "failed": failed,
                "held": [{"person_id": pid, "reason": why} for pid, why in sorted(self.plan.held.items())],
                "gates": [g.to_json() for g in self.gates], "rolled_back": self.rolled_back is not None}


LEAVERS_COHORT = Cohort(name=LEAVERS, select=Selector(rest=True), gates=Gates(max_failure_ratio=None))


def next_cohort(journal: Journal, playbook: str, assignment: Assignment,
                 requested: str | None, plan: Plan) -> Cohort | None:
    """The cohort to apply: the first that has not passed, or that has changes again (a
    roster that grew, a mailbox still pending). Predecessors of a requested one must pass."""
    if requested is not None:
        wanted = assignment.cohort(requested)
        for before in assignment.predecessors(requested):
            state = journal.cohort_state(playbook, before.name).state
            if state != CohortState.PASSED:
                raise InputError(f"cohort {requested} comes after {before.name}, which has not"
                                 f" passed its gates (it is {state})")
        return wanted
    pending = {plan.cohort_of.get(c.person_id) for c in plan.changes}
    for c in assignment.order:
        state = journal.cohort_state(playbook, c.name).state
        if state == CohortState.PASSED and c.name not in pending:
            continue
        if state == CohortState.ROLLED_BACK:
            raise InputError(f"cohort {c.name} failed its gates and was rolled back; fix the cause"
                             f" (see `provisioner status`), then `apply --cohort {c.name}` to try again")
        return c
    return None


def next_step(journal: Journal, pb: Playbook, assignment: Assignment,
               outcomes: list[CohortOutcome]) -> str:
    if not pb.cohorts:
        return ""
    if outcomes and outcomes[-1].state != CohortState.PASSED:
        last = outcomes[-1]
        if last.state == CohortState.ROLLED_BACK:
            return (f"Cohort {last.cohort} failed its gates and was rolled back (on_failure:"
                    " rollback). The rollout is halted.")
        if last.state == CohortState.HELD:
            return (f"Cohort {last.cohort} is held: its guides could not reach everyone in time"
                    " (see above). Move its `starts` date, or lower guide.lead_days, then apply.")
        if last.state == CohortState.FAILED:
            return (f"Cohort {last.cohort} failed its gates; the rollout is halted. Fix the cause,"
                    f" then `provisioner apply {pb.source}` re-applies and re-checks it, or"
                    f" `provisioner rollback {pb.source} --cohort {last.cohort}` undoes it.")
        waiting = next((g for g in last.gates if g.status == "wait"), None)
        why = f": {waiting.detail}" if waiting else ""
        return f"Cohort {last.cohort} is {last.state}{why}. Run apply again to re-check its gates."
    nxt = next((c for c in assignment.order
                if journal.cohort_state(pb.name, c.name).state != CohortState.PASSED), None)
    if nxt is None:
        return "Every cohort has passed its gates. The rollout is complete."
    return (f"Next: cohort {nxt.name} ({len(assignment.members[nxt.name])} people):"
            f" `provisioner apply {pb.source}` (or --all to go on while gates pass).")


class Stage:
    """One cohort: canaries first (verified before any real person), then its people,
    then its gates; on failure, halt or roll the cohort back."""

    def __init__(self, graph: Graph, journal: Journal, session: Session, loaded: Loaded,
                 assignment: Assignment, hooks: Sequence[Hook]) -> None:
        self.graph, self.journal, self.session = graph, journal, session
        self.loaded, self.assignment, self.hooks = loaded, assignment, hooks
        self.pb = loaded.playbook

    async def run(self, cohort: Cohort, plan: Plan,
                  confirm: Callable[[Plan], bool] | None) -> CohortOutcome | None:
        with structlog.contextvars.bound_contextvars(cohort=cohort.name):  # on every log line
            return await self._run(cohort, plan, confirm)

    async def _run(self, cohort: Cohort, plan: Plan,
                   confirm: Callable[[Plan], bool] | None) -> CohortOutcome | None:
        if plan.changes and confirm is not None and not confirm(plan):
            return None
        name = cohort.name
        # People held for a dual-role decision have nothing made yet: gates skip them.
        members = [p for p in self.assignment.members[name] if p.person_id not in plan.held]
        outcome = CohortOutcome(name, plan)
        guide = guide_step(self.pb)
        delivered = self.journal.last_applied(self.pb.name, guide.name) if guide is not None else {}
        late = guides_late(self.pb, cohort, members, delivered, clock.now())
        if late is not None:  # too late to deliver guides in time: the cohort does not start
            return await self._settle(cohort, outcome, [late], state=CohortState.HELD)
        self.journal.set_cohort_state(self.pb.name, name, CohortState.APPLYING)
        canaries = [p for p in members if is_canary(p.person_id)]
        if canaries:
            await self._apply(outcome, plan.only(people={p.person_id for p in canaries}))
            found = await verify_people(self._ctx(name, canaries, plan), canaries,
                                        cohort.gates.verify or VerifyGate(timeout=120, interval=5))
            check = verdict_of(found, gate="canary")
            check = GateResult("canary", check.status, f"canary accounts: {check.detail}", check.people)
            if check.status != PASS:
                return await self._settle(cohort, outcome, [check])
            outcome.gates.append(check)
            signin = await self._canary_signin(canaries, plan)
            if signin.status != PASS:
                return await self._settle(cohort, outcome, [*outcome.gates, signin])
            outcome.gates.append(signin)
        real = {p.person_id for p in members if not is_canary(p.person_id)}
        if name == LEAVERS:  # not in the roster any more: their people are the plan's
            real = set(plan.people)
        await self._apply(outcome, plan.only(people=real))
        old = self.journal.cohort_state(self.pb.name, name)
        self.journal.set_cohort_state(self.pb.name, name, CohortState.VERIFYING,
                                      applied=outcome.report is not None or old.applied_at is None)
        applied_at = self.journal.cohort_state(self.pb.name, name).applied_at
        results = await evaluate(self._ctx(name, members, plan, applied_at), cohort.gates, clock.now())
        return await self._settle(cohort, outcome, [*outcome.gates, *results])

    async def make_groups(self, plan: Plan) -> CohortOutcome:
        """groups.create: the groups the playbook owns and lacks, made (and the licensing group
        given its SKU) before any cohort, journaled like any change; ``outcome.made`` maps each
        name to the id Graph gave it."""
        outcome = CohortOutcome(PREREQUISITES, plan)
        found = _GroupIds()
        await self._apply(outcome, plan, extra=[found])
        outcome.made = found.ids
        outcome.state = CohortState.PASSED if outcome.report and outcome.report.ok else CohortState.FAILED
        return outcome

    async def _canary_signin(self, canaries: Sequence[Any], plan: Plan) -> GateResult:
        """Would Conditional Access let the canaries sign in as their people will? What If
        for the accounts just made."""
        from .preflight import canary_signins
        from .signin import problems
        from .steps.groups import static_groups

        upns = {pid: t.upn for pid, t in plan.people.items()}
        found = await canary_signins(self.graph, list(canaries), upns)
        blocked = problems(found, static_groups(self.pb))
        if blocked:
            people = {p.person_id: [h.policy for w in p.ways for h in w.blocked_by]
                      for p in found if p.verdict != "ok"}
            return GateResult("canary sign-in", FAIL, "; ".join(blocked), people)
        return GateResult("canary sign-in", PASS, f"What If lets {len(found)} canary accounts sign in"
                          " every way their people will")

    def _ctx(self, name: str, people: Sequence[Any], plan: Plan,
             applied_at: str | None = None) -> GateContext:
        return GateContext(self.graph, self.pb, self.journal, name, people,
                           {pid: t.upn for pid, t in plan.people.items()}, applied_at)

    async def _apply(self, outcome: CohortOutcome, plan: Plan, extra: Sequence[Hook] = ()) -> None:
        if not plan.changes:
            return
        run_id = self.journal.start_run("apply", self.pb.name, str(self.pb.source), self.pb.digest)
        self.session.run_ids.append(run_id)
        outcome.run_ids.append(run_id)
        recorders = [JournalHook(self.journal, run_id, cohort=outcome.cohort),
                     AuditHook(self.session.audited_run(run_id, self.pb, outcome.cohort))]
        try:
            with structlog.contextvars.bound_contextvars(run_id=run_id):
                report = await apply_plan(self.graph, plan, [*recorders, *extra, *self.hooks],
                                          mailbox_wait=mailbox_wait(self.pb),
                                          state_dir=self.session.settings.state_dir)
        except BaseException:
            self.journal.finish_run(run_id, "interrupted")
            raise
        self.journal.finish_run(run_id, "completed" if report.ok else "failed")
        outcome.report = report if outcome.report is None else Report(
            [*outcome.report.results, *report.results])

    async def _settle(self, cohort: Cohort, outcome: CohortOutcome,
                      results: list[GateResult], state: CohortState | None = None) -> CohortOutcome:
        outcome.gates = results
        outcome.state = state or cohort_state(results)
        report = {"gates": [r.to_json() for r in results]}
        self.journal.set_cohort_state(self.pb.name, cohort.name, outcome.state, report=report)
        self.session.audit.event("gates", cohort=cohort.name, state=outcome.state,
                                 run_ids=outcome.run_ids,
                                 gates={r.gate: r.status for r in results})
        for r in results:
            log.info("gate.judged", gate=r.gate, status=r.status, detail=r.detail, people=len(r.people))
        log.info("cohort.state", state=outcome.state)
        if outcome.state == CohortState.HELD:
            return outcome
        if outcome.state == CohortState.FAILED and cohort.on_failure == "rollback":
            outcome.rolled_back = await rollback_with(
                self.graph, self.journal, self.session, self.loaded, self.hooks, cohort=cohort.name)
            if outcome.rolled_back.report is None or outcome.rolled_back.report.ok:
                outcome.state = CohortState.ROLLED_BACK
                self.journal.set_cohort_state(self.pb.name, cohort.name, outcome.state)
        return outcome


class _GroupIds(Hook):
    """The id Graph gave each group made (a group's run holds it as its object id)."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def attempted(self, result: ChangeResult, run: PersonRun) -> None:
        if result.outcome in (Outcome.APPLIED, Outcome.UNCHANGED) and run.user_id:
            self.ids[run.upn] = run.user_id


def mailbox_wait(playbook: Playbook) -> float:
    return playbook.mailbox_settings.wait_seconds if playbook.mailbox_settings else 0.0
