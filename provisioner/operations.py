"""What each command does, between the thin CLI and the pure core: load, connect, plan, apply."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import structlog

from .checks import Check, CheckStatus
from .cohort_state import CohortState
from .cohorts import Assignment, assign
from .errors import GraphError, InputError, MassChangeError
from .graph.gateway import Graph
from .guards import check_mass_change, check_reissue
from .heap import collector_off
from .journal import operator
from .leavers import LEAVERS
from .model import PREREQUISITES, Outcome, Plan
from .planner import make_plan
from .playbook import ApprovalGate, Playbook
from .preflight import (
    failures,
    permissions_check,
    plan_checks,
    predict_signins,
    raise_if_failed,
    signin_check,
    tenant_checks,
)
from .reconcile import Reconciled, RollbackPlan, reconcile
from .reports import Status, devices_report, dual_roles, status
from .rolling_back import RolledBack, rollback_with
from .rollout import Hook, Report
from .saved_plan import check_fresh, read_saved_plan, save_plan
from .session import Loaded, Session, Settings, anchor_key, connect, load, open_sandbox
from .signin import Prediction
from .snapshot import Snapshot, read_snapshot
from .stage import LEAVERS_COHORT, CohortOutcome, Stage, next_cohort, next_step
from .steps import guide_step, needed_groups, used
from .steps.groups import GroupsStep, group_names, own_groups, with_group_ids

if TYPE_CHECKING:
    pass

# What the CLI calls: each command's one function, here or in the module that owns it.
__all__ = ["Applied", "Loaded", "Preflight", "RolledBack", "Session", "Settings", "Status", "anchor_key",
           "apply", "approve", "check_fresh", "devices_report", "dual_roles", "load", "open_sandbox", "plan",
           "preflight", "read_saved_plan", "rollback", "save_plan", "settle", "status"]

log = structlog.get_logger("provisioner")


async def plan(session: Session, loaded: Loaded) -> tuple[Plan, Preflight]:
    """The plan, and the preflight of the cohort it would apply next (both read-only).
    Planning makes a few objects a change (50,000 changes: millions) and no cycles: the
    cycle collector stays out meanwhile (it looked through them 1,100 times, 1.1 s of 8.5 s of
    CPU) and leaves them alone after (`gc.freeze`: they live as long as the command)."""
    with collector_off():
        async with connect(session, loaded.playbook) as graph:
            assignment = assign(loaded.playbook, loaded.roster)
            snapshot = await _snapshot(graph, loaded, assignment, session)
            result = make_plan(loaded.playbook, loaded.roster, snapshot, assignment)
            ready = await _preflight_with(graph, session, loaded, assignment, snapshot, result)
    gc.freeze()
    return result, replace(ready, refusal=_refusal(loaded.playbook, result, snapshot, session))


def _refusal(pb: Playbook, result: Plan, snapshot: Snapshot, session: Session) -> str | None:
    """What apply's guards would refuse in this plan (as apply would, without the flags that
    allow it): a pipeline learns it from the plan, before a human approves."""
    try:
        check_mass_change(pb, result, snapshot, None)
        with session.journal(pb) as journal:
            check_reissue(pb, result, snapshot, journal, False)
    except MassChangeError as exc:
        return str(exc)
    return None


async def _snapshot(graph: Graph, loaded: Loaded, assignment: Assignment,
                    session: Session | None = None) -> Snapshot:
    pb = loaded.playbook
    everyone = _everyone(assignment)
    # The user groups the playbook manages memberships of (a mover or leaver leaves them).
    templates = pb.groups.names if GroupsStep.name in pb.steps else ()
    mine = {n for p in everyone for n in group_names(templates, p)}
    guides, since, uncertain = {}, {}, frozenset[str]()
    guide = guide_step(pb)
    if session is not None:
        with session.journal(pb) as journal:  # what the journal knows that the directory cannot say
            mine |= journal.added_groups(pb.name)
            guides = journal.last_applied(pb.name, guide.name) if guide is not None else {}
            since = journal.leaving_since(pb.name)
            uncertain = frozenset(journal.uncertain(pb.name))
    needed = set(needed_groups(pb, everyone)) | mine
    try:
        snapshot = await read_snapshot(graph, pb, loaded.roster, needed, used(pb))
    except GraphError as exc:
        if exc.status == 403:  # say which permission is missing, as preflight would
            raise_if_failed([await permissions_check(graph, pb)])
        raise
    # The directory (a million objects for 50,000 users) lives as long as the command: the
    # cycle collector need not look through it again each time planning makes a few thousand
    # objects.
    gc.freeze()
    snapshot = own_groups(pb, everyone, snapshot)  # groups.create: as apply will have made them
    return replace(snapshot, guides=guides, leaving_since=since, playbook_groups=frozenset(mine),
                   uncertain=uncertain)


def _everyone(assignment: Assignment) -> list[Any]:
    return [p for people in assignment.members.values() for p in people]


@dataclass(frozen=True, slots=True)
class Preflight:
    checks: list[Check]
    cohort: str | None
    refusal: str | None = None  # plan: what the mass-change or re-issue guard would refuse
    plan: Plan | None = field(default=None, repr=False, compare=False)  # the one it judged

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ok, "cohort": self.cohort, "refusal": self.refusal,
                "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks]}

    @property
    def ok(self) -> bool:
        return not failures(self.checks)


async def preflight(session: Session, loaded: Loaded) -> Preflight:
    """Is the tenant ready for the next cohort? Reads only."""
    async with connect(session, loaded.playbook) as graph:
        assignment = assign(loaded.playbook, loaded.roster)
        snapshot = await _snapshot(graph, loaded, assignment, session)
        return await _preflight_with(graph, session, loaded, assignment, snapshot)


async def _preflight_with(graph: Graph, session: Session, loaded: Loaded, assignment: Assignment,
                          snapshot: Snapshot, plan: Plan | None = None) -> Preflight:
    pb = loaded.playbook
    checks = await tenant_checks(graph, pb, _everyone(assignment), snapshot)
    if any(c.name == "groups" and c.status is CheckStatus.FAIL for c in checks):
        return Preflight([*checks, Check("plan checks", CheckStatus.SKIP, "fix the groups first")], None)
    plan = plan or make_plan(pb, loaded.roster, snapshot, assignment)
    with session.journal(pb) as journal:
        try:
            nxt = next_cohort(journal, pb.name, assignment, None, plan)
        except InputError:
            nxt = None
    cohort = nxt.name if nxt is not None and pb.cohorts else None
    # The next cohort's people; with no cohort next (no cohorts, or the rollout is done), only
    # those whose account is still to be made: the others have signed in already.
    people = [p for p in (assignment.members.get(cohort, ()) if cohort else _everyone(assignment))
              if (t := plan.people.get(p.person_id)) is not None and (cohort or not t.user_id)]
    signin = await signin_check(graph, pb, people, plan, snapshot)
    return Preflight(checks + plan_checks(pb, plan, snapshot, cohort) + [signin], cohort, plan=plan)


@dataclass(frozen=True, slots=True)
class SigninCheck:
    cohort: str | None
    predictions: list[Prediction]
    blocked: list[str]       # one line per blocking policy, with the fix
    report_only: list[str]
    web_mail: list[str]      # policies that stop Outlook's app only: the guides name the web

    @property
    def ok(self) -> bool:
        return not self.blocked

    def to_json(self) -> dict[str, Any]:
        return {"cohort": self.cohort, "ready": self.ok, "blocked": self.blocked,
                "report_only": self.report_only, "web_mail": self.web_mail,
                "people": [p.to_json() for p in self.predictions]}


async def signin_check_report(session: Session, loaded: Loaded, cohort: str | None) -> SigninCheck:
    """Conditional Access's verdict on every way each person (of one cohort, or all) signs in."""
    from .signin import problems, report_only, switched
    from .steps.groups import static_groups

    pb = loaded.playbook
    async with connect(session, pb) as graph:
        assignment = assign(pb, loaded.roster)
        if cohort is not None:
            assignment.cohort(cohort)  # an unknown name is an error that lists the cohorts
        snapshot = await _snapshot(graph, loaded, assignment, session)
        plan = make_plan(pb, loaded.roster, snapshot, assignment)
        people = [p for p in (assignment.members[cohort] if cohort else _everyone(assignment))
                  if plan.people.get(p.person_id) is not None]
        predictions = await predict_signins(graph, pb, people, plan, snapshot)
    return SigninCheck(cohort, predictions, problems(predictions, static_groups(pb)),
                       report_only(predictions), switched(predictions))


