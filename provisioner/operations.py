"""What each command does, between the thin CLI and the pure core: load, connect, plan, apply."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from . import clock
from .audit import AuditLog, audit_key
from .checks import Check, CheckStatus
from .cohort_state import CohortState
from .cohorts import Assignment, assign, is_canary
from .dualrole import analyse
from .errors import GraphError, InputError, MassChangeError, StalePlanError
from .gates import (
    PASS,
    GateContext,
    GateResult,
    cohort_state,
    evaluate,
    guides_late,
    verdict_of,
    verify_people,
)
from .graph.client import Target
from .graph.gateway import Graph
from .journal import Journal, operator
from .leavers import LEAVERS
from .lock import state_lock
from .model import PLAN_FORMAT, Action, Json, Plan
from .naming import Names
from .planner import make_plan
from .playbook import Cohort, Gates, Playbook, Selector, VerifyGate, load_playbook
from .preflight import failures, permissions_check, plan_checks, raise_if_failed, tenant_checks
from .private import write_private
from .reconcile import Reconciled, RollbackPlan, plan_rollback, reconcile, select
from .recorders import AuditHook, JournalHook
from .rollout import Hook, Report, apply_plan
from .roster import Roster, load_roster
from .snapshot import Snapshot, owner_prefix, read_snapshot
from .steps import STEPS, PersonView, PlanContext, guide_step, needed_groups, used
from .steps.device_settings import DeviceSettingsStep
from .steps.groups import GroupsStep, group_names

if TYPE_CHECKING:
    from .sandbox import Sandbox

log = structlog.get_logger("provisioner")


@dataclass(frozen=True, slots=True)
class Settings:
    state_dir: Path
    graph_url: str | None = None
    device_code: bool = False
    audit_path: Path | None = None


class Session:
    """One operator command: its settings, its audit log, and who it acted as."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.graph_identity = "none"
        self.run_ids: list[str] = []
        self._audit: AuditLog | None = None

    @property
    def audit_path(self) -> Path:
        return self.settings.audit_path or self.settings.state_dir / "audit.jsonl"

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            state_dir = self.settings.state_dir

            key = anchor_key(self.audit_path, state_dir)

            def anchor(prev: tuple[int, str], head: tuple[int, str]) -> None:
                """Move the journal's anchor only from the head it holds: a log cut short,
                replaced or deleted stays detectable however many commands run after."""
                with Journal(state_dir) as journal:
                    held = journal.audit_head(key)
                    if held is None or tuple(held) == prev:
                        journal.set_audit_head(key, *head)

            self._audit = AuditLog(self.audit_path, audit_key(), anchor)
        return self._audit


def anchor_key(audit_path: Path, state_dir: Path) -> str:
    """Where the journal keeps a log's head: by name inside the state dir (so a moved or
    copied state dir keeps it), by absolute path elsewhere."""
    if audit_path.resolve().parent == state_dir.resolve():
        return audit_path.name
    return str(audit_path.resolve())


@dataclass(frozen=True, slots=True)
class Loaded:
    playbook: Playbook
    roster: Roster


def load(playbook_path: Path) -> Loaded:
    playbook = load_playbook(playbook_path)
    return Loaded(playbook, load_roster(playbook.roster_path))


@contextlib.asynccontextmanager
async def connect(session: Session, playbook: Playbook) -> AsyncIterator[Graph]:
    """A Graph for the playbook's tenant: the sandbox in the state dir (created on first use),
    a served sandbox at ``--graph-url``, or the real tenant through MSAL."""
    settings = session.settings
    session.graph_identity = _identity(settings, playbook)
    if playbook.tenant != "sandbox":
        target = Target(tenant=playbook.tenant, device_code=settings.device_code,
                        token_cache=settings.state_dir / "msal-cache.json")
        async with Graph(target, concurrency=playbook.concurrency) as graph:
            yield graph
        return
    if settings.graph_url:
        async with Graph(Target(graph_url=settings.graph_url), concurrency=playbook.concurrency) as graph:
            yield graph
        return
    with open_sandbox(settings.state_dir) as app:
        async with Graph(Target(sandbox_app=app), concurrency=playbook.concurrency) as graph:
            yield graph


