"""Gates between cohorts: checks on people, not just on API calls.

Observe, then judge. ``observe`` gathers every fact the cohort's gates need (the journal's
outcomes and approvals, Graph's accounts and sign-ins, the feedback file) into one frozen
``Evidence``; ``judge`` decides from it alone, with the clock passed in, so every verdict
can be tested without a tenant. Each gate answers pass, fail or wait. A failure names the
people and the checks they failed; a wait says what it waits for (time, sign-ins, feedback,
a human). The cohort's state is ``failed`` if any gate fails, else that of the first gate
still waiting, else ``passed``.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import enum
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cohort_state import CohortState
from .cohorts import is_canary
from .errors import InputError
from .graph.gateway import Graph
from .journal import Journal
from .model import Json
from .playbook import ApprovalGate, Cohort, FeedbackGate, Gates, Playbook, SigninGate, VerifyGate
from .roster import Person
from .steps import guide_step, used
from .steps.base import VerifyFacts


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


PASS, FAIL, WAIT = Verdict
WAIT_STATE = {"verify": CohortState.VERIFYING, "signin": CohortState.VERIFYING,
              "feedback": CohortState.VERIFYING, "soak": CohortState.SOAKING,
              "approval": CohortState.AWAITING_APPROVAL}


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    status: Verdict
    detail: str
    people: dict[str, list[str]] = field(default_factory=dict)  # person_id → what failed

    def to_json(self) -> Json:
        return {"gate": self.gate, "status": self.status, "detail": self.detail,
                "people": self.people}


def cohort_state(results: Sequence[GateResult]) -> CohortState:
    if any(r.status is FAIL for r in results):
        return CohortState.FAILED
    waiting = next((r for r in results if r.status is WAIT), None)
    return WAIT_STATE.get(waiting.gate, CohortState.VERIFYING) if waiting else CohortState.PASSED


@dataclass(frozen=True, slots=True)
class GateContext:
    """Where the gates of one cohort look: Graph, the journal, its people."""

    graph: Graph
    playbook: Playbook
    journal: Journal
    cohort: str
    people: Sequence[Person]
    upns: dict[str, str]  # person_id → userPrincipalName
    applied_at: str | None

    @property
    def real_people(self) -> list[Person]:
        return [p for p in self.people if not is_canary(p.person_id)]


@dataclass(frozen=True, slots=True)
class Verified:
    """What the verify gate's checks found after polling: person_id → problems."""

    checked: int
    checks: tuple[str, ...]
    failing: Mapping[str, list[str]]
    timeout: float


@dataclass(frozen=True, slots=True)
class Evidence:
    """Every fact one cohort's gates are judged on, read once."""

    cohort: str
    playbook_source: str
    people: tuple[str, ...]                 # real people (not canaries), person_id
    upns: Mapping[str, str]
    applied_at: dt.datetime | None
    outcomes: Mapping[str, int] = field(default_factory=dict)  # the latest run's outcomes
    verified: Verified | None = None
    sign_ins: Sequence[Json] = ()
    feedback: Mapping[str, Json] | None = None  # person_id → latest answer; None: no file
    feedback_path: str = ""
    approvals: Sequence[tuple[str, str]] = ()    # (who, when) since the cohort was applied
    appliers: frozenset[str] = frozenset()       # who applied the cohort
    guides: Mapping[str, str] | None = None      # person_id → delivered at; None: no guide step


# -- observe -------------------------------------------------------------------------------

async def observe(ctx: GateContext, gates: Gates) -> Evidence:
    """Read what the cohort's gates need, from the journal, Graph and files; decide nothing."""
    pb, journal, people = ctx.playbook, ctx.journal, ctx.real_people
    guide = guide_step(pb)
    feedback, feedback_path = None, ""
    if gates.feedback is not None:
        path = pb.resolve(gates.feedback.file)
        feedback_path = str(path)
        feedback = read_feedback(path) if path.exists() else None
    return Evidence(
        cohort=ctx.cohort, playbook_source=str(pb.source), people=tuple(p.person_id for p in people),
        upns=dict(ctx.upns), applied_at=_parse(ctx.applied_at) if ctx.applied_at else None,
        outcomes=(journal.latest_run_outcomes(pb.name, ctx.cohort)
                  if gates.max_failure_ratio is not None else {}),
        verified=await verify_people(ctx, ctx.people, gates.verify) if gates.verify is not None else None,
        sign_ins=await _sign_ins(ctx, people) if gates.signin is not None else (),
        feedback=feedback, feedback_path=feedback_path,
        approvals=journal.approvals_since(pb.name, ctx.cohort, ctx.applied_at) if gates.approval else (),
        appliers=frozenset(journal.appliers(pb.name, ctx.cohort)) if gates.approval else frozenset(),
        guides=journal.last_applied(pb.name, guide.name) if guide is not None else None,
    )


