"""Reports that read and never write: dual roles, devices, and the rollout's status."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .cohort_state import CohortState
from .cohorts import assign, is_canary
from .dualrole import ADOPT, OWN, Resolution, analyse
from .errors import InputError
from .matching import NEW, Candidate, MatchStatus
from .model import Action, Json
from .naming import Names
from .planner import make_plan
from .session import Loaded, Session, anchor_key, connect
from .snapshot import owner_prefix, read_snapshot
from .steps import STEPS, PersonView, PlanContext, needed_groups, used
from .steps.device_settings import DeviceSettingsStep

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, slots=True)
class DualRoleRow:
    """A roster person who may already have an account: the match, what applies, the evidence."""

    person_id: str
    name: str
    status: MatchStatus
    reason: str
    applies: str
    account: str | None         # the account the playbook already made or adopted for them
    candidates: tuple[Candidate, ...]

    def to_json(self) -> Json:
        return {**{f: getattr(self, f) for f in ("person_id", "name", "status", "reason", "applies",
                                                  "account")},
                "candidates": [{**c._asdict(), "evidence": list(c.evidence)} for c in self.candidates]}


@dataclass(frozen=True, slots=True)
class DeviceRow:
    person_id: str
    name: str
    category: str
    cohort: str | None
    model: str
    serial: str
    profile: str | None
    groups: tuple[str, ...]
    last_check_in: str | None
    compliance: str | None
    state: str

    def to_json(self) -> Json:
        return {**asdict(self), "groups": list(self.groups)}


@dataclass(frozen=True, slots=True)
class DevicesReport:
    people: tuple[DeviceRow, ...]
    totals: dict[str, dict[str, int]]  # per model, category and state: how many

    def to_json(self) -> Json:
        return {"people": [r.to_json() for r in self.people], "totals": self.totals}


async def dual_roles(session: Session, loaded: Loaded) -> list[DualRoleRow]:
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
        if m.status is NEW and view.decision is None:
            continue
        own = mine.get(pid)
        rows.append(DualRoleRow(pid, names[pid], m.status, m.reason, _applies(r),
                                (own.upn + (" (adopted)" if own.adopted else "")) if own else None,
                                tuple(m.candidates)))
    return rows


async def devices_report(session: Session, loaded: Loaded) -> DevicesReport:
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
        rows.append(DeviceRow(person.person_id, f"{person.given_name} {person.surname}", person.category,
                              plan.cohort_of.get(person.person_id),
                              profile.model if profile else person.device_model,
                              device.serial if device else person.device_serial,
                              profile.name if profile else None, tuple(profile.groups) if profile else (),
                              device.last_sync if device else None,
                              device.compliance if device else None, state))
    totals: dict[str, dict[str, int]] = {"model": {}, "category": {}, "state": {}}
    for row in rows:
        for key in totals:
            value = str(getattr(row, key) or "-")
            totals[key][value] = totals[key].get(value, 0) + 1
    return DevicesReport(tuple(rows), totals)


def _applies(r: Resolution) -> str:
    if r.kind is OWN:
        what = "own account" + (f", linked to {r.user.upn}" if r.user is not None else "")
    elif r.kind is ADOPT:
        assert r.user is not None
        what = f"use the existing account {r.user.upn}"
    else:
        what = f"held: {r.reason}"
    return f"{what} ({r.source})"


@dataclass(frozen=True, slots=True)
class CohortRow:
    name: str
    people: int
    canaries: int
    state: CohortState
    applied_at: str | None
    outcomes: dict[str, int]   # the latest run's changes by outcome
    gates: list[Json]          # the gates as last judged (GateResult.to_json)


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    kind: str
    operator: str
    started: str
    finished: str | None
    status: str
    outcomes: dict[str, int]


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A write whose outcome nobody saw (the next apply or rollback reads it back first)."""

    run_id: str
    step: str
    action: str
    target: str
    person_id: str


@dataclass(frozen=True, slots=True)
class Status:
    cohorts: list[CohortRow]
    runs: list[RunRow]
    pending: list[PendingRow]
    rollback_would_touch: dict[str, int]
    audit_head: str | None = None  # "SEQ:HASH": keep it elsewhere, check with --expect-head

    def to_json(self) -> Json:
        return {"cohorts": [asdict(c) for c in self.cohorts], "runs": [asdict(r) for r in self.runs],
                "pending_intents": [asdict(p) for p in self.pending],
                "rollback_would_touch": self.rollback_would_touch, "audit_head": self.audit_head}


def status(session: Session, loaded: Loaded) -> Status:
    pb = loaded.playbook
    assignment = assign(pb, loaded.roster)
    with session.journal(pb) as journal:
        cohorts = []
        for c in assignment.order:
            st = journal.cohort_state(pb.name, c.name)
            people = assignment.members[c.name]
            cohorts.append(CohortRow(
                c.name, sum(1 for p in people if not is_canary(p.person_id)),
                sum(1 for p in people if is_canary(p.person_id)), st.state, st.applied_at,
                journal.latest_run_outcomes(pb.name, c.name), (st.report or {}).get("gates", [])))
        runs = [RunRow(r.id, r.kind, r.operator, r.started, r.finished, r.status,
                       journal.outcome_counts(r.id)) for r in journal.runs(pb.name)]
        pending = [PendingRow(e.run_id, e.change.step, e.change.action.value, e.change.target,
                              e.change.person_id) for e in journal.pending(pb.name)]
        applied = journal.applied(pb.name)
        head = journal.audit_head(anchor_key(session.audit_path, session.settings.state_dir,
                                             shared=bool(session.state_url)))
    users = {e.object_id for e in applied if STEPS[e.change.step].holds_account
             and e.change.action is Action.CREATE}
    touch: dict[str, int] = {"accounts to soft-delete": len(users)}
    for e in applied:
        if e.object_id in users:
            continue
        key = f"{e.change.step} changes to undo"
        touch[key] = touch.get(key, 0) + 1
    return Status(cohorts, runs, pending, touch, f"{head[0]}:{head[1]}" if head else None)