@dataclass(frozen=True, slots=True)
class Applied:
    plan: Plan
    cohorts: list[CohortOutcome]
    reconciled: Reconciled
    next_step: str

    @property
    def report(self) -> Report | None:
        """Everything applied by this command, across its cohorts."""
        reports = [c.report for c in self.cohorts if c.report is not None]
        if not reports:
            return None
        return Report([r for report in reports for r in report.results])

    @property
    def halted(self) -> bool:
        return any(c.state.halts for c in self.cohorts)

    @property
    def waiting(self) -> bool:
        """Stopped at a gate that waits (sign-ins, approval, soak, feedback, enrolment)."""
        return bool(self.cohorts) and self.cohorts[-1].state.waiting

    def to_json(self) -> dict[str, Any]:
        """The document of ``apply --json``."""
        total = self.report.counts() if self.report else {}
        return {"reconciled": {"made": self.reconciled.made, "not_made": self.reconciled.not_made},
                "summary": {o.value: total.get(o.value, 0) for o in Outcome},
                "cohorts": [c.to_json() for c in self.cohorts], "next_step": self.next_step,
                "halted": self.halted, "waiting": self.waiting}


async def apply(session: Session, loaded: Loaded, hooks: Sequence[Hook], *,
                saved: Plan | None = None, cohort: str | None = None, all_cohorts: bool = False,
                allow_mass_change: int | None = None, reissue: bool = False,
                confirm: Callable[[Plan], bool] | None = None,
                on_cohort: Callable[[CohortOutcome], None] | None = None) -> Applied:
    """Reconcile what an interrupted run left, plan afresh, then apply the next cohort (or
    ``cohort``) and check its gates; with ``all_cohorts``, go on while gates pass."""
    settings, pb = session.settings, loaded.playbook
    with session.lock("apply", pb), session.journal(pb) as journal:
        async with connect(session, pb) as graph:
            journal.mark_interrupted(pb.name)
            reconciled = await reconcile(graph, journal, session.audit, pb.name, settings.state_dir)
            assignment = assign(pb, loaded.roster)
            snapshot = await _snapshot(graph, loaded, assignment, session)
            ready = await _preflight_with(graph, session, loaded, assignment, snapshot)
            raise_if_failed(ready.checks)
            fresh = ready.plan  # preflight's: made once its groups check passed
            assert fresh is not None
            check_mass_change(pb, fresh, snapshot, allow_mass_change)
            check_reissue(pb, fresh, snapshot, journal, reissue)
            if LEAVERS in fresh.cohort_order:
                assignment = Assignment((*assignment.order, LEAVERS_COHORT),
                                        {**assignment.members, LEAVERS: ()}, assignment.cohort_of)
            # Without cohorts there are no stages: one apply does all of it.
            all_cohorts = all_cohorts or not pb.cohorts
            outcomes: list[CohortOutcome] = []
            stage = Stage(graph, journal, session, loaded, assignment, hooks)
            groups = fresh.only(PREREQUISITES)
            if groups.changes:  # groups.create: the playbook's own groups, before any cohort
                if saved is not None:
                    check_fresh(saved.only(PREREQUISITES), loaded, groups)
                if confirm is not None and not confirm(groups):
                    return Applied(fresh, outcomes, reconciled, "Nothing was applied.")
                made = await stage.make_groups(groups)
                outcomes.append(made)
                if on_cohort is not None:
                    on_cohort(made)
                if made.state != CohortState.PASSED:
                    return Applied(fresh, outcomes, reconciled, "The playbook's groups could not all"
                                   " be made (see above); no cohort was started. Fix the cause,"
                                   " then apply again.")
                fresh = with_group_ids(fresh, made.made)
                saved = with_group_ids(saved, made.made) if saved is not None else None
            current = next_cohort(journal, pb.name, assignment, cohort, saved or fresh)
            while current is not None:
                if saved is not None:
                    check_fresh(saved.only(current.name), loaded, fresh.only(current.name))
                chosen = (saved or fresh).only(current.name)
                outcome = await stage.run(current, chosen, confirm)
                if outcome is None:  # not confirmed
                    break
                outcomes.append(outcome)
                if on_cohort is not None:
                    on_cohort(outcome)
                if outcome.state != CohortState.PASSED or not all_cohorts or cohort is not None:
                    break
                applied_now = {o.cohort for o in outcomes}
                rest = replace(fresh, changes=tuple(
                    c for c in fresh.changes if fresh.cohort_of.get(c.person_id) not in applied_now))
                current = next_cohort(journal, pb.name, assignment, None, rest)
            return Applied(fresh, outcomes, reconciled,
                           next_step(journal, pb, assignment, outcomes))


