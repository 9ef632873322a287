"""The benchmark suite still runs (tiny sizes; its figures are not judged here, only counted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.slow
def test_the_suite_runs_every_benchmark_with_its_baseline() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick"],
                         capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    ours, baseline = figures["provisioning"]["provisioner"], figures["provisioning"]["baseline"]
    assert ours["accounts_made"] == 60 and ours["rejected_other"] == {}
    # 60 accounts, 3 writes of 20 to the licensing group, 3 to Förtroendevalda.
    assert ours["entra_writes"] == 66
    assert baseline["entra_writes_per_person"] == 3.0 and baseline["extrapolated_people"] == 60
    dual = figures["dual_roles"]
    assert dual["directory_users"] == 2001 and sum(dual["classified"].values()) == 200  # + lathundar@
    assert dual["baseline_typed_page_users"] > 0
    assert figures["plan"]["roster_people"] == 400 and figures["plan"]["changes"] > 0
    assert set(figures["startup"]) >= {"help_seconds", "validate_seconds"}
    assert figures["journal"]["sqlite"]["changes"] == figures["journal"]["postgresql"]["changes"] == 50
    rolled = figures["rollback"]
    assert rolled["at_the_floor"]["rollback_entra_writes"] == 60  # one soft delete a person
    assert [p["undos"] for p in rolled["planning"]] == [200, 400]
    assert figures["audit"]["records"] == 2000 and ours["client"]["client_cpu_seconds"] > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind counts the instructions")
def test_instructions_are_counted_and_grow_with_the_work() -> None:
    """plan.py --instructions: a figure the machine's load does not move (checked on a command
    that does nothing, and one that does a little more)."""
    sys.path.insert(0, str(BENCH.parent))
    from benchmarks._served import instructions

    idle = instructions([sys.executable, "-S", "-c", "pass"])
    busy = instructions([sys.executable, "-S", "-c", "sum(range(300_000))"])
    assert idle is not None and busy is not None
    assert 1_000_000 < idle < busy
    with pytest.raises(RuntimeError, match="failed"):
        instructions([sys.executable, "-S", "-c", "raise SystemExit(3)"])


@pytest.mark.slow
def test_plan_runs_an_older_version_beside_this_one() -> None:
    """plan.py --beside REV: the tool at a git revision, run for run beside this one, against the
    same sandbox (here the same revision: the same plan, each run measured)."""
    small = [sys.executable, str(BENCH / "plan.py"), "--users", "300", "--people", "40"]
    out = subprocess.run([*small, "--runs", "2", "--beside", "HEAD"], capture_output=True, text=True,
                         check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    beside = figures["beside"]
    assert beside["revision"] == "HEAD" and beside["changes"] == figures["changes"] > 0
    assert len(beside["runs"]) == len(figures["runs"]) == 2
    assert all(r["client_cpu_seconds"] > 0 for r in beside["runs"])
    refused = subprocess.run([*small, "--runs", "1", "--beside", "no-such-revision"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "git cannot give that revision" in refused.stderr
