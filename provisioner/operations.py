"""What each command does, between the thin CLI and the pure core: load, connect, plan, apply."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from .audit import AuditLog, audit_key
from .errors import InputError, StalePlanError
from .graph.client import Target
from .graph.gateway import Graph
from .journal import Journal
from .lock import state_lock
from .model import PLAN_FORMAT, Action, Outcome, Plan
from .planner import make_plan
from .playbook import Playbook, load_playbook
from .reconcile import Reconciled, RollbackPlan, plan_rollback, reconcile, select
from .recorders import AuditHook, JournalHook
from .rollout import Hook, Report, apply_plan
from .roster import Roster, load_roster
from .snapshot import read_snapshot
from .steps.groups import group_names

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

            def anchor(path: str, seq: int, digest: str) -> None:
                with Journal(state_dir) as journal:
                    journal.set_audit_head(path, seq, digest)

            self._audit = AuditLog(self.audit_path, audit_key(), anchor)
        return self._audit


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
        async with Graph(target) as graph:
            yield graph
        return
    if settings.graph_url:
        async with Graph(Target(graph_url=settings.graph_url)) as graph:
            yield graph
        return
    with open_sandbox(settings.state_dir) as app:
        async with Graph(Target(sandbox_app=app)) as graph:
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


async def plan(session: Session, loaded: Loaded) -> Plan:
    async with connect(session, loaded.playbook) as graph:
        return await _plan_with(graph, loaded)


async def _plan_with(graph: Graph, loaded: Loaded) -> Plan:
    needed = {n for p in loaded.roster for n in group_names(loaded.playbook.groups, p)}
    snapshot = await read_snapshot(graph, loaded.playbook, loaded.roster, needed)
    return make_plan(loaded.playbook, loaded.roster, snapshot)


def save_plan(plan: Plan, path: Path) -> None:
    path.write_text(json.dumps(plan.to_file(), indent=2, ensure_ascii=False) + "\n")


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


@dataclass(frozen=True, slots=True)
class Applied:
    plan: Plan
    report: Report | None  # None: nothing was applied (no changes, or not confirmed)
    run_id: str | None
    reconciled: Reconciled


async def apply(session: Session, loaded: Loaded, hooks: Sequence[Hook], *,
                saved: Plan | None = None,
                confirm: Callable[[Plan], bool] | None = None) -> Applied:
    """Reconcile what an interrupted run left, plan afresh (refusing a stale saved plan), let
    ``confirm(plan)`` say yes, then apply with the journal and the audit log watching."""
    settings, name = session.settings, loaded.playbook.name
    with state_lock(settings.state_dir, "apply"), Journal(settings.state_dir) as journal:
        async with connect(session, loaded.playbook) as graph:
            journal.mark_interrupted(name)
            reconciled = await reconcile(graph, journal, session.audit, name)
            fresh = await _plan_with(graph, loaded)
            if saved is not None:
                check_fresh(saved, loaded, fresh)
            # A saved plan that survived the check is carried out exactly as it was shown.
            chosen = saved or fresh
            if not chosen.changes or (confirm is not None and not confirm(chosen)):
                return Applied(chosen, None, None, reconciled)
            run_id = journal.start_run("apply", name, str(loaded.playbook.source),
                                       loaded.playbook.digest)
            session.run_ids.append(run_id)
            recorders = [JournalHook(journal, run_id), AuditHook(session.audit, run_id)]
            try:
                report = await apply_plan(graph, chosen, [*recorders, *hooks],
                                          concurrency=loaded.playbook.concurrency,
                                          mailbox_wait=_mailbox_wait(loaded.playbook))
            except BaseException:
                journal.finish_run(run_id, "interrupted")
                raise
            journal.finish_run(run_id, "completed" if report.ok else "failed")
            return Applied(chosen, report, run_id, reconciled)


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
            await reconcile(graph, journal, session.audit, name)
            entries = select(journal.applied(name), run_id=run_id, cohort=cohort, person=person)
            planned = await plan_rollback(graph, entries, playbook_name=name, force=force)
            if dry_run or not (planned.plan.changes or planned.already):
                return RolledBack(planned, None, None)
            if confirm is not None and not confirm(planned):
                return RolledBack(planned, None, None)
            rid = journal.start_run("rollback", name, str(loaded.playbook.source),
                                    loaded.playbook.digest)
            session.run_ids.append(rid)
            for undo, seq in planned.already:  # nothing to write: record that it is undone
                journal.record(journal.intend(rid, undo, reversibility="reversible", cohort=None,
                                              upn=None, object_id=None, before_image=undo.before,
                                              undo_of=seq), "unchanged",
                               message="already in the rolled-back state")
            recorder = JournalHook(journal, rid, undo_of=planned.undo_of)
            try:
                report = await apply_plan(graph, planned.plan,
                                          [recorder, AuditHook(session.audit, rid), *hooks],
                                          concurrency=loaded.playbook.concurrency, mailbox_wait=0)
            except BaseException:
                journal.finish_run(rid, "interrupted")
                raise
            for result in report.results:
                seqs = planned.goes_with.get(result.change.id)
                if seqs and result.outcome in (Outcome.APPLIED, Outcome.UNCHANGED):
                    journal.mark_undone(seqs, by=recorder.done[result.change.id])
            journal.finish_run(rid, "completed" if report.ok else "failed")
            return RolledBack(planned, report, rid)


@dataclass(frozen=True, slots=True)
class Status:
    runs: list[dict[str, object]]
    pending: list[dict[str, object]]
    rollback_would_touch: dict[str, int]


def status(session: Session, loaded: Loaded) -> Status:
    name = loaded.playbook.name
    with Journal(session.settings.state_dir) as journal:
        runs = [{"id": r.id, "kind": r.kind, "operator": r.operator, "started": r.started,
                 "finished": r.finished, "status": r.status, "outcomes": journal.outcome_counts(r.id)}
                for r in journal.runs(name)]
        pending = [{"run_id": e.run_id, "step": e.change.step, "action": e.change.action.value,
                    "target": e.change.target, "person_id": e.change.person_id}
                   for e in journal.pending(name)]
        applied = journal.applied(name)
    users = {e.object_id for e in applied if e.change.step == "account"
             and e.change.action is Action.CREATE}
    touch: dict[str, int] = {"accounts to soft-delete": len(users)}
    for e in applied:
        if e.object_id in users and e.change.step != "account":
            continue
        if e.change.step == "account" and e.change.action is Action.CREATE:
            continue
        key = f"{e.change.step} changes to undo"
        touch[key] = touch.get(key, 0) + 1
    return Status(runs, pending, touch)


def _mailbox_wait(playbook: Playbook) -> float:
    return playbook.mailbox_settings.wait_seconds if playbook.mailbox_settings else 0.0
