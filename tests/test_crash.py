"""Crash test: apply is killed with SIGKILL at many points and resumed; every time the
tenant ends exactly as after one clean run, with no write repeated.

The sandbox is served over HTTP from this process (its state in SQLite, so it also survives
restarts); the apply under test is a real `provisioner` process that we kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from provisioner.journal import Journal
from provisioner.sandbox import Sandbox, reset_tenant
from provisioner.sandbox.region import officials, roster_csv

from .conftest import PLAYBOOK, serve_in_thread

KILL_POINTS = 24
PEOPLE = 4  # 20 changes: account, licence, two groups, mailbox settings each


@contextmanager
def served(state: Path) -> Iterator[tuple[str, Sandbox]]:
    tenant = reset_tenant(state, employees=30, seed=5, mailbox_delay=0, latency_ms=8)
    app = Sandbox(tenant)
    try:
        with serve_in_thread(app) as url:
            yield url, app
    finally:
        tenant.store.close()


def provisioner(url: str, state: Path, playbook: Path, shared: str | None = None) -> subprocess.Popen[str]:
    """A real apply process; ``shared``: its journal in that PostgreSQL state."""
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", "--state-dir", str(state), "--graph-url", url,
         "apply", "--yes", str(playbook)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **({"PROVISIONER_STATE": shared} if shared else {})})


def kill_after(proc: subprocess.Popen[str], lines: int, delay: float) -> bool:
    """SIGKILL after the process printed ``lines`` change lines (plus ``delay``). False if it
    finished first."""
    assert proc.stdout is not None
    with proc.stdout:
        seen = 0
        while seen < lines:
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                return False
            if line.startswith(("applied", "unchanged", "failed", "pending", "Applying")):
                seen += 1
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.returncode == -signal.SIGKILL


def tenant_state(app: Sandbox) -> dict[str, Any]:
    t = app.tenant
    users = {u["id"]: u for u in t.users.values()}
    groups = {gid: g["displayName"] for gid, g in t.store.all("groups").items()}
    skus = {s["skuId"]: s["skuPartNumber"] for s in t.store.values("skus")}
    mine = [u for u in users.values() if u["userPrincipalName"].endswith("@politiker.example-region.se")]
    return {
        "people": sorted(
            (u["userPrincipalName"], u["displayName"], u.get("department"), u.get("jobTitle"),
             tuple(sorted(skus[lic["skuId"]] for lic in u["assignedLicenses"])),
             tuple(sorted(groups[g["id"]] for g in t.store.values("groups") if u["id"] in g["_members"])),
             json.dumps(u.get("_mailboxSettings"), sort_keys=True))
            for u in mine),
        "deleted": len(t.store.all("deletedUsers")),
    }


def repeated_writes(app: Sandbox) -> list[tuple[str, str, str]]:
    return [w for w, n in Counter(app.writes).items() if n > 1]


def clean_run(tmp_path: Path) -> tuple[Path, dict[str, Any], int]:
    """The playbook, and what one uninterrupted apply of it leaves (and how many writes)."""
    (tmp_path / "roster.csv").write_text(roster_csv(officials(PEOPLE, 2026)), encoding="utf-8")
    playbook = tmp_path / "playbook.yaml"
    playbook.write_text(PLAYBOOK.format(wait=10, steps="account, license, groups, mailbox_settings",
                                        concurrency=2), encoding="utf-8")
    with served(tmp_path / "clean-tenant") as (url, app):
        clean = provisioner(url, tmp_path / "clean", playbook)
        out, _ = clean.communicate(timeout=120)
        assert clean.returncode == 0, out
        return playbook, tenant_state(app), len(app.writes)


@pytest.mark.slow
def test_sigkill_at_many_points_then_resume_ends_as_one_clean_run(tmp_path: Path) -> None:
    playbook, reference, changes = clean_run(tmp_path)
    # Per person: the account, its licence, its mailbox settings; memberships of one group
    # share a write (Förtroendevalda: one write; each committee's group: one write).
    bodies = {p.body for p in officials(PEOPLE, 2026)}
    assert len(reference["people"]) == PEOPLE and changes == PEOPLE * 3 + 1 + len(bodies)

    killed = interrupted_writes = 0
    for point in range(KILL_POINTS):
        lines = point % (changes + 1)  # 0: killed while planning or on the first writes
        delay = (point * 7 % 11) / 1000  # lands inside requests (8 ms of latency each)
        state = tmp_path / f"client-{point}"
        with served(tmp_path / f"tenant-{point}") as (url, app):
            killed += kill_after(provisioner(url, state, playbook), lines, delay)
            if (state / "journal.sqlite").exists():
                with Journal(state) as journal:
                    interrupted_writes += len(journal.pending("test-officials"))
            resumed = provisioner(url, state, playbook)
            out, _ = resumed.communicate(timeout=120)
            assert resumed.returncode == 0, f"kill point {point}: {out}"
            assert tenant_state(app) == reference, f"kill point {point}"
            assert repeated_writes(app) == [], f"kill point {point}"
        with Journal(state) as journal:
            assert journal.pending("test-officials") == [], f"kill point {point}"
        verify = subprocess.run([sys.executable, "-m", "provisioner", "--state-dir", str(state),
                                 "audit", "verify"], capture_output=True, text=True)
        assert verify.returncode == 0, f"kill point {point}: {verify.stdout}"
    # Most kill points must really have killed a running apply, not found it finished.
    assert killed >= KILL_POINTS - 2
    # And some kills must have landed between a write's intent and its outcome.
    assert interrupted_writes > 0
    print(f"crash test: {KILL_POINTS} kill points, {killed} SIGKILLs landed, {KILL_POINTS} resumes,"
          f" {interrupted_writes} writes interrupted between intent and outcome, duplicates found: 0,"
          " repeated writes: 0")


SHARED_KILL_POINTS = 8


@pytest.mark.slow
def test_sigkill_with_a_shared_state_then_resume_ends_as_one_clean_run(
        tmp_path: Path, postgres_server: str) -> None:
    """The same crash safety with the journal in PostgreSQL: a killed apply's intents are
    committed before its writes, and the lock dies with the process."""
    import psycopg

    playbook, reference, changes = clean_run(tmp_path)
    killed = interrupted_writes = 0
    for point in range(SHARED_KILL_POINTS):
        shared = f"{postgres_server}/crash_{point}"
        with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE crash_{point}")
        lines = (point * 3) % (changes + 1)
        delay = (point * 7 % 11) / 1000
        state = tmp_path / f"client-{point}"
        with served(tmp_path / f"tenant-{point}") as (url, app):
            killed += kill_after(provisioner(url, state, playbook, shared), lines, delay)
            with Journal(state, shared) as journal:
                interrupted_writes += len(journal.pending("test-officials"))
            resumed = provisioner(url, state, playbook, shared)
            out, _ = resumed.communicate(timeout=120)
            assert resumed.returncode == 0, f"kill point {point}: {out}"
            assert tenant_state(app) == reference, f"kill point {point}"
            assert repeated_writes(app) == [], f"kill point {point}"
        with Journal(state, shared) as journal:
            assert journal.pending("test-officials") == [], f"kill point {point}"
        assert not (state / "journal.sqlite").exists()  # the journal was the shared one
    assert killed >= SHARED_KILL_POINTS - 2
    print(f"crash test, shared state: {SHARED_KILL_POINTS} kill points, {killed} SIGKILLs landed,"
          f" {interrupted_writes} writes interrupted between intent and outcome, repeated writes: 0")


ROLLBACK_KILL_POINTS = 8


def rollback(url: str, state: Path, playbook: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", "--state-dir", str(state), "--graph-url", url,
         "rollback", "--yes", *extra, str(playbook)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_sigkill_during_rollback_then_rollback_again_finishes_it(tmp_path: Path) -> None:
    """A rollback killed anywhere (between a user's delete and the journal knowing its licence
    and memberships went with it, too) is finished by the next rollback: never wedged on a 404,
    nothing left behind, and a third rollback has nothing to do."""
    (tmp_path / "roster.csv").write_text(roster_csv(officials(PEOPLE, 2026)), encoding="utf-8")
    playbook = tmp_path / "playbook.yaml"
    playbook.write_text(PLAYBOOK.format(wait=10, steps="account, license, groups, mailbox_settings",
                                        concurrency=2), encoding="utf-8")
    killed = 0
    for point in range(ROLLBACK_KILL_POINTS):
        state = tmp_path / f"rb-{point}"
        with served(tmp_path / f"rb-tenant-{point}") as (url, app):
            before = tenant_state(app)
            applied = provisioner(url, state, playbook)
            out, _ = applied.communicate(timeout=120)
            assert applied.returncode == 0, out
            killed += kill_after(rollback(url, state, playbook), point % (PEOPLE + 1),
                                 (point * 5 % 9) / 1000)
            again = rollback(url, state, playbook)
            out, _ = again.communicate(timeout=120)
            assert again.returncode == 0, f"kill point {point}: {out}"
            assert tenant_state(app)["people"] == before["people"] == [], f"kill point {point}"
            third = rollback(url, state, playbook)
            out, _ = third.communicate(timeout=120)
            assert third.returncode == 0 and "Rollback: nothing to undo." in out, f"kill point {point}: {out}"
        with Journal(state) as journal:
            assert journal.pending("test-officials") == [], f"kill point {point}"
    assert killed >= ROLLBACK_KILL_POINTS - 3
    print(f"rollback crash test: {ROLLBACK_KILL_POINTS} kill points, {killed} SIGKILLs landed,"
          " every second rollback finished, every third had nothing to do")
