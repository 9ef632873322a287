"""What a pipeline relies on: exit codes that mean one thing each, one JSON document per
command, JSON errors and info events with --log-format json, and a Markdown plan summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.sandbox.region import officials, roster_csv

from .conftest import cli


@pytest.fixture
def ready(make_sandbox: Callable[..., Any], write_playbook: Callable[..., Path]) -> Path:
    make_sandbox()
    return write_playbook(3)


@pytest.mark.parametrize("args", [
    ["plan", "--no-such-option", "p.yaml"],
    ["plan"],                                  # a missing argument
    ["apply", "p.yaml", "--allow-mass-change", "many"],
    ["no-such-command"],
])
def test_a_usage_error_exits_64_never_2_which_plan_uses_for_changes(
        runner: CliRunner, state_dir: Path, args: list[str]) -> None:
    result = cli(runner, state_dir, *args)
    assert result.exit_code == 64, result.output
    assert "Usage:" in result.output


def test_plan_exits_5_when_preflight_would_stop_the_apply(
        runner: CliRunner, state_dir: Path, ready: Path) -> None:
    assert cli(runner, state_dir, "sandbox", "break", "domain", "politiker.example-region.se").exit_code == 0
    result = cli(runner, state_dir, "plan", "--detailed-exitcode", str(ready))
    assert result.exit_code == 5, result.output


@pytest.mark.slow
def test_plan_exits_6_when_the_mass_change_guard_would_refuse_the_apply(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Any],
        write_playbook: Callable[..., Path], tmp_path: Path) -> None:
    make_sandbox()
    playbook = write_playbook(24)
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    (tmp_path / "roster.csv").write_text(roster_csv(officials(24, 2026)[:2]), encoding="utf-8")
    result = cli(runner, state_dir, "plan", "--detailed-exitcode", str(playbook))
    assert result.exit_code == 6, result.output
    assert "Apply would refuse: this apply would disable, unlicense or delete 22 people" in result.output


def test_apply_json_is_one_document_and_exit_0_means_done(
        runner: CliRunner, state_dir: Path, ready: Path) -> None:
    result = cli(runner, state_dir, "apply", "--yes", "--json", str(ready))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == 0 and doc["halted"] is False and doc["waiting"] is False
    assert doc["summary"] == {"applied": 15, "unchanged": 0, "pending": 0, "failed": 0, "skipped": 0}
    [cohort] = doc["cohorts"]
    assert cohort["cohort"] == "all" and cohort["state"] == "passed" and len(cohort["run_ids"]) == 1


def test_apply_json_asks_nothing_so_it_needs_yes(runner: CliRunner, state_dir: Path, ready: Path) -> None:
    result = cli(runner, state_dir, "apply", "--json", str(ready))
    assert result.exit_code == 1 and "apply --json needs --yes" in result.output


def test_validate_json(runner: CliRunner, state_dir: Path, ready: Path) -> None:
    result = cli(runner, state_dir, "validate", "--json", str(ready))
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["valid"] is True and doc["people"] == 3 and doc["tenant"] == "sandbox"
    assert doc["steps"] == ["account", "license", "groups", "mailbox_settings"]


def test_preflight_json_and_its_exit_code(runner: CliRunner, state_dir: Path, ready: Path) -> None:
    good = json.loads(cli(runner, state_dir, "preflight", "--json", str(ready)).stdout)
    assert good["ready"] is True and {c["status"] for c in good["checks"]} == {"ok"}
    cli(runner, state_dir, "sandbox", "break", "domain", "politiker.example-region.se")
    result = cli(runner, state_dir, "preflight", "--json", str(ready))
    assert result.exit_code == 5
    failed = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "FAIL"]
    assert [c["name"] for c in failed] == ["domain"]


def test_with_json_logs_an_error_is_one_json_event(runner: CliRunner, state_dir: Path,
                                                   tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nroster: r.csv\ndomain: p.se\nsteps: [account]\nlicence: {sku: X}\n",
                   encoding="utf-8")
    result = cli(runner, state_dir, "--log-format", "json", "validate", str(bad))
    assert result.exit_code == 1
    [event] = [json.loads(line) for line in result.stderr.splitlines()]
    assert event["event"] == "error" and event["level"] == "error" and event["exit_code"] == 1
    assert event["kind"] == "PlaybookError" and event["problems"] == [
        f"{bad}:5:1: licence: unknown key; did you mean 'license'?"]


def test_with_json_logs_info_events_come_without_v(runner: CliRunner, state_dir: Path, pilot: Path) -> None:
    result = cli(runner, state_dir, "--log-format", "json", "apply", "--yes", str(pilot))
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    kinds = {e["event"] for e in events}
    assert {"change.done", "gate.judged", "cohort.state"} <= kinds
    assert all(e["level"] != "debug" for e in events)
    assert [e["state"] for e in events if e["event"] == "cohort.state"] == ["passed"]
    assert all(e["cohort"] == "pilot" for e in events if e["event"] == "gate.judged")


def test_plan_markdown_is_a_summary_without_names(runner: CliRunner, state_dir: Path, ready: Path) -> None:
    result = cli(runner, state_dir, "plan", "--format", "markdown", str(ready))
    assert result.exit_code == 0
    text = result.stdout
    assert "| cohort | people | create | update | delete | one-way | held |" in text
    assert "| all | 3 | 12 | 3 | 0 | 0 | 0 |" in text  # the mailboxes' settings are updates
    assert "**Preflight**: ready." in text
    assert "@" not in text  # no address of anyone