async def rollback(session: Session, loaded: Loaded, hooks: Sequence[Hook], *,
                   run_id: str | None = None, cohort: str | None = None,
                   person: str | None = None, force: bool = False, dry_run: bool = False,
                   confirm: Callable[[RollbackPlan], bool] | None = None) -> RolledBack:
    settings, name = session.settings, loaded.playbook.name
    with session.lock("rollback", loaded.playbook), session.journal(loaded.playbook) as journal:
        async with connect(session, loaded.playbook) as graph:
            journal.mark_interrupted(name)
            await reconcile(graph, journal, session.audit, name, settings.state_dir)
            done = await rollback_with(graph, journal, session, loaded, hooks, run_id=run_id,
                                        cohort=cohort, person=person, force=force,
                                        dry_run=dry_run, confirm=confirm)
            if cohort and done.run_id and done.report is not None and done.report.ok \
                    and not done.rollback.blocked:
                journal.set_cohort_state(name, cohort, CohortState.ROLLED_BACK)
            return done


def settle(session: Session, loaded: Loaded, person_id: str, happened: bool) -> int:
    """A human's word on a person's writes that got no clear answer (an e-mailed guide, a new
    pass): it happened, or the next apply does it again. Journaled and audited."""
    who = operator()
    with session.lock("settle", loaded.playbook), session.journal(loaded.playbook) as journal:
        found = journal.uncertain(loaded.playbook.name).get(person_id, [])
        if not found:
            raise InputError(f"{person_id} has no write of unknown outcome to settle")
        journal.settle([seq for seq, _ in found], happened, who)
    session.audit.event("settle", person_id=person_id, steps=sorted({s for _, s in found}),
                        happened=happened, settled_by=who)
    return len(found)


