"""Text for people: plans, apply progress and summaries. No logic beyond layout."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from .model import GROUP_SUBJECT, PREREQUISITES, Action, Change, Plan
from .rollout import ChangeResult, Hook, Report

if TYPE_CHECKING:
    from .reports import DeviceRow, DevicesReport, DualRoleRow, Status

_COLOURS = {Action.CREATE: "green", Action.UPDATE: "yellow", Action.DELETE: "red"}


def plan_lines(plan: Plan, *, detailed: bool = False, color: bool = False) -> Iterator[str]:
    people = sum(1 for pid in plan.people if not pid.startswith(GROUP_SUBJECT))
    yield f"Plan for {plan.playbook_name}: {people} people"
    for warning in plan.warnings:
        yield click.style(f"warning: {warning}", fg="yellow") if color else f"warning: {warning}"
    cohorts = plan.by_cohort()
    order = [c for c in plan.cohort_order if c != PREREQUISITES]
    staged = len(order) > 1 or (order and order[0] != "all")
    for cohort, cohort_changes in cohorts.items():
        indent = "  " if staged else ""
        if cohort == PREREQUISITES:
            yield ""
            yield (f"Groups the playbook owns (groups.create), made before any cohort"
                   f" ({len(cohort_changes)} changes)")
        elif staged:
            size = sum(1 for pid in plan.people if plan.cohort_of.get(pid) == cohort)
            yield ""
            yield f"Cohort {cohort} ({size} people, {len(cohort_changes)} changes)"
        part = replace(plan, changes=tuple(cohort_changes))
        for step, changes in part.by_step().items():
            yield ""
            yield f"{indent}{step} ({len(changes)})"
            for change in changes:
                label = plan.reversibility.get(change.id, "")
                suffix = f"  ({label})" if label and label != "reversible" else ""
                yield f"{indent}  " + _change_line(change, color) + suffix
                if detailed:
                    yield from (f"{indent}      {line}" for line in _diff(change))
    one_way = [c for c in plan.changes if plan.reversibility.get(c.id) == "one-way"]
    if plan.scheduled:
        yield ""
        yield f"Scheduled for leavers ({len(plan.scheduled)}): on a later run"
        yield from (f"  scheduled: {pid} {plan.people[pid].upn if pid in plan.people else ''}: {what}"
                    for pid, what in sorted(plan.scheduled.items()))
    if plan.notes:
        yield ""
        yield f"For the admin ({len(plan.notes)}):"
        yield from (f"  ! {pid}: {what}" for pid, what in sorted(plan.notes.items()))
    if plan.awaiting:
        yield ""
        yield f"Devices awaiting enrolment ({len(plan.awaiting)}): picked up by a later apply"
        yield from (f"  … {pid}: {why}" for pid, why in sorted(plan.awaiting.items()))
    if plan.held:
        yield ""
        yield f"Held for a dual-role decision ({len(plan.held)}): nothing is made for them yet"
        yield from (f"  ? {pid}: {why}" for pid, why in sorted(plan.held.items()))
    yield ""
    if one_way:
        yield (f"Note: {len(one_way)} one-way changes cannot be undone by rollback"
               f" ({', '.join(sorted({c.step for c in one_way}))}).")
    yield summary_line(plan)


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    held = f" {len(plan.held)} held for a decision." if plan.held else ""
    if not plan.changes:
        return "No changes. The tenant matches the playbook." + held
    return f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete." + held


def _change_line(change: Change, color: bool) -> str:
    verb, what = _words(change)
    head = f"{change.action.symbol} {verb:<6}"
    if color:
        head = click.style(head, fg=_COLOURS[change.action])
    if change.person_id.startswith(GROUP_SUBJECT):
        return f"{head} {what}"
    return f"{head} {what}  [{change.person_id}]"


def _words(change: Change) -> tuple[str, str]:
    """(verb, object) as an admin says them: a membership is one, a group made is a group."""
    shape = change.after if change.action is not Action.DELETE else change.before
    shape = shape or {}
    parts = change.target.split(":")  # group:NAME:UPN, license:UPN:SKU
    upn = parts[1] if parts[0] == "license" else parts[-1]
    group = shape.get("viaGroup") or (shape.get("group") if "member" in shape else None)
    if group and "groupId" in shape:
        gives = f" (gives {shape['skuPartNumber']})" if "skuPartNumber" in shape else ""
        if change.action is Action.DELETE:
            return "remove", f"{upn} from group {group}{gives}"
        return "add", f"{upn} to group {group}{gives}"
    if change.person_id.startswith(GROUP_SUBJECT):
        name = change.person_id.removeprefix(GROUP_SUBJECT)
        if "skuId" in shape:
            verb = {"create": "assign", "update": "update", "delete": "remove"}[change.action.value]
            return verb, f"licence {shape['skuPartNumber']} on group {name}"
        return change.action.value, f"security group {name}"
    return change.action.value, change.target


def _diff(change: Change) -> Iterator[str]:
    before = change.before or {}
    for key, value in (change.after or {}).items():
        if key in before:
            yield f"{key}: {_short(before[key])} -> {_short(value)}"
        else:
            yield f"{key}: {_short(value)}"


def _short(value: Any) -> str:
    """A value as Graph gets it (JSON), cut at 100 characters."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 100 else text[:97] + "..."


