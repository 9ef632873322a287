"""The sandbox served over HTTP on loopback, reached with --graph-url like a real Graph."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.operations import open_sandbox
from provisioner.sandbox import Tenant

from .conftest import serve_in_thread


@pytest.fixture
def served(state_dir: Path, make_sandbox: Callable[..., Tenant]) -> Iterator[str]:
    make_sandbox(latency_ms=2)
    with open_sandbox(state_dir) as app, serve_in_thread(app) as url:
        yield url


@pytest.mark.slow
def test_plan_and_apply_through_a_served_sandbox(runner: CliRunner, tmp_path: Path, served: str,
                                                 write_playbook: Callable[..., Path]) -> None:
    playbook = write_playbook(3)
    other_state = str(tmp_path / "client-side")  # the client keeps nothing of the tenant
    plan = runner.invoke(main, ["--state-dir", other_state, "--graph-url", served,
                                "plan", "--detailed-exitcode", str(playbook)])
    assert plan.exit_code == 2, plan.output
    applied = runner.invoke(main, ["--state-dir", other_state, "--graph-url", served,
                                   "apply", "--yes", str(playbook)])
    assert applied.exit_code == 0, applied.output
    assert "15 applied" in applied.output
    again = runner.invoke(main, ["--state-dir", other_state, "--graph-url", served,
                                 "plan", "--detailed-exitcode", str(playbook)])
    assert again.exit_code == 0
    assert not (tmp_path / "client-side" / "sandbox.sqlite").exists()