def approve(session: Session, loaded: Loaded, cohort: str, note: str | None) -> str:
    """Record a human's approval of an applied cohort's gate (journal and audit log), refused
    when the gate's rules say this person may not give it."""
    pb = loaded.playbook
    gate = assign(pb, loaded.roster).cohort(cohort).gates.approval  # an unknown name is an error
    who, kind = _approver(session, pb, gate)
    with session.journal(pb) as journal:
        if journal.cohort_state(pb.name, cohort).applied_at is None:
            raise InputError(f"cohort {cohort} has not been applied: there is nothing to approve yet")
        if gate is not None and not gate.allows(who):
            raise InputError(f"{who} may not approve cohort {cohort}: its approvers are"
                             f" {', '.join(gate.approvers)}")
        if gate is not None and gate.distinct_from_applier and who.casefold() in {
                a.casefold() for a in journal.appliers(pb.name, cohort)}:
            raise InputError(f"{who} applied cohort {cohort} and may not approve it too"
                             " (gates.approval.distinct_from_applier): another person approves")
        journal.approve(pb.name, cohort, who, note)
    session.audit.event("approval", cohort=cohort, approved_by=who, identity=kind, note=note)
    return who


def _approver(session: Session, pb: Playbook, gate: ApprovalGate | None) -> tuple[str, str]:
    """(who, how we know): the Entra UPN of a fresh sign-in with --auth device-code on a real
    tenant, else the OS user; a gate that names approvers on a real tenant needs the former."""
    if pb.tenant != "sandbox" and session.settings.device_code:
        from .graph.auth import signed_in_user

        return signed_in_user(pb.tenant), "entra"
    if pb.tenant != "sandbox" and gate is not None and (gate.approvers or gate.distinct_from_applier):
        raise InputError("this cohort's approval names who may give it: sign in as yourself with"
                         " `provisioner --auth device-code approve ...`")
    return operator(), "os-user"