def report_lines(report: Report) -> Iterator[str]:
    counts = report.counts()
    order = ("applied", "unchanged", "pending", "failed", "skipped")
    for result in report.failed:
        yield failure_line(result)
    yield "Apply complete: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in order) + "."
    if counts.get("pending"):
        yield ("Some mailboxes are not provisioned yet (Exchange takes minutes to hours);"
               " run apply again later to finish their settings.")


def failure_line(result: ChangeResult) -> str:
    rid = f" (request-id {result.request_id})" if result.request_id else ""
    return (f"failed: {result.change.person_id} {result.change.step} {result.change.target}:"
            f" {result.code}: {result.message}{rid}")


class NoProgress(Hook):
    """Nothing on the screen (apply --json: the document is the only output)."""

    def begin(self, total: int) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress(Hook):
    """Plain lines, one per finished change: for logs, pipes and CI."""

    def begin(self, total: int) -> None:
        click.echo(f"Applying {total} changes.")

    def close(self) -> None:
        pass

    def finished(self, result: ChangeResult) -> None:
        c = result.change
        click.echo(f"{result.outcome.value:<9} {c.step:<16} {c.target}  [{c.person_id}]")


class BarProgress(Hook):
    """A progress bar on a terminal (rich), with failures printed as they happen."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.progress = Progress("[progress.description]{task.description}", BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
        self.task = self.progress.add_task("applying", total=0)

    def begin(self, total: int) -> None:
        self.progress.reset(self.task, total=total)
        self.progress.start()

    def close(self) -> None:
        self.progress.stop()  # safe to call twice

    def finished(self, result: ChangeResult) -> None:
        self.progress.advance(self.task)
        if result.code and result.outcome.value == "failed":
            self.progress.console.print(failure_line(result), markup=False)


def rollback_lines(planned: Any, *, color: bool = False) -> Iterator[str]:
    """The rollback plan in the same format as ``plan``, then what stands in its way."""
    plan = planned.plan
    yield f"Rollback for {plan.playbook_name}: {len(plan.people)} people"
    for step, changes in plan.by_step().items():
        yield ""
        yield f"{step} ({len(changes)})"
        for change in changes:
            yield "  " + _change_line(change, color)
    if planned.already:
        yield ""
        yield f"Already undone (nothing to write): {len(planned.already)}"
    if planned.one_way:
        yield ""
        yield f"One-way, not undone (plan said so before they were made) ({len(planned.one_way)}):"
        yield from (f"  {what}" for what in planned.one_way)
    if planned.blocked:
        yield ""
        yield f"Blocked ({len(planned.blocked)}):"
        yield from (f"  {why}" for why in planned.blocked)
    yield ""
    s = plan.summary()
    yield (f"Rollback: {s['create']} to create, {s['update']} to update, {s['delete']} to delete."
           if plan.changes else "Rollback: nothing to undo.")


def cohort_lines(outcome: Any) -> Iterator[str]:
    yield f"Cohort {outcome.cohort}: {outcome.state}"
    for gate in outcome.gates:
        yield f"  {gate.gate:<18} {gate.status:<5} {gate.detail}"
        for pid, problems in sorted(gate.people.items())[:50]:
            yield f"    {pid}: {'; '.join(problems)}"
        if len(gate.people) > 50:
            yield f"    ... and {len(gate.people) - 50} more people"


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console = Console(width=160, record=True, file=_Discard())
    console.print(table)
    return console.export_text().rstrip().splitlines()


_DONE = {"create": "created", "update": "changed", "delete": "removed"}


def history_lines(records: list[dict[str, Any]], query: dict[str, str]) -> Iterator[str]:
    """`audit show`: one line per record, who and when first, then what changed."""
    asked = ", ".join(f"{k} {v}" for k, v in query.items())
    if not records:
        yield f"nothing in the audit log about {asked}"
        return
    yield f"{len(records)} audit records about {asked}:"
    for r in records:
        who = f"{r.get('operator', '?')}@{r.get('host', '?')}"
        if r.get("graph_identity"):
            who += f" as {r['graph_identity']}"
        when = str(r.get("ts", ""))[:19].replace("T", " ")
        event = r.get("event")
        if event == "graph_write":
            did = _DONE.get(str(r.get("action")), str(r.get("action")))
            what = f"{did} {r.get('target')} ({r.get('step')}): {r.get('outcome')}"
        elif event == "command":
            what = f"ran `{r.get('command')}`, exit {r.get('exit_status')}"
        elif event == "approval":
            what = f"approved cohort {r.get('cohort')} as {r.get('approved_by')} ({r.get('identity')})"
        elif event == "gates":
            what = f"gates of cohort {r.get('cohort')}: {r.get('state')}"
        else:
            what = str(event)
        yield f"  {when}  {who}  {what}"
        details = [f"person {r['person_id']}" if r.get("person_id") else "",
                   f"cohort {r['cohort']}" if r.get("cohort") and event == "graph_write" else "",
                   f"run {r['run_id']}" if r.get("run_id") else "",
                   f"request-id {r['request_id']}" if r.get("request_id") else "",
                   f"error {r['error_code']}" if r.get("error_code") else ""]
        if any(details):
            yield "      " + ", ".join(d for d in details if d)
        before = r.get("before") if isinstance(r.get("before"), dict) else {}
        for key, value in (r.get("after") or {}).items() if isinstance(r.get("after"), dict) else ():
            if key in before and before[key] != value:
                yield f"      {key}: {_short(before[key])} -> {_short(value)}"
            elif key not in before:
                yield f"      {key}: {_short(value)}"


def signin_lines(result: Any) -> Iterator[str]:
    """`signin-check`: a row per person and way; then what blocks whom, and what to do."""
    rows = []
    for p in result.predictions:
        for w in p.ways:
            blocking = ", ".join(h.policy for h in w.blocked_by)
            watched = ", ".join(h.policy for h in w.hits if h.report_only and h.blocks)
            note = blocking or (f"report-only: {watched}" if watched else "")
            if p.web_mail and w is not p.ways[0]:
                note += " (the guide names Outlook on the web)"
            rows.append((p.person_id, p.upn, w.way.label, str(w.verdict), note, p.by))
    title = f"Sign-in prediction{f' for cohort {result.cohort}' if result.cohort else ''}"
    yield from _table(title, ("person", "address", "way", "verdict", "policy", "by"), rows)
    for line in result.blocked:
        yield f"BLOCKED: {line}"
    for line in [*result.web_mail, *result.report_only]:
        yield f"note: {line}"
    if result.ok:
        yield f"Everyone can sign in ({len(result.predictions)} people)."


def status_lines(status: Status) -> Iterator[str]:
    rows = []
    for c in status.cohorts:
        gates = ", ".join(f"{g['gate']} {g['status']}" for g in c.gates)
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(c.outcomes.items()))
        people = f"{c.people}" + (f" +{c.canaries} canary" if c.canaries else "")
        rows.append((c.name, people, c.state, (c.applied_at or "")[:19], outcomes, gates))
    yield from _table("Cohorts", ("cohort", "people", "state", "applied", "changes", "gates"), rows)
    for c in status.cohorts:
        for g in c.gates:
            if g["status"] != "pass":
                yield f"  {c.name}: {g['gate']} {g['status']}: {g['detail']}"
                for pid, problems in sorted(g["people"].items())[:20]:
                    yield f"    {pid}: {'; '.join(problems)}"
    yield ""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Runs", show_lines=False)
    for col in ("run", "kind", "operator", "started", "finished", "status", "outcomes"):
        table.add_column(col)
    for r in status.runs:
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(r.outcomes.items()))
        table.add_row(r.id, r.kind, r.operator, r.started[:19], (r.finished or "")[:19], r.status, outcomes)
    console = Console(width=160, record=True, file=_Discard())
    console.print(table)
    yield from console.export_text().rstrip().splitlines()
    yield ""
    yield f"Unfinished writes (pending intents): {len(status.pending)}"
    yield from (f"  {p.run_id} {p.step} {p.action} {p.target} [{p.person_id}]" for p in status.pending)
    touch = ", ".join(f"{n} {what}" for what, n in status.rollback_would_touch.items() if n)
    yield f"A rollback of everything would touch: {touch or 'nothing'}"


class _Discard:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def dual_role_lines(rows: list[DualRoleRow]) -> Iterator[str]:
    if not rows:
        yield "No roster person matches an existing account."
        return
    for row in rows:
        yield f"{row.person_id} {row.name}: {row.status}" + (f" ({row.reason})" if row.reason else "")
        yield f"  applies: {row.applies}"
        if row.account:
            yield f"  has: {row.account}"
        for c in row.candidates:
            flags = ("" if c.enabled else ", disabled") + (f", made by {c.made_by}" if c.made_by else "")
            yield (f"  candidate {c.upn} ({c.display_name}{flags}): score {c.score:.2f},"
                   f" evidence {', '.join(c.evidence)}")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    yield ""
    yield "Dual roles: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def dual_role_csv(rows: list[DualRoleRow], *, excel: bool = False) -> str:
    from .csvout import to_csv

    header = ["person_id", "name", "status", "reason", "applies", "candidate_user_id",
              "candidate_upn", "score", "evidence", "enabled"]
    return to_csv(header, ([row.person_id, row.name, row.status, row.reason, row.applies, *(
        (c.user_id, c.upn, c.score, " ".join(c.evidence), c.enabled) if c else ("",) * 5)]
        for row in rows for c in row.candidates or (None,)), excel=excel)


def device_lines(report: DevicesReport) -> Iterator[str]:
    rows = [(r.person_id, r.name, r.category or "", r.cohort or "", r.model or "", r.serial or "",
             ", ".join(r.groups), (r.last_check_in or "")[:16], r.state) for r in report.people]
    yield from _table("Devices", ("person", "name", "category", "cohort", "model", "serial", "group",
                                  "last check-in", "state"), rows)
    for key, counts in report.totals.items():
        yield f"per {key}: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))


def device_csv(rows: Sequence[DeviceRow], *, excel: bool = False) -> str:
    from .csvout import to_csv

    fields = ["person_id", "name", "category", "cohort", "model", "serial", "profile", "groups",
              "last_check_in", "compliance", "state"]
    return to_csv(fields, ([{**r.to_json(), "groups": " ".join(r.groups)}[f] for f in fields] for r in rows),
                  excel=excel)


def plan_markdown(plan: Plan, ready: Any, *, playbook: str) -> str:
    """A summary for a pull-request comment or a pipeline's job summary: per cohort the counts
    by action, one-way changes and held people, then the preflight verdict. Counts and
    person_ids only: no names or addresses in a comment others may read."""
    cohorts = plan.by_cohort()
    lines = [f"### provisioner plan: {_md(playbook)}", "",
             "| cohort | people | create | update | delete | one-way | held |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, changes in cohorts.items():
        counts = {a: sum(1 for c in changes if c.action is a) for a in Action}
        people = sum(1 for pid in plan.people if plan.cohort_of.get(pid) == name)
        one_way = sum(1 for c in changes if plan.reversibility.get(c.id) == "one-way")
        held = sum(1 for pid in plan.held if plan.cohort_of.get(pid) == name)
        lines.append(f"| {_md(name or '-')} | {people} | {counts[Action.CREATE]} | {counts[Action.UPDATE]}"
                     f" | {counts[Action.DELETE]} | {one_way} | {held} |")
    total = plan.summary()
    lines += ["", f"**{len(plan.changes)} changes**: {total['create']} to create, {total['update']} to"
                  f" update, {total['delete']} to delete."]
    which = f" for cohort {_md(ready.cohort)}" if ready.cohort else ""
    lines += ["", f"**Preflight{which}**: " + ("ready." if ready.ok else "NOT READY, apply will refuse:")]
    lines += [f"- **{c.status}** {_md(c.name)}: {_md(c.detail)}" for c in ready.checks if c.status != "ok"]
    if ready.refusal:
        lines += ["", f"**Apply would refuse**: {_md(ready.refusal)}"]
    if plan.held:
        lines += ["", f"<details><summary>Held for a decision ({len(plan.held)})</summary>", ""]
        lines += [f"- {_md(pid)}: {_md(why)}" for pid, why in sorted(plan.held.items())]
        lines += ["", "</details>"]
    if plan.warnings:
        lines += ["", "**Warnings**:"] + [f"- {_md(w)}" for w in plan.warnings]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Text that stays text in Markdown: no table breaks, links, HTML or mentions."""
    return "".join("\\" + ch if ch in "\\`*_[]<>|#@!" else ch for ch in text.replace("\n", " "))
