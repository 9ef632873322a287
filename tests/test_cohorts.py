"""Cohort-by-cohort rollout: selection, gates, canaries, halting and rolling back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.cohorts import assign, stable_fraction
from provisioner.errors import PlaybookError
from provisioner.playbook import load_playbook
from provisioner.roster import load_roster
from provisioner.sandbox import Tenant
from provisioner.sandbox.region import officials, roster_csv

from .conftest import cli, reopen
from .test_rollback import directory

HEAD = """\
name: staged
tenant: sandbox
roster: roster.csv
domain: politiker.example-region.se
naming: {{upn: "{{given}}.{{surname}}", mail_nickname: "pol.{{upn_local}}"}}
license: {{sku: ENTERPRISEPACK}}
groups: [Förtroendevalda, "Politiker {{body}}"]
mailbox_settings: {{wait_seconds: 5}}
steps: [account, license, groups, mailbox_settings]
dual_role: {{policy: separate_account}}
concurrency: 4
cohorts:
{cohorts}
"""
FAST_VERIFY = "verify: {timeout: 1, interval: 0.2}"




@pytest.fixture
def staged(tmp_path: Path, make_sandbox: Callable[..., Tenant]) -> Callable[..., Path]:
    def write(cohorts: str, people: int = 14, **sandbox: Any) -> Path:
        make_sandbox(**sandbox)
        (tmp_path / "roster.csv").write_text(roster_csv(officials(people, 2026)), encoding="utf-8")
        path = tmp_path / "staged.yaml"
        path.write_text(HEAD.format(cohorts=cohorts), encoding="utf-8")
        return path
    return write


TWO = f"""\
  - name: pilot
    select: {{body: Regionstyrelsen}}
    canary: true
    gates: {{{FAST_VERIFY}}}
  - name: rest
    select: {{rest: true}}
    gates: {{{FAST_VERIFY}}}