async def _sign_ins(ctx: GateContext, people: Sequence[Person]) -> list[Json]:
    if ctx.applied_at is None or not people:
        return []
    return await ctx.graph.sign_ins(_odata_time(ctx.applied_at), [ctx.upns[p.person_id] for p in people])


async def verify_people(ctx: GateContext, people: Sequence[Person], spec: VerifyGate) -> Verified:
    """Per-person checks, polled until they all pass or the timeout runs out (Graph is
    eventually consistent: a new mailbox or membership can take a while to show)."""
    steps = used(ctx.playbook)
    owned = [c for s in steps for c in s.verify_checks]
    checks = tuple(c for c in (spec.checks or owned) if c in owned)
    applied = {s.name: ctx.journal.last_applied(ctx.playbook.name, s.name) for s in steps if s.verify_checks}
    deadline = time.monotonic() + spec.timeout
    failing: dict[str, list[str]] = {p.person_id: ["not checked yet"] for p in people}
    kept: dict[str, Any] = {}  # the steps' reads that stay the same across rounds
    while True:
        failing = await _check(ctx, [p for p in people if p.person_id in failing], checks, applied, kept)
        # A device that is not enrolled yet will not enrol while we poll: stop for those.
        if all(_enrolling(v) for v in failing.values()) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(spec.interval, max(deadline - time.monotonic(), 0)))
    return Verified(len(people), checks, failing, spec.timeout)


async def _check(ctx: GateContext, people: Sequence[Person], checks: Sequence[str],
                 applied: Mapping[str, Mapping[str, str]], kept: dict[str, Any]) -> dict[str, list[str]]:
    """One round: read the accounts (batched), then ask each step for its checks."""
    graph = ctx.graph
    users = await graph.batch([graph.user_request(ctx.upns[p.person_id],
                                                  ("id", "accountEnabled", "assignedLicenses",
                                                   "licenseAssignmentStates"))
                               for p in people])
    failing: dict[str, list[str]] = {}
    found: dict[str, Json] = {}
    for p, res in zip(people, users, strict=True):
        if res.status != 200:
            failing[p.person_id] = ["account: not found"]
        else:
            found[p.person_id] = res.body
    facts = VerifyFacts(ctx.playbook, people, ctx.upns, found, applied, kept)
    for step in used(ctx.playbook):
        if set(step.verify_checks) & set(checks):
            for pid, problems in (await step.verify(graph, facts, checks)).items():
                failing.setdefault(pid, []).extend(problems)
    return failing


def _enrolling(problems: list[str]) -> bool:
    return all(p.endswith("not enrolled yet") for p in problems)


# -- judge ---------------------------------------------------------------------------------

def judge(evidence: Evidence, gates: Gates, now: dt.datetime) -> list[GateResult]:
    """The verdict of every gate of the cohort, from the evidence alone."""
    results: list[GateResult] = []
    if gates.max_failure_ratio is not None:
        results.append(failure_ratio(evidence.outcomes, gates.max_failure_ratio))
    if gates.verify is not None and evidence.verified is not None:
        results.append(verdict_of(evidence.verified))
    if gates.signin is not None:
        results.append(signin(evidence, gates.signin, now))
    if gates.feedback is not None:
        results.append(feedback(evidence, gates.feedback))
    if gates.soak is not None:
        results.append(soak(evidence.applied_at, gates.soak, now))
    if gates.approval:
        results.append(approval(evidence, gates.approval))
    if evidence.guides is not None:
        results.append(guides_delivered(evidence))
    return results


