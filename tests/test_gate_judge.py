"""The pure tier: gates judged from evidence built in memory, with the clock passed in."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from provisioner.cohort_state import JUDGED, CohortState, IllegalTransition, advance
from provisioner.gates import (
    FAIL,
    PASS,
    WAIT,
    Evidence,
    GateResult,
    Verified,
    cohort_state,
    guides_late,
    judge,
    verdict_of,
)
from provisioner.playbook import Cohort, Gates, SigninGate

from .builders import person, playbook

APPLIED = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
PEOPLE = ("p1", "p2", "p3", "p4")
UPNS = {pid: f"{pid}@politiker.example.se" for pid in PEOPLE}


def evidence(**facts: Any) -> Evidence:
    facts.setdefault("applied_at", APPLIED)
    return Evidence(cohort="pilot", playbook_source="playbook.yaml", people=PEOPLE, upns=UPNS, **facts)


def verdicts(gates: Gates, facts: Evidence, now: dt.datetime = APPLIED) -> dict[str, str]:
    return {r.gate: r.status for r in judge(facts, gates, now)}


@pytest.mark.parametrize(("outcomes", "limit", "status"), [
    ({"applied": 10}, 0.0, PASS),
    ({"applied": 9, "failed": 1}, 0.0, FAIL),   # the default: not one failure
    ({"applied": 9, "failed": 1}, 0.1, PASS),
    ({"applied": 8, "failed": 2}, 0.1, FAIL),
    ({}, 0.0, PASS),                            # nothing applied, nothing failed
])
def test_the_failure_ratio_gate(outcomes: dict[str, int], limit: float, status: str) -> None:
    gates = Gates(max_failure_ratio=limit)
    assert verdicts(gates, evidence(outcomes=outcomes)) == {"max_failure_ratio": status}


def sign_in(pid: str, code: int, minutes: int = 5) -> dict[str, Any]:
    when = APPLIED + dt.timedelta(minutes=minutes)
    return {"userPrincipalName": UPNS[pid], "createdDateTime": when.isoformat(),
            "status": {"errorCode": code, "failureReason": "" if code == 0 else "Invalid password"}}


@pytest.mark.parametrize(("events", "hours_later", "status"), [
    ([sign_in(p, 0) for p in PEOPLE[:3]], 1, PASS),        # 75% ≥ 75%
    ([sign_in(p, 0) for p in PEOPLE[:2]], 1, WAIT),        # 50%, the window is open
    ([sign_in(p, 0) for p in PEOPLE[:2]], 24 * 8, FAIL),   # 50%, the window closed
    ([sign_in(p, 50126) for p in PEOPLE], 1, WAIT),        # failures are not sign-ins
])
def test_the_signin_gate_waits_while_its_window_is_open(events: list[dict[str, Any]], hours_later: int,
                                                         status: str) -> None:
    gates = Gates(max_failure_ratio=None, signin=SigninGate(min_success=0.75, window=7 * 86400))
    now = APPLIED + dt.timedelta(hours=hours_later)
    assert verdicts(gates, evidence(sign_ins=events), now) == {"signin": status}


def test_a_failed_sign_in_is_named_for_the_person() -> None:
    gates = Gates(max_failure_ratio=None, signin=SigninGate(min_success=1.0))
    result = judge(evidence(sign_ins=[sign_in("p1", 50126)]), gates, APPLIED)[0]
    assert result.people["p1"] == ["signin: 50126: Invalid password"]
    assert result.people["p2"] == ["signin: no sign-in yet"]


@pytest.mark.parametrize(("seconds_later", "status"), [(3599, WAIT), (3600, PASS)])
def test_the_soak_gate_passes_when_its_time_is_up(seconds_later: int, status: str) -> None:
    gates = Gates(max_failure_ratio=None, soak=3600)
    assert verdicts(gates, evidence(), APPLIED + dt.timedelta(seconds=seconds_later)) == {"soak": status}


def test_a_gate_that_needs_the_cohort_applied_waits_for_it() -> None:
    gates = Gates(max_failure_ratio=None, soak=60, signin=SigninGate(min_success=0.5))
    assert verdicts(gates, evidence(applied_at=None)) == {"signin": WAIT, "soak": WAIT}


@pytest.mark.parametrize(("approvals", "rule", "status"), [
    ([], {}, WAIT),
    ([("ann", "2026-12-01T10:00:00")], {}, PASS),
    ([("bo", "2026-12-01T10:00:00")], {"approvers": ["ann@region.se", "Ann"]}, WAIT),   # not an approver
    ([("ANN", "2026-12-01T10:00:00")], {"approvers": ["ann"]}, PASS),                  # in any case
    ([("ops", "2026-12-01T10:00:00")], {"distinct_from_applier": True}, WAIT),         # applied it
    ([("ops", "2026-12-01T11:00"), ("ann", "2026-12-01T10:00")], {"distinct_from_applier": True}, PASS),
])
def test_the_approval_gate(approvals: list[tuple[str, str]], rule: dict[str, Any], status: str) -> None:
    gates = Gates(max_failure_ratio=None, approval=rule)
    facts = evidence(approvals=approvals, appliers=frozenset({"ops"}))
    assert verdicts(gates, facts) == {"approval": status}


def test_an_approval_that_does_not_count_is_said() -> None:
    gates = Gates(max_failure_ratio=None, approval={"approvers": ["ann"], "distinct_from_applier": True})
    [result] = judge(evidence(approvals=[("bo", "2026-12-01T10:00"), ("ops", "2026-12-01T09:30")],
                              appliers=frozenset({"ops"})), gates, APPLIED)
    assert "not counted: bo is not one of the approvers (ann)" in result.detail
    assert "ops is not one of the approvers" in result.detail  # the approvers rule comes first


@pytest.mark.parametrize(("given", "gate"), [(True, {}), (False, None)])
def test_approval_true_and_false_still_read(given: bool, gate: dict[str, Any] | None) -> None:
    parsed = Gates(approval=given).approval  # type: ignore[arg-type]
    assert (parsed.model_dump() if parsed else None) == (
        None if gate is None else {"approvers": (), "distinct_from_applier": False})


@pytest.mark.parametrize(("delivered", "status"), [
    ({pid: "2026-12-01T08:00:00+00:00" for pid in PEOPLE}, PASS),
    ({"p1": "2026-12-01T08:00:00+00:00"}, FAIL),
])
def test_everyone_must_have_their_guide(delivered: dict[str, str], status: str) -> None:
    assert verdicts(Gates(max_failure_ratio=None), evidence(guides=delivered)) == {"guides": status}


def test_no_guide_step_no_guides_gate() -> None:
    assert verdicts(Gates(max_failure_ratio=None), evidence(guides=None)) == {}


@pytest.mark.parametrize(("failing", "status"), [
    ({}, PASS),
    ({"p1": ["mailbox: not reachable (MailboxNotEnabledForRESTAPI)"]}, FAIL),
    ({"p1": ["device: iPhone 12 not enrolled yet"]}, WAIT),  # enrolment is not a failure
    ({"p1": ["device: iPhone 12 not enrolled yet"], "p2": ["account: not found"]}, FAIL),
])
def test_the_verify_verdict(failing: dict[str, list[str]], status: str) -> None:
    assert verdict_of(Verified(4, ("license", "mailbox"), failing, 60)).status == status


@pytest.mark.parametrize(("results", "state"), [
    ([GateResult("verify", PASS, ""), GateResult("soak", PASS, "")], CohortState.PASSED),
    ([GateResult("soak", WAIT, ""), GateResult("approval", WAIT, "")], CohortState.SOAKING),
    ([GateResult("approval", WAIT, "")], CohortState.AWAITING_APPROVAL),
    ([GateResult("approval", WAIT, ""), GateResult("verify", FAIL, "")], CohortState.FAILED),
    ([], CohortState.PASSED),
])
def test_the_cohort_state_follows_from_the_gates(results: list[GateResult], state: CohortState) -> None:
    assert cohort_state(results) is state


def test_guides_that_cannot_be_delivered_in_time_hold_the_cohort() -> None:
    pb = playbook(steps=["account", "guide"], guide={
        "lead_days": 7, "organisation": "Solbacka kommun", "help": "Ring 0660-88 000"})
    cohort = Cohort(name="pilot", starts=dt.date(2026, 12, 10), select={"rest": True})
    people = [person("p1"), person("p2", "Bo", "Ek")]
    on_time = {"p1": "2026-12-02T10:00:00+00:00", "p2": "2026-12-02T11:00:00+00:00"}
    before = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)
    after = dt.datetime(2026, 12, 3, 1, tzinfo=dt.UTC)  # the deadline was 2026-12-03 00:00
    assert guides_late(pb, cohort, people, {}, before) is None  # still time
    assert guides_late(pb, cohort, people, on_time, after) is None
    late = guides_late(pb, cohort, people, {"p1": on_time["p1"]}, after)
    assert late is not None and late.status == FAIL and list(late.people) == ["p2"]


@pytest.mark.parametrize("state", sorted(JUDGED))
def test_a_cohort_never_reaches_a_verdict_without_being_applied(state: CohortState) -> None:
    for start in (CohortState.PENDING, CohortState.HELD, CohortState.ROLLED_BACK, CohortState.PASSED):
        with pytest.raises(IllegalTransition):
            advance(start, state)
    assert advance(CohortState.APPLYING, state) is state
