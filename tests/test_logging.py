"""Every log line of a run carries its run_id and cohort; a change's lines carry its step."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from .conftest import cli


def test_a_runs_log_lines_carry_run_id_cohort_and_step(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Any],
        write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    path = write_playbook(3)
    result = cli(runner, state_dir, "--log-format", "json", "-vv", "apply", "--yes", str(path))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    done = [e for e in lines if e["event"] == "change.done"]
    assert len(done) == 3 * 5  # three people: an account, a licence, two groups, a mailbox
    runs = {e["run_id"] for e in done}
    assert len(runs) == 1 and {e["cohort"] for e in done} == {"all"}
    assert {e["step"] for e in done} == {"account", "license", "groups", "mailbox_settings"}
    rounds = [e for e in lines if e["event"] == "apply.round"]
    assert rounds and all(e["run_id"] in runs and "step" not in e for e in rounds)