async def evaluate(ctx: GateContext, gates: Gates, now: dt.datetime) -> list[GateResult]:
    return judge(await observe(ctx, gates), gates, now)


def failure_ratio(counts: Mapping[str, int], limit: float) -> GateResult:
    total = sum(counts.values())
    failed = counts.get("failed", 0)
    ratio = failed / total if total else 0.0
    detail = f"{failed} of {total} changes failed ({ratio:.0%}; at most {limit:.0%} allowed)"
    return GateResult("max_failure_ratio", PASS if ratio <= limit else FAIL, detail)


def verdict_of(found: Verified, gate: str = "verify") -> GateResult:
    failing = dict(found.failing)
    ok = found.checked - len(failing)
    detail = f"{ok} of {found.checked} people pass {', '.join(found.checks)}"
    if failing and all(_enrolling(v) for v in failing.values()):
        return GateResult(gate, WAIT, f"{detail}; {len(failing)} devices are awaiting enrolment", failing)
    if failing:
        detail += f" (gave up after {found.timeout:.0f} s)"
    return GateResult(gate, FAIL if failing else PASS, detail, failing)


def guides_delivered(evidence: Evidence) -> GateResult:
    delivered = evidence.guides or {}
    missing = {pid: ["guide: not delivered"] for pid in evidence.people if pid not in delivered}
    people = len(evidence.people)
    detail = f"{people - len(missing)} of {people} people have their guide"
    return GateResult("guides", FAIL if missing else PASS, detail, missing)


def guides_late(playbook: Playbook, cohort: Cohort, people: Sequence[Person],
                delivered: Mapping[str, str], now: dt.datetime) -> GateResult | None:
    """A cohort with a start date whose guides cannot all be delivered `lead_days` before it:
    the result that holds it. None: there is still time (or no rule)."""
    guide = guide_step(playbook)
    if cohort.starts is None or guide is None:
        return None
    lead_days = guide.spec(playbook).lead_days
    deadline = dt.datetime.combine(cohort.starts, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=lead_days)
    if now < deadline:
        return None
    late = {p.person_id: [f"guide: not delivered by {deadline:%Y-%m-%d %H:%M} UTC"]
            for p in people if not is_canary(p.person_id)
            and (p.person_id not in delivered or _parse(delivered[p.person_id]) > deadline)}
    if not late:
        return None
    return GateResult("guides", FAIL, f"{len(late)} people have no guide delivered"
                      f" {lead_days:g} days before the cohort starts ({cohort.starts})", late)


def signin(evidence: Evidence, spec: SigninGate, now: dt.datetime) -> GateResult:
    people = evidence.people
    if evidence.applied_at is None or not people:
        return GateResult("signin", WAIT, "waiting for the cohort to be applied")
    events = evidence.sign_ins
    ok = {e["userPrincipalName"].lower() for e in events
          if (e.get("status") or {}).get("errorCode") == 0}
    last_failure: dict[str, str] = {}
    for e in sorted(events, key=lambda e: e["createdDateTime"]):
        code = (e.get("status") or {}).get("errorCode")
        if code:
            last_failure[e["userPrincipalName"].lower()] = f"{code}: {e['status'].get('failureReason', '')}"
    upns = evidence.upns
    without = {pid: [f"signin: {last_failure.get(upns[pid].lower(), 'no sign-in yet')}"]
               for pid in people if upns[pid].lower() not in ok}
    share = 1 - len(without) / len(people)
    detail = (f"{len(people) - len(without)} of {len(people)} people signed in ({share:.0%};"
              f" {spec.min_success:.0%} needed)")
    if share >= spec.min_success:
        return GateResult("signin", PASS, detail)
    closes = evidence.applied_at + dt.timedelta(seconds=spec.window)
    if now < closes:
        return GateResult("signin", WAIT, f"{detail}; the window closes {closes:%Y-%m-%d %H:%M} UTC",
                          without)
    return GateResult("signin", FAIL, f"{detail} within the window", without)


