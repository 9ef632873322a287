"""Shared state on PostgreSQL: the journal behaves as on SQLite, one apply at a time across
machines (the lock dies with its holder), every machine sees every run, migrations are
versioned, and a state dir's journal moves into it without losing a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.cohort_state import CohortState
from provisioner.journal import Journal
from provisioner.model import Action, Change

from .conftest import cli


def exercise(journal: Journal) -> dict[str, Any]:
    """Every kind of journal write and read, as apply, rollback, settle and gates make them."""
    run = journal.start_run("apply", "pb", "pb.yaml", "digest")
    made = Change("groups", "p1", Action.CREATE, "group:G:a@b", None, {"group": "G", "groupId": "g"})
    seq = journal.intend(run, made, reversibility="reversible", cohort="pilot", upn="a@b",
                         object_id="u1", before_image=None)
    journal.record(seq, "applied", request_id="r1")
    mail = Change("guide", "p2", Action.CREATE, "guide:p2", None, {"delivery": "email"})
    lost = journal.intend(run, mail, reversibility="one-way", cohort="pilot", upn="c@d", object_id=None,
                          before_image=None)
    journal.record(lost, "failed", error_code="AmbiguousOutcome", message="504")
    journal.finish_run(run, "completed")
    journal.set_cohort_state("pb", "pilot", CohortState.APPLYING, applied=True)
    journal.set_cohort_state("pb", "pilot", CohortState.AWAITING_APPROVAL, report={"gates": []})
    journal.approve("pb", "pilot", "eva", "ok")
    undo_run = journal.start_run("rollback", "pb", "pb.yaml", "digest")
    undo = Change("groups", "p1", Action.DELETE, "group:G:a@b", {"group": "G", "groupId": "g"}, None)
    useq = journal.intend(undo_run, undo, reversibility="reversible", cohort="pilot", upn="a@b",
                          object_id="u1", before_image=None, undo_of=seq)
    journal.record(useq, "applied")
    journal.set_audit_head("audit.jsonl", 7, "ab" * 32)
    return {
        "seqs": [seq, lost, useq], "runs": [(r.kind, r.status) for r in journal.runs("pb")],
        "entries": [(e.seq, e.change.step, e.state, e.undone_by, e.undo_of) for e in journal.entries(run)],
        "applied": [e.seq for e in journal.applied("pb")], "uncertain": journal.uncertain("pb"),
        "cohort": (journal.cohort_state("pb", "pilot").state, journal.cohort_state("pb", "pilot").report),
        "approvals": [w for w, _ in journal.approvals_since("pb", "pilot", None)],
        "appliers": journal.appliers("pb", "pilot"), "groups": journal.added_groups("pb"),
        "outcomes": journal.latest_run_outcomes("pb", "pilot"), "head": journal.audit_head("audit.jsonl"),
    }


def test_the_journal_on_postgresql_answers_as_on_sqlite(shared_state: str, tmp_path: Path) -> None:
    with Journal(tmp_path / "state") as local, Journal(tmp_path / "unused", shared_state) as shared:
        assert exercise(shared) == exercise(local)


def test_migrations_are_versioned_and_run_once(runner: CliRunner, tmp_path: Path, shared_state: str) -> None:
    first = cli(runner, tmp_path / "s", "--state", shared_state, "state", "migrate")
    assert first.exit_code == 0 and "the shared state: migrated to version 1" in first.output
    again = cli(runner, tmp_path / "s", "--state", shared_state, "state", "migrate")
    assert "up to date" in again.output


def test_a_state_newer_than_the_tool_is_refused(tmp_path: Path, shared_state: str) -> None:
    import psycopg

    Journal(tmp_path, shared_state).close()
    with psycopg.connect(shared_state, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'later')")
    with pytest.raises(Exception, match="schema is version 99, newer than this tool knows"):
        Journal(tmp_path, shared_state)


def admin(runner: CliRunner, where: Path, graph: str, state: str, *args: str) -> Any:
    return cli(runner, where, "--graph-url", graph, "--state", state, *args)


@pytest.mark.slow
def test_two_machines_share_one_state(runner: CliRunner, tmp_path: Path, tenant: str, shared_state: str,
                                      write_playbook: Callable[..., Path]) -> None:
    playbook = str(write_playbook(3))
    first = admin(runner, tmp_path / "anna", tenant, shared_state, "apply", "--yes", playbook)
    assert first.exit_code == 0, first.output
    # A second admin, with a state dir of their own, sees the run and has nothing to do.
    seen = admin(runner, tmp_path / "bo", tenant, shared_state, "status", "--json", playbook)
    status = json.loads(seen.stdout)
    assert [r["kind"] for r in status["runs"]] == ["apply"] and status["cohorts"][0]["state"] == "passed"
    again = admin(runner, tmp_path / "bo", tenant, shared_state, "plan", "--detailed-exitcode", playbook)
    assert again.exit_code == 0, again.output
    # ... and can roll back what the first one made.
    undone = admin(runner, tmp_path / "bo", tenant, shared_state, "rollback", "--yes", playbook)
    assert undone.exit_code == 0, undone.output
    assert not (tmp_path / "bo" / "journal.sqlite").exists()  # nothing local


def hold_lock(state: str) -> subprocess.Popen[str]:
    """Another machine's apply holding the shared state's lock, in a process of its own."""
    code = ("import sys, time\nfrom provisioner.backends import postgres_lock\n"
            "with postgres_lock(sys.argv[1], 'apply'):\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, state], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "LOGNAME": "anna"})
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
def test_one_apply_at_a_time_across_machines_and_the_lock_dies_with_its_holder(
        runner: CliRunner, tmp_path: Path, tenant: str, shared_state: str,
        write_playbook: Callable[..., Path]) -> None:
    playbook = str(write_playbook(2))
    Journal(tmp_path, shared_state).close()  # the schema, as a first apply makes it
    holder = hold_lock(shared_state)
    try:
        refused = admin(runner, tmp_path / "bo", tenant, shared_state, "apply", "--yes", playbook)
        assert refused.exit_code == 7, refused.output
        assert f"another apply by anna (pid {holder.pid} on " in refused.output
        assert "is running on the shared state" in refused.output
    finally:
        holder.kill()  # SIGKILL: no chance to let go; the server drops the lock with the connection
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    done = admin(runner, tmp_path / "bo", tenant, shared_state, "apply", "--yes", playbook)
    assert done.exit_code == 0, done.output


@pytest.mark.slow
def test_a_state_dir_moves_into_a_shared_state_without_losing_a_run(
        runner: CliRunner, state_dir: Path, tmp_path: Path, make_sandbox: Callable[..., Any],
        write_playbook: Callable[..., Path], shared_state: str) -> None:
    make_sandbox()
    playbook = str(write_playbook(3))
    assert cli(runner, state_dir, "apply", "--yes", playbook).exit_code == 0
    one = cli(runner, state_dir, "rollback", "--yes", "--person", "P00001", playbook)
    assert one.exit_code == 0, one.output  # one person undone: undo links in the journal
    before = json.loads(cli(runner, state_dir, "status", "--json", playbook).stdout)
    pushed = cli(runner, state_dir, "state", "push", "--to", shared_state)
    assert pushed.exit_code == 0, pushed.output
    after = json.loads(cli(runner, state_dir, "--state", shared_state, "status", "--json", playbook).stdout)
    assert after["runs"] == before["runs"] and after["cohorts"] == before["cohorts"]
    assert after["rollback_would_touch"] == before["rollback_would_touch"]
    # The undo links survived: a rollback through the shared state finishes the job.
    rest = cli(runner, state_dir, "--state", shared_state, "rollback", "--yes", playbook)
    assert rest.exit_code == 0, rest.output
    empty = json.loads(cli(runner, state_dir, "--state", shared_state, "status", "--json", playbook).stdout)
    assert empty["rollback_would_touch"] == {"accounts to soft-delete": 0}
    twice = cli(runner, state_dir, "state", "push", "--to", shared_state)
    assert twice.exit_code == 1 and "push into an empty one" in twice.output


def test_a_shared_state_that_does_not_answer_is_one_clear_error(runner: CliRunner, tmp_path: Path,
                                                                write_playbook: Callable[..., Path]) -> None:
    result = cli(runner, tmp_path / "s", "--state", "postgresql://someone:pw@127.0.0.1:9/none", "status",
                 str(write_playbook(1)))
    assert result.exit_code == 1 and "cannot reach the shared state" in result.output
    assert "pw" not in result.output.replace("postgresql://someone:[redacted]", "")


def test_a_playbook_never_holds_the_states_password(tmp_path: Path) -> None:
    from provisioner.errors import PlaybookError
    from provisioner.playbook import load_playbook

    path = tmp_path / "p.yaml"
    path.write_text("name: t\nroster: r.csv\ndomain: p.se\nsteps: [account]\n"
                    "state: postgresql://prov:secret@db.region.se/provisioner\n", encoding="utf-8")
    with pytest.raises(PlaybookError, match="no password in the playbook"):
        load_playbook(path)