@contextlib.contextmanager
def open_sandbox(state_dir: Path) -> Iterator[Sandbox]:
    from .sandbox import DB_NAME, Sandbox, open_tenant, reset_tenant

    if not (state_dir / DB_NAME).exists():
        log.info("sandbox.created", state_dir=str(state_dir),
                 hint="a fresh sandbox tenant; `provisioner sandbox reset` makes another")
        tenant = reset_tenant(state_dir)
    else:
        tenant = open_tenant(state_dir)
    try:
        yield Sandbox(tenant)
    finally:
        tenant.store.close()


def _identity(settings: Settings, playbook: Playbook) -> str:
    if playbook.tenant == "sandbox":
        where = settings.graph_url or f"in-process, {settings.state_dir}"
        return f"sandbox ({where})"
    how = "device code" if settings.device_code else "app"
    return f"{how} {playbook.tenant.client_id} in tenant {playbook.tenant.tenant_id}"


async def plan(session: Session, loaded: Loaded) -> tuple[Plan, Preflight]:
    """The plan, and the preflight of the cohort it would apply next (both read-only)."""
    async with connect(session, loaded.playbook) as graph:
        assignment = assign(loaded.playbook, loaded.roster)
        snapshot = await _snapshot(graph, loaded, assignment, session.settings.state_dir)
        result = make_plan(loaded.playbook, loaded.roster, snapshot, assignment)
        return result, await _preflight_with(graph, session, loaded, assignment, snapshot, result)


async def _snapshot(graph: Graph, loaded: Loaded, assignment: Assignment,
                    state_dir: Path | None = None) -> Snapshot:
    pb = loaded.playbook
    everyone = _everyone(assignment)
    # The user groups the playbook manages memberships of (a mover or leaver leaves them).
    templates = pb.groups if GroupsStep.name in pb.steps else ()
    mine = {n for p in everyone for n in group_names(templates, p)}
    guides, since, uncertain = {}, {}, frozenset[str]()
    guide = guide_step(pb)
    if state_dir is not None:
        with Journal(state_dir) as journal:  # what the journal knows that the directory cannot say
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
    return replace(snapshot, guides=guides, leaving_since=since, playbook_groups=frozenset(mine),
                   uncertain=uncertain)


def _everyone(assignment: Assignment) -> list[Any]:
    return [p for people in assignment.members.values() for p in people]


@dataclass(frozen=True, slots=True)
class Preflight:
    checks: list[Check]
    cohort: str | None

    @property
    def ok(self) -> bool:
        return not failures(self.checks)


async def preflight(session: Session, loaded: Loaded) -> Preflight:
    """Is the tenant ready for the next cohort? Reads only."""
    async with connect(session, loaded.playbook) as graph:
        assignment = assign(loaded.playbook, loaded.roster)
        snapshot = await _snapshot(graph, loaded, assignment, session.settings.state_dir)
        return await _preflight_with(graph, session, loaded, assignment, snapshot)


async def _preflight_with(graph: Graph, session: Session, loaded: Loaded, assignment: Assignment,
                          snapshot: Snapshot, plan: Plan | None = None) -> Preflight:
    pb = loaded.playbook
    checks = await tenant_checks(graph, pb, _everyone(assignment), snapshot)
    if any(c.name == "groups" and c.status is CheckStatus.FAIL for c in checks):
        return Preflight([*checks, Check("plan checks", CheckStatus.SKIP, "fix the groups first")], None)
    plan = plan or make_plan(pb, loaded.roster, snapshot, assignment)
    with Journal(session.settings.state_dir) as journal:
        try:
            nxt = _next_cohort(journal, pb.name, assignment, None, plan)
        except InputError:
            nxt = None
    cohort = nxt.name if nxt is not None and pb.cohorts else None
    return Preflight(checks + plan_checks(pb, plan, snapshot, cohort), cohort)


def save_plan(plan: Plan, path: Path) -> None:
    """Owner-only: a plan names people, their addresses and mobiles."""
    write_private(path, json.dumps(plan.to_file(), indent=2, ensure_ascii=False) + "\n")