def feedback(evidence: Evidence, spec: FeedbackGate) -> GateResult:
    people = set(evidence.people)
    if evidence.feedback is None:
        return GateResult("feedback", WAIT, f"no feedback file yet ({evidence.feedback_path})")
    latest = {pid: row for pid, row in evidence.feedback.items() if pid in people}
    answered = len(latest) / len(people) if people else 0.0
    if answered < spec.min_responses:
        return GateResult("feedback", WAIT, f"{len(latest)} of {len(people)} people answered"
                          f" ({answered:.0%}; {spec.min_responses:.0%} needed)")
    good = sum(1 for r in latest.values() if r["benefit"] >= spec.benefit_at_least)
    stressed = sum(1 for r in latest.values() if r["stressed"])
    good_share, stressed_share = good / len(latest), stressed / len(latest)
    detail = (f"{good_share:.0%} report benefit ≥ {spec.benefit_at_least} (need"
              f" {spec.min_benefit_share:.0%}), {stressed_share:.0%} stressed (at most"
              f" {spec.max_stressed_share:.0%}), {len(latest)} answers")
    ok = good_share >= spec.min_benefit_share and stressed_share <= spec.max_stressed_share
    unhappy = {pid: [f"feedback: benefit {r['benefit']}" + (", stressed" if r["stressed"] else "")]
               for pid, r in latest.items()
               if r["benefit"] < spec.benefit_at_least or r["stressed"]}
    return GateResult("feedback", PASS if ok else FAIL, detail, {} if ok else unhappy)


def read_feedback(path: Path) -> dict[str, dict[str, Any]]:
    """person_id → their latest week's answer. Every bad line is reported with file:line."""
    text = path.read_text(encoding="utf-8-sig")
    first = text.split("\n", 1)[0]
    reader = csv.DictReader(io.StringIO(text), delimiter=";" if first.count(";") > first.count(",") else ",")
    need = {"person_id", "week", "benefit", "stressed"}
    if not need <= set(reader.fieldnames or ()):
        raise InputError(f"{path}:1: feedback needs the columns {', '.join(sorted(need))}")
    latest: dict[str, dict[str, Any]] = {}
    problems = []
    for row in reader:
        line = reader.line_num
        try:
            week, benefit = int(row["week"]), int(row["benefit"])
            if not 1 <= benefit <= 5:
                raise ValueError("benefit must be 1 to 5")
            stressed = _YES_NO[row["stressed"].strip().lower()]
        except ValueError as exc:
            problems.append(f"{path}:{line}: {exc}")
            continue
        except KeyError:
            problems.append(f"{path}:{line}: stressed must be yes or no")
            continue
        pid = row["person_id"].strip()
        if pid not in latest or week >= latest[pid]["week"]:
            latest[pid] = {"week": week, "benefit": benefit, "stressed": stressed}
    if problems:
        raise InputError("\n".join(problems))
    return latest


_YES_NO = {"yes": True, "ja": True, "no": False, "nej": False}


def soak(applied_at: dt.datetime | None, seconds: float, now: dt.datetime) -> GateResult:
    if applied_at is None:
        return GateResult("soak", WAIT, "waiting for the cohort to be applied")
    until = applied_at + dt.timedelta(seconds=seconds)
    if now >= until:
        return GateResult("soak", PASS, f"soaked since {applied_at.isoformat()[:19]}")
    return GateResult("soak", WAIT, f"soaking until {until:%Y-%m-%d %H:%M:%S} UTC")


def approval(evidence: Evidence, spec: ApprovalGate) -> GateResult:
    """Passes on an approval by someone the gate allows: one of its approvers, if it names
    them, and not one who applied the cohort, if it must be another. An approval that does
    not count (recorded by hand, or before the rule changed) is said, and does not pass."""
    refused = []
    for who, when in evidence.approvals:
        if not spec.allows(who):
            refused.append(f"{who} is not one of the approvers ({', '.join(spec.approvers)})")
        elif spec.distinct_from_applier and who.casefold() in {a.casefold() for a in evidence.appliers}:
            refused.append(f"{who} applied the cohort and may not approve it too")
        else:
            return GateResult("approval", PASS, f"approved by {who} at {when[:19]}")
    why = f" (not counted: {'; '.join(refused)})" if refused else ""
    return GateResult("approval", WAIT, f"awaiting `provisioner approve {evidence.playbook_source}"
                      f" --cohort {evidence.cohort}`{why}")


def _parse(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _odata_time(iso: str) -> str:
    return _parse(iso).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