"""


def people_touched(state_dir: Path, pids: set[str]) -> set[str]:
    t = reopen(state_dir)
    attr = "extensionAttribute15"
    tags = {(u.get("onPremisesExtensionAttributes") or {}).get(attr) for u in t.users.values()}
    t.store.close()
    return {pid for pid in pids if f"provisioner:staged:{pid}" in tags}


def cohort_people(playbook: Path, name: str) -> set[str]:
    pb = load_playbook(playbook)
    return {p.person_id for p in assign(pb, load_roster(pb.roster_path)).members[name]}


def test_people_a_share_leaves_out_are_listed_as_unassigned(staged: Callable[..., Path]) -> None:
    playbook = staged("  - name: a\n    select: {rest: true}\n    share: 30%\n    limit: 3\n"
                      "  - name: b\n    select: {body: [Regionstyrelsen]}\n", people=40)
    with pytest.raises(PlaybookError, match=r"cohorts: 3[0-9] people are in no cohort: P\d{5}, "):
        cohort_people(playbook, "a")


def test_overlaps_are_listed_by_person_id(staged: Callable[..., Path]) -> None:
    playbook = staged("  - name: a\n    select: {body: Regionstyrelsen}\n"
                      "  - name: b\n    select: {person_id: [P00002, P00001]}\n"
                      "  - name: c\n    select: {rest: true}\n")
    with pytest.raises(PlaybookError, match="cohorts: P00002 is in a and b"):
        cohort_people(playbook, "a")


def test_share_and_limit_pick_the_same_people_every_time(staged: Callable[..., Path]) -> None:
    playbook = staged("  - name: sample\n    select: {role: ledamot}\n    share: 50%\n    limit: 4\n"
                      "  - name: rest\n    select: {rest: true}\n", people=40)
    first = cohort_people(playbook, "sample")
    assert len(first) == 4 and first == cohort_people(playbook, "sample")
    ranked = sorted((stable_fraction(p), p) for p in first)
    assert all(f < 0.5 for f, _ in ranked)


def test_plan_groups_changes_per_cohort(runner: CliRunner, state_dir: Path,
                                        staged: Callable[..., Path]) -> None:
    playbook = staged(TWO)
    result = cli(runner, state_dir, "plan", str(playbook))
    assert "Cohort pilot (4 people, 20 changes)" in result.output  # 2 members + 2 canaries
    assert "Cohort rest (12 people, 60 changes)" in result.output
    only = json.loads(cli(runner, state_dir, "plan", "--json", "--cohort", "rest", str(playbook)).output)
    assert {c["cohort"] for c in only["changes"]} == {"rest"}


def test_a_passing_rollout_completes_with_apply_all(runner: CliRunner, state_dir: Path,
                                                    staged: Callable[..., Path]) -> None:
    playbook = staged(TWO)
    result = cli(runner, state_dir, "apply", "--yes", "--all", str(playbook))
    assert result.exit_code == 0, result.output
    assert "Cohort pilot: passed" in result.output and "Cohort rest: passed" in result.output
    assert "canary             pass  canary accounts: 2 of 2 people pass" in result.output
    assert "Every cohort has passed its gates. The rollout is complete." in result.output
    status = json.loads(cli(runner, state_dir, "status", "--json", str(playbook)).output)
    assert [(c["name"], c["state"]) for c in status["cohorts"]] == [("pilot", "passed"),
                                                                    ("rest", "passed")]


@pytest.mark.slow
def test_apply_without_all_stops_after_each_cohort(runner: CliRunner, state_dir: Path,
                                                   staged: Callable[..., Path]) -> None:
    playbook = staged(TWO)
    first = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "Cohort pilot: passed" in first.output
    assert "Next: cohort rest (12 people)" in first.output
    assert people_touched(state_dir, cohort_people(playbook, "rest")) == set()
    second = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "Cohort rest: passed" in second.output


@pytest.mark.slow
def test_the_story_a_wrong_setting_is_caught_by_the_canary(runner: CliRunner, state_dir: Path,
                                                           staged: Callable[..., Path]) -> None:
    """Every new account comes out disabled (sign-in impossible): the canary catches it, and
    no real person is touched, in the canary's cohort or the next."""
    playbook = staged(TWO, new_accounts_disabled=True)
    result = cli(runner, state_dir, "apply", "--yes", "--all", str(playbook))
    assert result.exit_code == 4, result.output
    assert "Cohort pilot: failed" in result.output
    assert "canary-official: account_enabled: the account is disabled, sign-in is impossible" \
        in result.output
    assert "the rollout is halted" in result.output
    real = cohort_people(playbook, "pilot") | cohort_people(playbook, "rest")
    real = {p for p in real if not p.startswith("canary-")}
    assert people_touched(state_dir, real) == set()
    status = cli(runner, state_dir, "status", str(playbook)).output
    assert "failed" in status and "canary fail" in status
    again = cli(runner, state_dir, "apply", "--yes", "--cohort", "rest", str(playbook))
    assert again.exit_code == 1
    assert "cohort rest comes after pilot, which has not passed its gates (it is failed)" in again.output
    # The admin fixes the setting; the next apply enables the canaries, and the rollout goes on.
    tenant = reopen(state_dir)
    tenant.store.set_config({"new_accounts_disabled": False})
    tenant.store.close()
    fixed = cli(runner, state_dir, "apply", "--yes", "--all", str(playbook))
    assert fixed.exit_code == 0, fixed.output
    assert "~ update user:canary.official@politiker.example-region.se" in fixed.output
    assert "The rollout is complete" in fixed.output


@pytest.mark.slow
def test_the_story_a_mailbox_that_never_appears_halts_after_the_first_cohort(
        runner: CliRunner, state_dir: Path, staged: Callable[..., Path], tmp_path: Path) -> None:
    cohorts = TWO.replace("    canary: true\n", "").replace("mailbox_settings: {wait_seconds: 5}", "")
    playbook = staged(cohorts, mailbox_delay=10**9)
    playbook.write_text(playbook.read_text().replace("mailbox_settings: {wait_seconds: 5}",
                                                     "mailbox_settings: {wait_seconds: 0}"))
    result = cli(runner, state_dir, "apply", "--yes", "--all", str(playbook))
    assert result.exit_code == 4
    assert "mailbox: not reachable (MailboxNotEnabledForRESTAPI)" in result.output
    assert people_touched(state_dir, cohort_people(playbook, "rest")) == set()


@pytest.mark.slow
def test_on_failure_rollback_restores_the_tenant(runner: CliRunner, state_dir: Path,
                                                 staged: Callable[..., Path]) -> None:
    cohorts = TWO.replace("    canary: true\n", "").replace(
        f"    gates: {{{FAST_VERIFY}}}\n  - name: rest",
        f"    gates: {{{FAST_VERIFY}}}\n    on_failure: rollback\n  - name: rest")
    playbook = staged(cohorts, mailbox_delay=10**9)
    playbook.write_text(playbook.read_text().replace("wait_seconds: 5", "wait_seconds: 0"))
    before = directory(state_dir)
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 4, result.output
    assert "Cohort pilot: rolled back" in result.output
    assert directory(state_dir) == before
    retry = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "cohort pilot failed its gates and was rolled back" in retry.output


