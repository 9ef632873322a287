"""A rollback carried out: the undo plan applied with the journal and the audit log as hooks,
what was already undone recorded as such."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog

from .graph.gateway import Graph
from .journal import Journal
from .model import GROUP_SUBJECT, Plan
from .reconcile import RollbackPlan, plan_rollback, select
from .recorders import AuditHook, JournalHook
from .rollout import Hook, Report, apply_plan
from .session import Loaded, Session

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, slots=True)
class RolledBack:
    rollback: RollbackPlan
    report: Report | None
    run_id: str | None


async def rollback_with(graph: Graph, journal: Journal, session: Session, loaded: Loaded,
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
    audited = AuditHook(session.audited_run(rid, loaded.playbook, cohort))
    people, groups = _split(planned.plan)
    try:
        with structlog.contextvars.bound_contextvars(run_id=rid, cohort=cohort):
            report = await apply_plan(graph, people, [recorder, audited, *hooks],
                                      mailbox_wait=0, state_dir=session.settings.state_dir)
            if groups.changes:  # the groups the playbook made go last, and only when empty
                groups = await _without_kept(graph, groups, planned)
                more = await apply_plan(graph, groups, [recorder, audited, *hooks],
                                        mailbox_wait=0, state_dir=session.settings.state_dir)
                report = Report([*report.results, *more.results])
    except BaseException:
        journal.finish_run(rid, "interrupted")
        raise
    journal.finish_run(rid, "completed" if report.ok else "failed")
    return RolledBack(planned, report, rid)


def _split(plan: Plan) -> tuple[Plan, Plan]:
    """(the people's undo, the undo of the groups the playbook made)."""
    mine = [c for c in plan.changes if c.person_id.startswith(GROUP_SUBJECT)]
    rest = [c for c in plan.changes if not c.person_id.startswith(GROUP_SUBJECT)]
    return (replace(plan, changes=tuple(rest)),
            replace(plan, changes=tuple(mine), people={c.person_id: plan.people[c.person_id] for c in mine}))


async def _without_kept(graph: Graph, groups: Plan, planned: RollbackPlan) -> Plan:
    """A group the playbook made is removed (with its licence) only when the people's undo has
    left it empty: members someone else added keep it, and its licence, as they are."""
    kept = set()
    for pid, target in groups.people.items():
        if target.user_id is None:
            continue
        members = await graph.group_member_ids(target.user_id)
        if members:
            kept.add(pid)
            planned.blocked.append(f"group {target.upn!r}: kept, with its licence: it has {len(members)}"
                                   " members this rollback did not add (remove them, then roll back again)")
    return replace(groups, changes=tuple(c for c in groups.changes if c.person_id not in kept))
