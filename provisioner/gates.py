"""Gates between cohorts: checks on people, not just on API calls.

Each gate answers pass, fail or wait. A failure names the people and the checks they failed;
a wait says what it waits for (time, sign-ins, feedback, a human). The cohort's state is
``failed`` if any gate fails, else that of the first gate still waiting, else ``passed``.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cohorts import is_canary
from .errors import InputError
from .graph.gateway import Graph
from .journal import Journal
from .model import Json
from .playbook import FeedbackGate, Gates, Playbook, SigninGate, VerifyGate
from .roster import Person
from .steps.groups import group_names

PASS, FAIL, WAIT = "pass", "fail", "wait"
WAIT_STATE = {"verify": "verifying", "signin": "verifying", "feedback": "verifying",
              "soak": "soaking", "approval": "awaiting approval"}


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    status: str
    detail: str
    people: dict[str, list[str]] = field(default_factory=dict)  # person_id → what failed

    def to_json(self) -> Json:
        return {"gate": self.gate, "status": self.status, "detail": self.detail,
                "people": self.people}


def cohort_state(results: Sequence[GateResult]) -> str:
    if any(r.status == FAIL for r in results):
        return "failed"
    waiting = next((r for r in results if r.status == WAIT), None)
    return WAIT_STATE.get(waiting.gate, "verifying") if waiting else "passed"


@dataclass(frozen=True, slots=True)
class GateContext:
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


async def evaluate(ctx: GateContext, gates: Gates) -> list[GateResult]:
    results: list[GateResult] = []
    if gates.max_failure_ratio is not None:
        results.append(failure_ratio(ctx, gates.max_failure_ratio))
    if gates.verify is not None:
        results.append(await verify(ctx, ctx.people, gates.verify))
    if gates.signin is not None:
        results.append(await signin(ctx, gates.signin))
    if gates.feedback is not None:
        results.append(feedback(ctx, gates.feedback))
    if gates.soak is not None:
        results.append(soak(ctx, gates.soak))
    if gates.approval:
        results.append(approval(ctx))
    if "guide" in ctx.playbook.steps:
        results.append(guides_delivered(ctx))
    return results


def guides_delivered(ctx: GateContext) -> GateResult:
    delivered = ctx.journal.last_applied(ctx.playbook.name, "guide")
    missing = {p.person_id: ["guide: not delivered"] for p in ctx.real_people
               if p.person_id not in delivered}
    people = len(ctx.real_people)
    detail = f"{people - len(missing)} of {people} people have their guide"
    return GateResult("guides", FAIL if missing else PASS, detail, missing)


def guides_late(playbook: Playbook, cohort: Any, people: Sequence[Person],
                journal: Journal) -> GateResult | None:
    """A cohort with a start date whose guides cannot all be delivered `lead_days` before it:
    the result that holds it. None: there is still time (or no rule)."""
    if cohort.starts is None or playbook.guide is None or "guide" not in playbook.steps:
        return None
    lead = dt.timedelta(days=playbook.guide.lead_days)
    deadline = dt.datetime.combine(cohort.starts, dt.time(), tzinfo=dt.UTC) - lead
    if dt.datetime.now(dt.UTC) < deadline:
        return None
    delivered = journal.last_applied(playbook.name, "guide")
    late = {p.person_id: [f"guide: not delivered by {deadline:%Y-%m-%d %H:%M} UTC"]
            for p in people if not is_canary(p.person_id)
            and (p.person_id not in delivered or _parse(delivered[p.person_id]) > deadline)}
    if not late:
        return None
    return GateResult("guides", FAIL, f"{len(late)} people have no guide delivered"
                      f" {playbook.guide.lead_days:g} days before the cohort starts ({cohort.starts})",
                      late)


def failure_ratio(ctx: GateContext, limit: float) -> GateResult:
    counts = ctx.journal.latest_run_outcomes(ctx.playbook.name, ctx.cohort)
    total = sum(counts.values())
    failed = counts.get("failed", 0)
    ratio = failed / total if total else 0.0
    detail = f"{failed} of {total} changes failed ({ratio:.0%}; at most {limit:.0%} allowed)"
    return GateResult("max_failure_ratio", PASS if ratio <= limit else FAIL, detail)


async def verify(ctx: GateContext, people: Sequence[Person], spec: VerifyGate) -> GateResult:
    """Per-person checks, polled until they all pass or the timeout runs out (Graph is
    eventually consistent: a new mailbox or membership can take a while to show)."""
    expected = await _expected(ctx, people)
    checks = [c for c in spec.checks if _applies(c, ctx.playbook)]
    deadline = time.monotonic() + spec.timeout
    failing = {p.person_id: ["not checked yet"] for p in people}
    while True:
        failing = await _check(ctx, [p for p in people if p.person_id in failing], checks, expected)
        # A device that is not enrolled yet will not enrol while we poll: stop for those.
        if all(_enrolling(v) for v in failing.values()) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(spec.interval, max(deadline - time.monotonic(), 0)))
    ok = len(people) - len(failing)
    detail = f"{ok} of {len(people)} people pass {', '.join(checks)}"
    if failing and all(_enrolling(v) for v in failing.values()):
        return GateResult("verify", WAIT, f"{detail}; {len(failing)} devices are awaiting enrolment",
                          failing)
    if failing:
        detail += f" (gave up after {spec.timeout:.0f} s)"
    return GateResult("verify", FAIL if failing else PASS, detail, failing)


def _enrolling(problems: list[str]) -> bool:
    return all(p.endswith("not enrolled yet") for p in problems)


def _applies(check: str, playbook: Playbook) -> bool:
    needs = {"license": "license", "mailbox": "license", "groups": "groups",
             "device": "device_settings"}
    return check not in needs or needs[check] in playbook.steps


async def _expected(ctx: GateContext, people: Sequence[Person]) -> dict[str, Any]:
    sku_id = None
    if ctx.playbook.license is not None and "license" in ctx.playbook.steps:
        skus = await ctx.graph.subscribed_skus()
        sku_id = next((s["skuId"] for s in skus if s["skuPartNumber"] == ctx.playbook.license.sku), None)
    groups: dict[str, str] = {}
    if "groups" in ctx.playbook.steps:
        groups = {g["displayName"]: g["id"] for g in await ctx.graph.list_groups(("id", "displayName"))}
    wanted = {p.person_id: {groups.get(n, n) for n in group_names(ctx.playbook.groups, p)}
              for p in people}
    return {"sku": sku_id, "groups": wanted}


# Group-based licensing's errors (licenseAssignmentStates), in words an admin can act on.
LICENCE_ERRORS = {
    "CountViolation": "no licence left to give: buy more or free some, and Entra assigns it",
    "MutuallyExclusiveViolation": "it conflicts with another licence the user has",
    "DependencyViolation": "a service plan it needs is not assigned",
    "ProhibitedInUsageLocationViolation": "it is not available in the user's usageLocation",
    "UniquenessViolation": "an attribute it needs (such as the proxy address) is taken",
}


def licence_problem(user: dict[str, Any], sku_id: str | None, sku_name: str) -> str | None:
    """Why the user does not have the SKU, or None when they have it."""
    if any(lic["skuId"] == sku_id for lic in user.get("assignedLicenses") or []):
        return None
    for state in user.get("licenseAssignmentStates") or []:
        if state.get("skuId") == sku_id and state.get("state") == "Error":
            code = state.get("error") or "Others"
            return (f"license: {sku_name} is not assigned: the licensing group reports {code}"
                    f" ({LICENCE_ERRORS.get(code, 'see the group in Entra, Licenses')})")
    return f"license: {sku_name} is not assigned"


async def _check(ctx: GateContext, people: Sequence[Person], checks: Sequence[str],
                 expected: dict[str, Any]) -> dict[str, list[str]]:
    graph = ctx.graph
    users = await graph.batch([graph.user_request(ctx.upns[p.person_id],
                                                  ("id", "accountEnabled", "assignedLicenses",
                                                   "licenseAssignmentStates"))
                               for p in people])
    failing: dict[str, list[str]] = {}
    found: dict[str, str] = {}
    for p, res in zip(people, users, strict=True):
        if res.status != 200:
            failing[p.person_id] = ["account: not found"]
            continue
        found[p.person_id] = res.body["id"]
        problems = []
        if "account_enabled" in checks and not res.body.get("accountEnabled"):
            problems.append("account_enabled: the account is disabled, sign-in is impossible")
        if "license" in checks:
            problem = licence_problem(res.body, expected["sku"],
                                      ctx.playbook.license.sku if ctx.playbook.license else "")
            problems += [problem] if problem else []
        if problems:
            failing[p.person_id] = problems
    pids = list(found)
    requests = []
    if "mailbox" in checks:
        requests += [graph.mailbox_settings_request(found[pid]) for pid in pids]
    if "groups" in checks:
        requests += [graph.member_of_request(found[pid]) for pid in pids]
    results = await graph.batch(requests) if requests else []
    mailbox = results[: len(pids)] if "mailbox" in checks else []
    member_of = results[len(mailbox):]
    device_problems = await _devices(ctx, people, found) if "device" in checks else {}
    for i, pid in enumerate(pids):
        problems = failing.get(pid, []) + device_problems.get(pid, [])
        if mailbox and mailbox[i].status != 200:
            code = ((mailbox[i].body or {}).get("error") or {}).get("code", mailbox[i].status)
            problems.append(f"mailbox: not reachable ({code})")
        if member_of:
            have = {g["id"] for g in (member_of[i].body or {}).get("value", [])}
            missing = expected["groups"][pid] - have
            if missing:
                problems.append(f"groups: {len(missing)} expected memberships missing")
        if problems:
            failing[pid] = problems
    return failing


async def _devices(ctx: GateContext, people: Sequence[Person],
                   found: dict[str, str]) -> dict[str, list[str]]:
    """Each person's device: in its profile's groups, checked in since the change, compliant."""
    from .snapshot import read_intune

    devices_spec = ctx.playbook.devices
    assert devices_spec is not None
    intune = await read_intune(ctx.graph)
    groups = {g["displayName"]: g["id"] for g in await ctx.graph.list_groups(("id", "displayName"))}
    members: dict[str, set[str]] = {}
    changed = ctx.journal.last_applied(ctx.playbook.name, "device_settings")
    out: dict[str, list[str]] = {}
    for p in people:
        if is_canary(p.person_id) or p.person_id not in found:
            continue  # synthetic accounts have no device; a missing account is reported already
        profile = devices_spec.for_model(p.device_model) if p.device_model else None
        candidates = intune.for_person(ctx.upns[p.person_id], p.device_serial)
        device = next((d for d in candidates if (p.device_serial and d.serial == p.device_serial)
                       or (profile and profile.reports(d.model, d.os))), None)
        if profile is None and device is not None:
            profile = next((x for x in devices_spec.profiles if x.reports(device.model, device.os)), None)
        if profile is None:
            continue  # no device for this person in the playbook
        if device is None:
            out[p.person_id] = [f"device: {profile.model} not enrolled yet"]
            continue
        problems = []
        object_id = intune.object_ids.get(device.azure_ad_device_id, "")
        for name in profile.groups:
            if name not in members:
                gid = groups.get(name)
                members[name] = set(await ctx.graph.group_member_ids(gid)) if gid else set()
            if object_id not in members[name]:
                problems.append(f"device: {device.serial} is not in {name}")
        since = changed.get(p.person_id)  # the device must check in after its own last change
        if since and device.last_sync < _odata_ms(since):
            problems.append(f"device: {device.serial} has not checked in since the change"
                            f" (last {device.last_sync[:16] or 'never'})")
        if device.compliance != "compliant":
            problems.append(f"device: {device.serial} is {device.compliance or 'not evaluated'}")
        if problems:
            out[p.person_id] = problems
    return out


def _odata_ms(iso: str) -> str:
    return _parse(iso).astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def signin(ctx: GateContext, spec: SigninGate) -> GateResult:
    people = ctx.real_people
    if ctx.applied_at is None or not people:
        return GateResult("signin", WAIT, "waiting for the cohort to be applied")
    events = await ctx.graph.sign_ins(_odata_time(ctx.applied_at), [ctx.upns[p.person_id] for p in people])
    ok = {e["userPrincipalName"].lower() for e in events
          if (e.get("status") or {}).get("errorCode") == 0}
    last_failure: dict[str, str] = {}
    for e in sorted(events, key=lambda e: e["createdDateTime"]):
        code = (e.get("status") or {}).get("errorCode")
        if code:
            last_failure[e["userPrincipalName"].lower()] = f"{code}: {e['status'].get('failureReason', '')}"
    without = {p.person_id: [f"signin: {last_failure.get(ctx.upns[p.person_id].lower(), 'no sign-in yet')}"]
               for p in people if ctx.upns[p.person_id].lower() not in ok}
    share = 1 - len(without) / len(people)
    detail = (f"{len(people) - len(without)} of {len(people)} people signed in ({share:.0%};"
              f" {spec.min_success:.0%} needed)")
    if share >= spec.min_success:
        return GateResult("signin", PASS, detail)
    closes = _parse(ctx.applied_at) + dt.timedelta(seconds=spec.window)
    if dt.datetime.now(dt.UTC) < closes:
        return GateResult("signin", WAIT, f"{detail}; the window closes {closes:%Y-%m-%d %H:%M} UTC",
                          without)
    return GateResult("signin", FAIL, f"{detail} within the window", without)


def feedback(ctx: GateContext, spec: FeedbackGate) -> GateResult:
    path = spec.file if spec.file.is_absolute() else ctx.playbook.source.parent / spec.file
    people = {p.person_id for p in ctx.real_people}
    if not path.exists():
        return GateResult("feedback", WAIT, f"no feedback file yet ({path})")
    latest = {pid: row for pid, row in read_feedback(path).items() if pid in people}
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


def soak(ctx: GateContext, seconds: float) -> GateResult:
    if ctx.applied_at is None:
        return GateResult("soak", WAIT, "waiting for the cohort to be applied")
    until = _parse(ctx.applied_at) + dt.timedelta(seconds=seconds)
    if dt.datetime.now(dt.UTC) >= until:
        return GateResult("soak", PASS, f"soaked since {ctx.applied_at[:19]}")
    return GateResult("soak", WAIT, f"soaking until {until:%Y-%m-%d %H:%M:%S} UTC")


def approval(ctx: GateContext) -> GateResult:
    found = ctx.journal.approval_since(ctx.playbook.name, ctx.cohort, ctx.applied_at)
    if found:
        return GateResult("approval", PASS, f"approved by {found[0]} at {found[1][:19]}")
    return GateResult("approval", WAIT, f"awaiting `provisioner approve {ctx.playbook.source}"
                      f" --cohort {ctx.cohort}`")


def _parse(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _odata_time(iso: str) -> str:
    return _parse(iso).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