def read_saved_plan(path: Path) -> Plan | None:
    """The plan in ``path`` if it is a saved plan, None if it is something else (a playbook)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        return None
    try:
        return Plan.from_file(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: a damaged saved plan ({type(exc).__name__}: {exc})") from None


def check_fresh(saved: Plan, loaded: Loaded, fresh: Plan) -> None:
    """Refuse a saved plan when the roster, the playbook or the objects it touches changed."""
    problems = []
    if saved.playbook_digest != loaded.playbook.digest:
        problems.append(f"the playbook {loaded.playbook.source} changed since the plan was made")
    if saved.roster_digest != loaded.roster.digest:
        problems.append(f"the roster {loaded.roster.path} changed since the plan was made")
    old = {c.id: c for c in saved.changes}
    new = {c.id: c for c in fresh.changes}
    for cid in sorted(old.keys() - new.keys(), key=lambda i: old[i].target):
        problems.append(f"{old[cid].target}: planned {old[cid].action.value}, no longer needed or"
                        " different now")
    for cid in sorted(new.keys() - old.keys(), key=lambda i: new[i].target):
        problems.append(f"{new[cid].target}: now needs {new[cid].action.value}, not in the saved plan")
    for cid in sorted(old.keys() & new.keys(), key=lambda i: old[i].target):
        if old[cid].before != new[cid].before:
            problems.append(f"{old[cid].target}: the object changed since the plan was made")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise StalePlanError("the saved plan is stale; make a new one with `provisioner plan"
                             " --out`:\n  " + "\n  ".join(shown))


@dataclass
class CohortOutcome:
    cohort: str
    plan: Plan
    report: Report | None = None      # what was applied now (None: nothing to apply)
    gates: list[GateResult] = field(default_factory=list)
    state: CohortState = CohortState.PENDING
    run_ids: list[str] = field(default_factory=list)
    rolled_back: RolledBack | None = None


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


async def apply(session: Session, loaded: Loaded, hooks: Sequence[Hook], *,
                saved: Plan | None = None, cohort: str | None = None, all_cohorts: bool = False,
                allow_mass_change: int | None = None, reissue: bool = False,
                confirm: Callable[[Plan], bool] | None = None,
                on_cohort: Callable[[CohortOutcome], None] | None = None) -> Applied:
    """Reconcile what an interrupted run left, plan afresh, then apply the next cohort (or
    ``cohort``) and check its gates; with ``all_cohorts``, go on while gates pass."""
    settings, pb = session.settings, loaded.playbook
    with state_lock(settings.state_dir, "apply"), Journal(settings.state_dir) as journal:
        async with connect(session, pb) as graph:
            journal.mark_interrupted(pb.name)
            reconciled = await reconcile(graph, journal, session.audit, pb.name, settings.state_dir)
            assignment = assign(pb, loaded.roster)
            snapshot = await _snapshot(graph, loaded, assignment, session.settings.state_dir)
            ready = await _preflight_with(graph, session, loaded, assignment, snapshot)
            raise_if_failed(ready.checks)
            fresh = make_plan(pb, loaded.roster, snapshot, assignment)
            check_mass_change(pb, fresh, snapshot, allow_mass_change)
            check_reissue(pb, fresh, snapshot, journal, reissue)
            if LEAVERS in fresh.cohort_order:
                assignment = Assignment((*assignment.order, LEAVERS_COHORT),
                                        {**assignment.members, LEAVERS: ()}, assignment.cohort_of)
            # Without cohorts there are no stages: one apply does all of it.
            all_cohorts = all_cohorts or not pb.cohorts
            outcomes: list[CohortOutcome] = []
            stage = _Stage(graph, journal, session, loaded, assignment, hooks)
            current = _next_cohort(journal, pb.name, assignment, cohort, saved or fresh)
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
                current = _next_cohort(journal, pb.name, assignment, None, rest)
            return Applied(fresh, outcomes, reconciled,
                           _next_step(journal, pb, assignment, outcomes))


LEAVERS_COHORT = Cohort(name=LEAVERS, select=Selector(rest=True), gates=Gates(max_failure_ratio=None))


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


def _next_cohort(journal: Journal, playbook: str, assignment: Assignment,
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


def _next_step(journal: Journal, pb: Playbook, assignment: Assignment,
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


class _Stage:
    """One cohort: canaries first (verified before any real person), then its people,
    then its gates; on failure, halt or roll the cohort back."""

    def __init__(self, graph: Graph, journal: Journal, session: Session, loaded: Loaded,
                 assignment: Assignment, hooks: Sequence[Hook]) -> None:
        self.graph, self.journal, self.session = graph, journal, session
        self.loaded, self.assignment, self.hooks = loaded, assignment, hooks
        self.pb = loaded.playbook

    async def run(self, cohort: Cohort, plan: Plan,
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

    def _ctx(self, name: str, people: Sequence[Any], plan: Plan,
             applied_at: str | None = None) -> GateContext:
        return GateContext(self.graph, self.pb, self.journal, name, people,
                           {pid: t.upn for pid, t in plan.people.items()}, applied_at)

    async def _apply(self, outcome: CohortOutcome, plan: Plan) -> None:
        if not plan.changes:
            return
        run_id = self.journal.start_run("apply", self.pb.name, str(self.pb.source), self.pb.digest)
        self.session.run_ids.append(run_id)
        outcome.run_ids.append(run_id)
        recorders = [JournalHook(self.journal, run_id, cohort=outcome.cohort),
                     AuditHook(self.session.audit, run_id)]
        try:
            report = await apply_plan(self.graph, plan, [*recorders, *self.hooks],
                                      mailbox_wait=_mailbox_wait(self.pb),
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
        if outcome.state == CohortState.HELD:
            return outcome
        if outcome.state == CohortState.FAILED and cohort.on_failure == "rollback":
            outcome.rolled_back = await _rollback_with(
                self.graph, self.journal, self.session, self.loaded, self.hooks, cohort=cohort.name)
            if outcome.rolled_back.report is None or outcome.rolled_back.report.ok:
                outcome.state = CohortState.ROLLED_BACK
                self.journal.set_cohort_state(self.pb.name, cohort.name, outcome.state)
        return outcome


@dataclass(frozen=True, slots=True)
class RolledBack:
    rollback: RollbackPlan
    report: Report | None
    run_id: str | None


async def rollback(session: Session, loaded: Loaded, hooks: Sequence[Hook], *,
                   run_id: str | None = None, cohort: str | None = None,
                   person: str | None = None, force: bool = False, dry_run: bool = False,
                   confirm: Callable[[RollbackPlan], bool] | None = None) -> RolledBack:
    settings, name = session.settings, loaded.playbook.name
    with state_lock(settings.state_dir, "rollback"), Journal(settings.state_dir) as journal:
        async with connect(session, loaded.playbook) as graph:
            journal.mark_interrupted(name)
            await reconcile(graph, journal, session.audit, name, settings.state_dir)
            done = await _rollback_with(graph, journal, session, loaded, hooks, run_id=run_id,
                                        cohort=cohort, person=person, force=force,
                                        dry_run=dry_run, confirm=confirm)
            if cohort and done.run_id and done.report is not None and done.report.ok \
                    and not done.rollback.blocked:
                journal.set_cohort_state(name, cohort, CohortState.ROLLED_BACK)
            return done


async def _rollback_with(graph: Graph, journal: Journal, session: Session, loaded: Loaded,
                         hooks: Sequence[Hook], *, run_id: str | None = None,
                         cohort: str | None = None, person: str | None = None,
                         force: bool = False, dry_run: bool = False,
                         confirm: Callable[[RollbackPlan], bool] | None = None) -> RolledBack:
    name = loaded.playbook.name
    entries = select(journal.applied(name), run_id=run_id, cohort=cohort, person=person)
    planned = await plan_rollback(graph, entries, playbook_name=name, force=force,
                                  state_dir=session.settings.state_dir)
    if dry_run or not (planned.plan.changes or planned.already):
        return RolledBack(planned, None, None)
    if confirm is not None and not confirm(planned):
        return RolledBack(planned, None, None)
    rid = journal.start_run("rollback", name, str(loaded.playbook.source), loaded.playbook.digest)
    session.run_ids.append(rid)
    for undo, seq in planned.already:  # nothing to write: record that it is undone
        done = journal.intend(rid, undo, reversibility="reversible", cohort=cohort, upn=None,
                              object_id=None, before_image=undo.before, undo_of=seq)
        journal.record(done, "unchanged", message="already in the rolled-back state")
        if planned.goes_with.get(undo.id):  # a user already gone took these with it
            journal.mark_undone(planned.goes_with[undo.id], by=done)
    recorder = JournalHook(journal, rid, cohort=cohort, undo_of=planned.undo_of,
                           goes_with=planned.goes_with)
    try:
        report = await apply_plan(graph, planned.plan,
                                  [recorder, AuditHook(session.audit, rid), *hooks],
                                  mailbox_wait=0,
                                  state_dir=session.settings.state_dir)
    except BaseException:
        journal.finish_run(rid, "interrupted")
        raise
    journal.finish_run(rid, "completed" if report.ok else "failed")
    return RolledBack(planned, report, rid)


async def dual_roles(session: Session, loaded: Loaded) -> list[dict[str, Any]]:
    """The dual-role report: every person who is not plainly new, with the evidence (never
    a personnummer: only the word that it matched)."""
    pb = loaded.playbook
    async with connect(session, pb) as graph:
        snapshot = await read_snapshot(graph, pb, loaded.roster, set(), used(pb))
    views = analyse(pb, list(loaded.roster), snapshot, owner_prefix(pb))
    mine = snapshot.managed(owner_prefix(pb))
    names = {p.person_id: f"{p.given_name} {p.surname}" for p in loaded.roster}
    rows = []
    for pid, view in views.items():
        m, r = view.match, view.resolution
        if m.status == "new" and view.decision is None:
            continue
        own = mine.get(pid)
        rows.append({
            "person_id": pid, "name": names[pid], "status": m.status, "reason": m.reason,
            "applies": _applies(r),
            "account": (own.upn + (" (adopted)" if own.adopted else "")) if own else None,
            "candidates": [{"user_id": c.user_id, "upn": c.upn, "display_name": c.display_name,
                            "score": c.score, "evidence": list(c.evidence), "enabled": c.enabled,
                            "made_by": c.made_by} for c in m.candidates],
        })
    return rows


async def devices_report(session: Session, loaded: Loaded) -> dict[str, Any]:
    """Per person: device, profile, groups and state; totals per model, category and state."""
    from .steps.device_settings import device_for, profile_for

    pb = loaded.playbook
    if DeviceSettingsStep.name not in pb.steps:
        raise InputError(f"{pb.source}: this playbook has no device_settings step")
    async with connect(session, pb) as graph:
        assignment = assign(pb, loaded.roster)
        snapshot = await read_snapshot(graph, pb, loaded.roster, set(needed_groups(
            pb, list(loaded.roster))), used(pb))
    plan = make_plan(pb, loaded.roster, snapshot, assignment)
    ctx = PlanContext(pb, snapshot, owner_prefix(pb))
    managed = snapshot.managed(owner_prefix(pb))
    pending = {c.person_id for c in plan.changes if c.step == DeviceSettingsStep.name}
    rows = []
    for person in loaded.roster:
        user = managed.get(person.person_id)
        view = PersonView(person, Names("", "", ""), user, adopted=bool(user and user.adopted))
        profile = profile_for(ctx, view)
        device = device_for(ctx, view, profile) if profile else None
        if profile is None:
            state = "no device profile"
        elif person.person_id in plan.held:
            state = "held"
        elif device is None:
            state = "awaiting enrolment"
        elif person.person_id in pending:
            state = "changes planned"
        else:
            state = "ready" if device.compliance == "compliant" else device.compliance or "unknown"
        rows.append({"person_id": person.person_id, "name": f"{person.given_name} {person.surname}",
                     "category": person.category, "cohort": plan.cohort_of.get(person.person_id),
                     "model": profile.model if profile else person.device_model,
                     "serial": device.serial if device else person.device_serial,
                     "profile": profile.name if profile else None,
                     "groups": list(profile.groups) if profile else [],
                     "last_check_in": device.last_sync if device else None,
                     "compliance": device.compliance if device else None, "state": state})
    totals: dict[str, dict[str, int]] = {"model": {}, "category": {}, "state": {}}
    for row in rows:
        for key in totals:
            value = str(row[key] or "-")
            totals[key][value] = totals[key].get(value, 0) + 1
    return {"people": rows, "totals": totals}


def _applies(r: Any) -> str:
    if r.kind == "own":
        what = "own account" + (f", linked to {r.user.upn}" if r.user is not None else "")
    elif r.kind == "adopt":
        what = f"use the existing account {r.user.upn}"
    else:
        what = f"held: {r.reason}"
    return f"{what} ({r.source})"


def settle(session: Session, loaded: Loaded, person_id: str, happened: bool) -> int:
    """A human's word on a person's writes that got no clear answer (an e-mailed guide, a new
    pass): it happened, or the next apply does it again. Journaled and audited."""
    who = operator()
    with state_lock(session.settings.state_dir, "settle"), Journal(session.settings.state_dir) as journal:
        found = journal.uncertain(loaded.playbook.name).get(person_id, [])
        if not found:
            raise InputError(f"{person_id} has no write of unknown outcome to settle")
        journal.settle([seq for seq, _ in found], happened, who)
    session.audit.event("settle", person_id=person_id, steps=sorted({s for _, s in found}),
                        happened=happened, settled_by=who)
    return len(found)


def approve(session: Session, loaded: Loaded, cohort: str, note: str | None) -> str:
    """Record a human's approval of a cohort's gate (journal and audit log)."""
    assignment = assign(loaded.playbook, loaded.roster)
    assignment.cohort(cohort)  # an unknown name is an error naming the cohorts
    who = operator()
    with Journal(session.settings.state_dir) as journal:
        journal.approve(loaded.playbook.name, cohort, who, note)
    session.audit.event("approval", cohort=cohort, approved_by=who, note=note)
    return who


@dataclass(frozen=True, slots=True)
class Status:
    cohorts: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    pending: list[dict[str, Any]]
    rollback_would_touch: dict[str, int]
    audit_head: str | None = None  # "SEQ:HASH": keep it elsewhere, check with --expect-head

    def to_json(self) -> Json:
        return {"cohorts": self.cohorts, "runs": self.runs, "pending_intents": self.pending,
                "rollback_would_touch": self.rollback_would_touch, "audit_head": self.audit_head}


def status(session: Session, loaded: Loaded) -> Status:
    pb = loaded.playbook
    assignment = assign(pb, loaded.roster)
    with Journal(session.settings.state_dir) as journal:
        cohorts = []
        for c in assignment.order:
            st = journal.cohort_state(pb.name, c.name)
            people = assignment.members[c.name]
            cohorts.append({
                "name": c.name, "people": sum(1 for p in people if not is_canary(p.person_id)),
                "canaries": sum(1 for p in people if is_canary(p.person_id)), "state": st.state,
                "applied_at": st.applied_at, "outcomes": journal.latest_run_outcomes(pb.name, c.name),
                "gates": (st.report or {}).get("gates", [])})
        runs = [{"id": r.id, "kind": r.kind, "operator": r.operator, "started": r.started,
                 "finished": r.finished, "status": r.status, "outcomes": journal.outcome_counts(r.id)}
                for r in journal.runs(pb.name)]
        pending = [{"run_id": e.run_id, "step": e.change.step, "action": e.change.action.value,
                    "target": e.change.target, "person_id": e.change.person_id}
                   for e in journal.pending(pb.name)]
        applied = journal.applied(pb.name)
        head = journal.audit_head(anchor_key(session.audit_path, session.settings.state_dir))
    users = {e.object_id for e in applied if STEPS[e.change.step].holds_account
             and e.change.action is Action.CREATE}
    touch: dict[str, int] = {"accounts to soft-delete": len(users)}
    for e in applied:
        if e.object_id in users:
            continue
        key = f"{e.change.step} changes to undo"
        touch[key] = touch.get(key, 0) + 1
    return Status(cohorts, runs, pending, touch, f"{head[0]}:{head[1]}" if head else None)


def _mailbox_wait(playbook: Playbook) -> float:
    return playbook.mailbox_settings.wait_seconds if playbook.mailbox_settings else 0.0
