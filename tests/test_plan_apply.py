"""plan and apply end to end: CLI → operations → msgraph-sdk → in-process sandbox."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.sandbox import Tenant
from provisioner.sandbox.region import officials, roster_csv

from .conftest import cli, reopen


@pytest.fixture
def setup(make_sandbox: Callable[..., Tenant], write_playbook: Callable[..., Path]) -> Callable[..., Path]:
    def go(people: int = 6, playbook: dict[str, Any] | None = None, **sandbox: Any) -> Path:
        make_sandbox(**sandbox)
        return write_playbook(people, **(playbook or {}))
    return go


def test_plan_writes_nothing(runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup()
    result = cli(runner, state_dir, "plan", str(playbook))
    assert result.exit_code == 0, result.output
    assert "Plan: 24 to create, 6 to update, 0 to delete." in result.output
    counters = reopen(state_dir).store.counters
    assert counters["mutating"] == 0 and counters["GET"] > 0


@pytest.mark.slow
def test_detailed_exitcode_before_and_after_apply(runner: CliRunner, state_dir: Path,
                                                  setup: Callable[..., Path]) -> None:
    playbook = setup()
    assert cli(runner, state_dir, "plan", str(playbook), "--detailed-exitcode").exit_code == 2
    applied = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert applied.exit_code == 0, applied.output
    assert "Apply complete: 30 applied, 0 unchanged, 0 pending, 0 failed, 0 skipped." in applied.output
    after = cli(runner, state_dir, "plan", str(playbook), "--detailed-exitcode")
    assert after.exit_code == 0
    assert "No changes. The tenant matches the playbook." in after.output


def test_a_second_apply_plans_nothing(runner: CliRunner, state_dir: Path,
                                      setup: Callable[..., Path]) -> None:
    playbook = setup()
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    before = reopen(state_dir).store.counters["mutating"]
    again = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert again.exit_code == 0 and "No changes" in again.output
    assert reopen(state_dir).store.counters["mutating"] == before
    users = reopen(state_dir).users.values()
    assert sum(1 for u in users if u["userPrincipalName"].endswith("@politiker.example-region.se")) == 6


def test_plan_json_is_a_stable_document(runner: CliRunner, state_dir: Path,
                                        setup: Callable[..., Path]) -> None:
    playbook = setup()
    first = json.loads(cli(runner, state_dir, "plan", "--json", str(playbook)).output)
    second = json.loads(cli(runner, state_dir, "plan", "--json", str(playbook)).output)
    assert first == second
    assert first["summary"] == {"create": 24, "update": 6, "delete": 0}
    change = first["changes"][0]
    assert set(change) == {"id", "step", "person_id", "action", "target", "before", "after",
                           "reversibility", "cohort"}
    assert change["reversibility"] == "compensable"
    assert change["after"]["userPrincipalName"] == "karin.lindqvist@politiker.example-region.se"
    assert "passwordProfile" not in change["after"]


def test_plan_leaves_the_cycle_collector_as_it_found_it(runner: CliRunner, state_dir: Path,
                                                        setup: Callable[..., Path]) -> None:
    """plan keeps Python's cycle collector out while it reads and plans; after, the process
    (a test run, a service calling the tool) collects again."""
    assert gc.isenabled()
    cli(runner, state_dir, "plan", "--json", str(setup()))
    assert gc.isenabled()


@pytest.mark.slow
def test_a_tiny_throttling_budget_still_completes(runner: CliRunner, state_dir: Path,
                                                  setup: Callable[..., Path]) -> None:
    # 8 writes per 150 s × 0.004 = per 0.6 s: the run must wait out Retry-After many times.
    playbook = setup(people=4, ru_limit=40, write_limit=8, time_scale=0.004)
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    assert "20 applied" in result.output and "0 failed" in result.output
    assert reopen(state_dir).store.counters["throttled"] > 0


def test_5xx_faults_are_retried_to_completion(runner: CliRunner, state_dir: Path,
                                              setup: Callable[..., Path]) -> None:
    playbook = setup(people=5, fault_rate=0.2, time_scale=0.01)
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    assert "25 applied" in result.output
    assert reopen(state_dir).store.counters["faults"] > 0


@pytest.mark.slow
def test_a_write_whose_answer_is_lost_is_never_made_twice(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    """A 504 after the write was made: the retried POST meets its own account (ours by its
    mark) and adopts it; no duplicate account, no membership or licence made twice."""
    playbook = setup(people=6, lost_reply_rate=0.3, time_scale=0.01)
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    tenant = reopen(state_dir)
    assert tenant.store.counters["lost replies"] > 0
    upns = [u["userPrincipalName"] for u in tenant.users.values()
            if u["userPrincipalName"].endswith("@politiker.example-region.se")]
    assert len(upns) == len(set(upns)) == 6
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(playbook)).exit_code == 0


def test_a_graph_error_on_one_person_does_not_stop_the_others(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    # Seats that run out during the run: another admin takes the rest after four assignments,
    # when preflight has passed (sandbox fault seats_taken_after).
    playbook = setup(people=6, playbook={"wait": 0}, seats_taken_after=4)
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 1
    failures = [line for line in result.output.splitlines() if line.startswith("failed:")]
    assert len(failures) == 2
    assert all(" license license:" in f and "Request_BadRequest: Subscription ENTERPRISEPACK does"
               " not have any licenses available." in f and "request-id" in f for f in failures)
    # Everyone still got an account and groups; only the unlicensed mailboxes wait.
    assert "26 applied, 0 unchanged, 2 pending, 2 failed, 0 skipped." in result.output


def test_mailboxes_that_are_not_ready_stay_pending_for_the_next_apply(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(people=3, mailbox_delay=3600, playbook={"wait": 0})
    first = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert first.exit_code == 0
    assert "12 applied, 0 unchanged, 3 pending" in first.output
    assert "run apply again later" in first.output
    plan = cli(runner, state_dir, "plan", str(playbook))
    assert "Plan: 0 to create, 3 to update, 0 to delete." in plan.output
    tenant = reopen(state_dir)
    tenant.store.set_config({"mailbox_delay": 0})
    tenant.store.close()
    second = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "3 applied, 0 unchanged, 0 pending" in second.output
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(playbook)).exit_code == 0


@pytest.mark.slow
def test_apply_waits_for_mailboxes_within_wait_seconds(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(people=2, mailbox_delay=1.5, playbook={"wait": 30})
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "10 applied, 0 unchanged, 0 pending" in result.output


def test_a_saved_plan_is_carried_out_exactly(runner: CliRunner, state_dir: Path,
                                             setup: Callable[..., Path], tmp_path: Path) -> None:
    playbook = setup()
    saved = tmp_path / "plan.json"
    assert cli(runner, state_dir, "plan", "--out", str(saved), str(playbook)).exit_code == 0
    result = cli(runner, state_dir, "apply", "--yes", str(saved))
    assert result.exit_code == 0, result.output
    assert "30 applied" in result.output
    assert f" {playbook}` undoes it." in result.output  # rollback takes the playbook, not plan.json


def test_a_saved_plan_is_refused_when_the_roster_changed(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path], tmp_path: Path) -> None:
    playbook = setup()
    saved = tmp_path / "plan.json"
    cli(runner, state_dir, "plan", "--out", str(saved), str(playbook))
    (tmp_path / "roster.csv").write_text(roster_csv(officials(7, 2026)), encoding="utf-8")
    result = cli(runner, state_dir, "apply", "--yes", str(saved))
    assert result.exit_code == 1
    assert "the saved plan is stale" in result.output
    assert f"the roster {tmp_path / 'roster.csv'} changed since the plan was made" in result.output
    assert "not in the saved plan" in result.output
    assert reopen(state_dir).store.counters["mutating"] == 0


def test_a_saved_plan_is_refused_when_its_objects_changed(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path], tmp_path: Path) -> None:
    playbook = setup()
    saved = tmp_path / "plan.json"
    cli(runner, state_dir, "plan", "--out", str(saved), str(playbook))
    cli(runner, state_dir, "apply", "--yes", str(playbook))  # someone else applied meanwhile
    result = cli(runner, state_dir, "apply", "--yes", str(saved))
    assert result.exit_code == 1
    assert ("group:Förtroendevalda:hakan.oberg@politiker.example-region.se: planned create, no"
            " longer needed") in result.output
    assert "... and 10 more" in result.output


def test_roster_change_updates_managed_attributes(runner: CliRunner, state_dir: Path,
                                                  setup: Callable[..., Path], tmp_path: Path) -> None:
    playbook = setup(people=2)
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    roster = tmp_path / "roster.csv"
    roster.write_text(roster.read_text(encoding="utf-8").replace("Regionfullmäktige", "Kulturnämnden"),
                      encoding="utf-8")
    plan = cli(runner, state_dir, "-v", "plan", str(playbook))
    assert "~ update user:karin.lindqvist@politiker.example-region.se" in plan.output
    assert 'department: "Regionfullmäktige" -> "Kulturnämnden"' in plan.output
    assert ("+ add    karin.lindqvist@politiker.example-region.se"
            " to group Politiker Kulturnämnden") in plan.output


def test_apply_in_a_pipeline_needs_yes(runner: CliRunner, state_dir: Path,
                                       setup: Callable[..., Path]) -> None:
    playbook = setup()
    result = cli(runner, state_dir, "apply", str(playbook))
    assert result.exit_code == 1
    assert "error: this command asks for confirmation; in a pipeline give --yes" in result.output
    assert reopen(state_dir).store.counters["mutating"] == 0


def test_the_initial_password_never_reaches_output_logs_or_state(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "Known!Secret-4711"
    monkeypatch.setattr("provisioner.steps.account.generate_password", lambda: secret)
    playbook = setup(people=2)
    result = runner.invoke(main, ["--state-dir", str(state_dir), "-vv", "--log-format", "json",
                                  "apply", "--yes", str(playbook)])
    assert result.exit_code == 0
    assert secret not in result.output
    for path in state_dir.iterdir():
        assert secret.encode() not in path.read_bytes()


@pytest.mark.slow
def test_the_example_rollout_with_its_hard_names_completes_cohort_by_cohort(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_PNR_KEY", "sandbox-personnummer-key")
    make_sandbox(employees=300)
    example = str(Path(__file__).parent.parent / "playbooks" / "fritidspolitiker-epost.yaml")
    first = cli(runner, state_dir, "apply", "--yes", example)
    assert first.exit_code == 8, first.output[-2000:]  # waiting for sign-ins and an approval
    assert "Cohort presidium is verifying: 0 of 5 people signed in" in first.output
    cli(runner, state_dir, "sandbox", "simulate-signins", example, "--cohort", "presidium",
        "--success-rate", "1")
    cli(runner, state_dir, "approve", example, "--cohort", "presidium")
    second = cli(runner, state_dir, "apply", "--yes", "--all", example)
    assert "Cohort presidium: passed" in second.output
    assert "Cohort patientnamnden is awaiting approval" in second.output
    cli(runner, state_dir, "approve", example, "--cohort", "patientnamnden")
    third = cli(runner, state_dir, "apply", "--yes", "--all", example)
    assert third.exit_code == 0, third.output[-2000:]
    assert "Every cohort has passed its gates. The rollout is complete." in third.output
    assert ": failed" not in third.output and " 0 failed, " in third.output
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", example).exit_code == 0
    upns = {u["userPrincipalName"] for u in reopen(state_dir).users.values()}
    assert {"anna.svensson@politiker.example-region.se", "anna.svensson.2@politiker.example-region.se",
            "siobhan.obrien@politiker.example-region.se", "ebba.afklint@politiker.example-region.se",
            "zoe.odegard@politiker.example-region.se", "canary.official@politiker.example-region.se"} <= upns
    assert sum(u.endswith("@politiker.example-region.se") for u in upns) == 202  # 200 + 2 canaries
