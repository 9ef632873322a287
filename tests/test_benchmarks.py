"""The benchmark scripts still run (tiny sizes; their figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "benchmarks"


def test_dual_roles_benchmark_runs_and_prints_json() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "dual_roles.py"), "--users", "400",
                          "--people", "60"], capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["directory_users"] == 401 and figures["roster_people"] == 60  # + the service mailbox
    assert sum(figures["classified"].values()) == 60


def test_startup_benchmark_runs_and_prints_json() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "startup.py"), "--runs", "1"],
                         capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert set(figures) >= {"help_seconds", "validate_seconds"}


def test_plan_benchmark_runs_and_prints_json() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "plan.py"), "--users", "300", "--people", "40"],
                         capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["roster_people"] == 40 and figures["changes"] > 0


def test_provisioning_benchmark_runs_and_prints_json() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "provisioning.py"), "--people", "30",
                          "--baseline-people", "3", "--time-scale", "0.1"],
                         capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    ours = figures["provisioner"]
    assert ours["accounts_made"] == 30 and ours["rejected_other"] == {}
    # 30 accounts, 2 licensing-group writes (20 + 10), 2 Förtroendevalda writes.
    assert ours["entra_writes"] == 34
    assert figures["baseline"]["entra_writes_per_person"] == 3.0