@pytest.mark.slow
def test_approval_is_required_where_configured(runner: CliRunner, state_dir: Path,
                                               staged: Callable[..., Path]) -> None:
    playbook = staged(TWO.replace(f"gates: {{{FAST_VERIFY}}}",
                                  f"gates: {{{FAST_VERIFY}, approval: true}}", 1))
    first = cli(runner, state_dir, "apply", "--yes", "--all", str(playbook))
    assert first.exit_code == 8  # stopped at a gate that waits: not done, not failed
    assert "Cohort pilot is awaiting approval" in first.output
    assert people_touched(state_dir, cohort_people(playbook, "rest")) == set()
    approved = cli(runner, state_dir, "approve", str(playbook), "--cohort", "pilot", "--note", "ok")
    assert "approved by" in approved.output
    second = cli(runner, state_dir, "apply", "--yes", "--all", str(playbook))
    assert "approval           pass  approved by" in second.output
    assert "The rollout is complete" in second.output
    records = [json.loads(x) for x in (state_dir / "audit.jsonl").read_text().splitlines()]
    assert any(r["event"] == "approval" and r["cohort"] == "pilot" for r in records)


def test_signin_gate_counts_successful_sign_ins(runner: CliRunner, state_dir: Path,
                                                staged: Callable[..., Path]) -> None:
    playbook = staged(TWO.replace(f"gates: {{{FAST_VERIFY}}}",
                                  f"gates: {{{FAST_VERIFY}, signin: {{min_success: 0.5, window: 0}}}}", 1))
    first = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "Cohort pilot: failed" in first.output  # nobody signed in, and the window is 0
    cli(runner, state_dir, "sandbox", "simulate-signins", str(playbook), "--cohort", "pilot",
        "--success-rate", "1")
    second = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "signin             pass  2 of 2 people signed in (100%; 50% needed)" in second.output


def test_failed_sign_ins_are_reported_per_person(runner: CliRunner, state_dir: Path,
                                                 staged: Callable[..., Path]) -> None:
    playbook = staged(TWO.replace(f"gates: {{{FAST_VERIFY}}}",
                                  f"gates: {{{FAST_VERIFY}, signin: {{min_success: 0.5, window: 0}}}}", 1))
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    cli(runner, state_dir, "sandbox", "simulate-signins", str(playbook), "--cohort", "pilot",
        "--success-rate", "0")
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "50126: Error validating credentials" in result.output


def test_feedback_gate_uses_thresholds(runner: CliRunner, state_dir: Path, tmp_path: Path,
                                       staged: Callable[..., Path]) -> None:
    gate = ("feedback: {file: feedback.csv, min_responses: 1, benefit_at_least: 4,"
            " min_benefit_share: 0.7, max_stressed_share: 0.1}")
    playbook = staged(TWO.replace(f"gates: {{{FAST_VERIFY}}}", f"gates: {{{FAST_VERIFY}, {gate}}}", 1))
    waiting = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "Cohort pilot is verifying: no feedback file yet" in waiting.output
    pilot = sorted(p for p in cohort_people(playbook, "pilot") if not p.startswith("canary-"))
    (tmp_path / "feedback.csv").write_text(
        "person_id;week;benefit;stressed\n" + "".join(f"{p};1;2;ja\n{p};2;5;nej\n" for p in pilot),
        encoding="utf-8")
    passed = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "feedback           pass  100% report benefit ≥ 4" in passed.output
    (tmp_path / "feedback.csv").write_text(
        "person_id;week;benefit;stressed\n" + "".join(f"{p};3;3;ja\n" for p in pilot), encoding="utf-8")
    failed = cli(runner, state_dir, "apply", "--yes", "--cohort", "pilot", str(playbook))
    assert "Cohort pilot: failed" in failed.output and "feedback: benefit 3, stressed" in failed.output


def test_bad_feedback_lines_are_named(runner: CliRunner, state_dir: Path, tmp_path: Path,
                                      staged: Callable[..., Path]) -> None:
    gate = "feedback: {file: feedback.csv}"
    playbook = staged(TWO.replace(f"gates: {{{FAST_VERIFY}}}", f"gates: {{{FAST_VERIFY}, {gate}}}", 1))
    (tmp_path / "feedback.csv").write_text("person_id,week,benefit,stressed\nP1,1,9,no\nP2,1,4,maybe\n",
                                           encoding="utf-8")
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 1
    assert "feedback.csv:2: benefit must be 1 to 5" in result.output
    assert "feedback.csv:3: stressed must be yes or no" in result.output


