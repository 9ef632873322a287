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


@pytest.mark.slow
def test_sandbox_serve_keeps_its_request_counters_when_stopped_by_sigterm(
        state_dir: Path, make_sandbox: Callable[..., Tenant]) -> None:
    """uvicorn re-raises SIGTERM once it has shut down, so nothing after uvicorn.run runs: the
    counters must be flushed by the app's own shutdown. They are also readable over HTTP."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from .conftest import reopen

    make_sandbox()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "--state-dir", str(state_dir),
                             "sandbox", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/_sandbox/counters")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        auth = {"Authorization": "Bearer test"}
        for _ in range(3):
            assert httpx.get(url + "/v1.0/users?$top=1", headers=auth).status_code == 200
        assert httpx.get(url + "/_sandbox/counters").json()["GET"] == 3
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert reopen(state_dir).store.counters["GET"] == 3
