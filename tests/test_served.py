"""The sandbox served over HTTP on loopback, reached with --graph-url like a real Graph."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.operations import open_sandbox
from provisioner.sandbox import Tenant


@pytest.fixture
def served(state_dir: Path, make_sandbox: Callable[..., Tenant]) -> Iterator[str]:
    make_sandbox(latency_ms=2)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with open_sandbox(state_dir) as app:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(timeout=10)


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