def test_soak_waits_before_the_next_cohort(runner: CliRunner, state_dir: Path,
                                           staged: Callable[..., Path]) -> None:
    playbook = staged(TWO.replace(f"gates: {{{FAST_VERIFY}}}", f"gates: {{{FAST_VERIFY}, soak: 2d}}", 1))
    result = cli(runner, state_dir, "apply", "--yes", "--all", str(playbook))
    assert "Cohort pilot is soaking: soaking until" in result.output
    assert people_touched(state_dir, cohort_people(playbook, "rest")) == set()


@pytest.mark.slow
def test_rollback_of_a_cohort_restores_it_and_twice_is_a_no_op(
        runner: CliRunner, state_dir: Path, staged: Callable[..., Path]) -> None:
    playbook = staged(TWO)
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    after_pilot = directory(state_dir)
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    result = cli(runner, state_dir, "rollback", "--cohort", "rest", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    assert directory(state_dir) == after_pilot
    again = cli(runner, state_dir, "rollback", "--cohort", "rest", "--yes", str(playbook))
    assert "Rollback: nothing to undo." in again.output
    status = json.loads(cli(runner, state_dir, "status", "--json", str(playbook)).output)
    assert [c["state"] for c in status["cohorts"]] == ["passed", "rolled back"]
    # The canary accounts go with their cohort's rollback.
    cli(runner, state_dir, "rollback", "--cohort", "pilot", "--yes", str(playbook))
    assert not any(u.startswith("canary.") for u in directory(state_dir)["users"])


def test_the_signin_gate_reads_only_its_cohorts_people(runner: CliRunner, state_dir: Path,
                                                      staged: Callable[..., Path]) -> None:
    """Sign-ins of people outside the cohort (here: every employee) are never read: the gate
    asks Graph for the cohort's users only, by $filter, paged."""
    playbook = staged(TWO.replace(f"gates: {{{FAST_VERIFY}}}",
                                  f"gates: {{{FAST_VERIFY}, signin: {{min_success: 0.5, window: 0}}}}", 1))
    from provisioner.sandbox.signins import simulate

    t = reopen(state_dir)
    simulate(t, [u["userPrincipalName"] for u in t.users.values()], 1.0)
    t.store.close()
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "signin             fail  0 of 2 people signed in" in result.output
    t = reopen(state_dir)
    assert t.store.counters["signIns returned"] == 0  # the employees' sign-ins were never read
    t.store.close()


def test_preflight_wants_entra_p1_for_a_signin_gate(runner: CliRunner, state_dir: Path,
                                                   staged: Callable[..., Path]) -> None:
    """signin-list: sign-in logs need Microsoft Entra ID P1 or P2; without them Graph answers
    403 Authentication_RequestFromNonPremiumTenantOrB2CTenant."""
    playbook = staged(TWO.replace(f"gates: {{{FAST_VERIFY}}}",
                                  f"gates: {{{FAST_VERIFY}, signin: {{min_success: 0.5, window: 0}}}}", 1))
    assert cli(runner, state_dir, "preflight", str(playbook)).exit_code == 0
    for sku in ("SPE_F1", "SPE_E3"):  # the region's P1 seats (Microsoft 365 F3 and E3 include it)
        cli(runner, state_dir, "sandbox", "break", "seats", sku)
    result = cli(runner, state_dir, "preflight", str(playbook))
    assert result.exit_code == 5
    assert "Graph's sign-in logs need Microsoft Entra ID P1 or P2 and the tenant has neither" in result.output


def test_a_cohort_failed_by_a_playbook_mistake_passes_once_it_is_fixed(
        runner: CliRunner, state_dir: Path, staged: Callable[..., Path]) -> None:
    """A wrong language would be Graph's 400 for every mailbox: apply refuses the playbook
    before any write (what Exchange takes is known). Fixed, the cohort passes."""
    playbook = staged(TWO, 4)
    text = playbook.read_text(encoding="utf-8")
    playbook.write_text(text.replace("mailbox_settings: {wait_seconds: 5}",
                                     "mailbox_settings: {language: svenska, wait_seconds: 5}"),
                        encoding="utf-8")
    first = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert first.exit_code == 1 and "'svenska' is not a language Exchange sets" in first.output
    assert reopen(state_dir).store.counters["mutating"] == 0
    playbook.write_text(playbook.read_text(encoding="utf-8").replace("svenska", "sv-SE"), encoding="utf-8")
    fixed = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "Cohort pilot: passed" in fixed.output, fixed.output
