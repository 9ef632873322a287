"""Journal, resume, rollback and the state lock, end to end on the sandbox."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from provisioner.lock import state_lock
from provisioner.sandbox import Tenant
from provisioner.sandbox.tenant import default_mailbox_settings

from .conftest import cli, reopen


def directory(state_dir: Path) -> dict[str, Any]:
    """What a person would see in the tenant: live users, licences, groups, mailboxes."""
    t = reopen(state_dir)
    users = t.users
    out = {
        "users": {u["userPrincipalName"]: {
            "displayName": u.get("displayName"), "department": u.get("department"),
            "jobTitle": u.get("jobTitle"), "enabled": u.get("accountEnabled"),
            "licences": sorted(lic["skuId"] for lic in u.get("assignedLicenses", [])),
            # As Graph shows them: a setting put back to its default equals one never set.
            "mailbox": {**default_mailbox_settings(), **u["_mailboxSettings"]}
            if u.get("_mailboxSettings") else None} for u in users.values()},
        "groups": {g["displayName"]: sorted(users[m]["userPrincipalName"] for m in g["_members"]
                                            if m in users) for g in t.store.values("groups")},
        "seats": {s["skuPartNumber"]: s["consumedUnits"] for s in t.skus()},
    }
    t.store.close()
    return out


def run_id_of(result: Result) -> str:
    match = re.search(r"Run (\S+) is in the journal", result.output)
    assert match, result.output
    return match.group(1)


@pytest.fixture
def ready(make_sandbox: Callable[..., Tenant], write_playbook: Callable[..., Path]) -> Path:
    make_sandbox()
    return write_playbook(4)


def test_rollback_of_a_run_restores_the_tenant_and_twice_is_a_no_op(
        runner: CliRunner, state_dir: Path, ready: Path) -> None:
    before = directory(state_dir)
    applied = cli(runner, state_dir, "apply", "--yes", str(ready))
    assert applied.exit_code == 0, applied.output
    assert directory(state_dir) != before
    rolled = cli(runner, state_dir, "rollback", "--run", run_id_of(applied), "--yes", str(ready))
    assert rolled.exit_code == 0, rolled.output
    assert "Rollback: 0 to create, 0 to update, 4 to delete." in rolled.output
    assert directory(state_dir) == before
    writes = reopen(state_dir).store.counters["mutating"]
    again = cli(runner, state_dir, "rollback", "--run", run_id_of(applied), "--yes", str(ready))
    assert again.exit_code == 0 and "Rollback: nothing to undo." in again.output
    assert reopen(state_dir).store.counters["mutating"] == writes
    deleted = reopen(state_dir).store.all("deletedUsers")
    assert len(deleted) == 4  # soft-deleted: restorable for 30 days


def test_rollback_of_a_person_touches_only_that_person(runner: CliRunner, state_dir: Path,
                                                        ready: Path) -> None:
    cli(runner, state_dir, "apply", "--yes", str(ready))
    after_apply = directory(state_dir)
    result = cli(runner, state_dir, "rollback", "--person", "P00002", "--yes", str(ready))
    assert result.exit_code == 0, result.output
    upn = "hakan.oberg@politiker.example-region.se"
    expected = json.loads(json.dumps(after_apply))
    del expected["users"][upn]
    expected["groups"] = {g: [m for m in ms if m != upn] for g, ms in expected["groups"].items()}
    expected["seats"]["ENTERPRISEPACK"] -= 1
    assert directory(state_dir) == expected


def test_rollback_of_an_update_run_restores_attributes_and_memberships(
        runner: CliRunner, state_dir: Path, ready: Path, tmp_path: Path) -> None:
    cli(runner, state_dir, "apply", "--yes", str(ready))
    after_first = directory(state_dir)
    roster = tmp_path / "roster.csv"
    roster.write_text(roster.read_text(encoding="utf-8").replace("Regionfullmäktige", "Kulturnämnden"),
                      encoding="utf-8")
    second = cli(runner, state_dir, "apply", "--yes", str(ready))
    assert "3 applied" in second.output  # the department, out of one committee group, into another
    result = cli(runner, state_dir, "rollback", "--run", run_id_of(second), "--yes", str(ready))
    assert result.exit_code == 0, result.output
    assert "~ update user:karin.lindqvist@politiker.example-region.se" in result.output
    assert ("- remove karin.lindqvist@politiker.example-region.se"
            " from group Politiker Kulturnämnden") in result.output
    assert directory(state_dir) == after_first


def test_drift_stops_the_rollback_of_that_object_unless_forced(runner: CliRunner, state_dir: Path,
                                                               ready: Path) -> None:
    applied = cli(runner, state_dir, "apply", "--yes", str(ready))
    t = reopen(state_dir)
    user = next(u for u in t.users.values()
                if u["userPrincipalName"] == "karin.lindqvist@politiker.example-region.se")
    t.update_user(user["id"], {"department": "Ändrad av HR"})
    t.store.close()
    result = cli(runner, state_dir, "rollback", "--run", run_id_of(applied), "--yes", str(ready))
    assert result.exit_code == 1
    assert ("user:karin.lindqvist@politiker.example-region.se changed since the tool changed it:"
            " department is 'Ändrad av HR', the tool left 'Regionfullmäktige'") in result.output
    assert "rollback --force restores it anyway" in result.output
    assert "karin.lindqvist@politiker.example-region.se" in directory(state_dir)["users"]
    forced = cli(runner, state_dir, "rollback", "--force", "--yes", str(ready))
    assert forced.exit_code == 0, forced.output
    assert "karin.lindqvist@politiker.example-region.se" not in directory(state_dir)["users"]


def test_dry_run_shows_the_rollback_and_changes_nothing(runner: CliRunner, state_dir: Path,
                                                        ready: Path) -> None:
    cli(runner, state_dir, "apply", "--yes", str(ready))
    writes = reopen(state_dir).store.counters["mutating"]
    result = cli(runner, state_dir, "rollback", "--dry-run", str(ready))
    assert result.exit_code == 0
    assert "- delete user:karin.lindqvist@politiker.example-region.se  [P00001]" in result.output
    assert reopen(state_dir).store.counters["mutating"] == writes


def test_a_rollback_reads_the_accounts_20_to_a_batch(runner: CliRunner, state_dir: Path,
                                                     make_sandbox: Callable[..., Tenant],
                                                     write_playbook: Callable[..., Path]) -> None:
    """The undo of 25 accounts is judged from two $batch requests of reads, not 25 GETs
    (https://learn.microsoft.com/graph/json-batching: up to 20 requests in one)."""
    make_sandbox()
    playbook = write_playbook(25)
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    before = reopen(state_dir).store.counters
    result = cli(runner, state_dir, "rollback", "--dry-run", str(playbook))
    assert result.exit_code == 0, result.output
    after = reopen(state_dir).store.counters
    assert after["BATCH"] - before["BATCH"] == 2
    assert after["GET"] - before["GET"] == 25  # the batches' items, one per account


def test_a_rollback_deletes_the_accounts_20_to_a_batch(runner: CliRunner, state_dir: Path,
                                                       make_sandbox: Callable[..., Tenant],
                                                       write_playbook: Callable[..., Path]) -> None:
    """The 25 accounts are deleted in two $batch requests, each delete answered as itself
    (https://learn.microsoft.com/graph/json-batching), journaled with its batch's request-id."""
    make_sandbox()
    playbook = write_playbook(25, steps="account")
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    result = cli(runner, state_dir, "rollback", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    db = sqlite3.connect(state_dir / "journal.sqlite")
    try:
        ids = [r[0] for r in db.execute("SELECT request_id FROM changes WHERE step = 'account'"
                                        " AND action = 'delete' AND state = 'applied'")]
    finally:
        db.close()
    assert len(ids) == 25 and all(ids)
    assert sorted(Counter(ids).values()) == [5, 20]
    tenant = reopen(state_dir)
    assert not [u for u in tenant.users.values()
                if u["userPrincipalName"].endswith("@politiker.example-region.se")]


def test_a_second_apply_on_the_same_state_dir_refuses_at_once(
        runner: CliRunner, state_dir: Path, ready: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "anna")
    with state_lock(state_dir, "apply"):
        result = cli(runner, state_dir, "apply", "--yes", str(ready))
    assert result.exit_code == 7
    assert re.search(r"error: another apply by anna \(pid \d+ on \S+, since \d{4}-\d\d-\d\dT",
                     result.output)
    assert reopen(state_dir).store.counters["mutating"] == 0


class Crash(BaseException):
    """Stands in for the process dying in the middle of a run."""


def test_resume_reconciles_interrupted_writes_by_reading_graph(
        runner: CliRunner, state_dir: Path, ready: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioner.graph.gateway import Graph

    calls = {"n": 0}

    def dies_after_writing(original: Any) -> Any:
        async def write(self: Graph, *args: Any) -> None:
            calls["n"] += 1
            await original(self, *args)
            if calls["n"] == 3:
                raise Crash  # the write is made; the outcome is never journaled
        return write

    for name in ("add_member", "bind_members"):  # memberships go one or up to 20 to a write
        monkeypatch.setattr(Graph, name, dies_after_writing(getattr(Graph, name)))
    with pytest.raises(Crash):
        cli(runner, state_dir, "apply", "--yes", str(ready))
    monkeypatch.undo()
    status = json.loads(cli(runner, state_dir, "status", "--json", str(ready)).output)
    assert status["runs"][0]["status"] == "interrupted"
    assert len(status["pending_intents"]) >= 1
    resumed = cli(runner, state_dir, "apply", "--yes", str(ready))
    assert resumed.exit_code == 0, resumed.output
    assert re.search(r"Resumed after an interrupted run: [1-9]\d* unfinished writes had been made",
                     resumed.output)
    status = json.loads(cli(runner, state_dir, "status", "--json", str(ready)).output)
    assert status["pending_intents"] == []
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(ready)).exit_code == 0
    users = [u for u in directory(state_dir)["users"] if u.endswith("@politiker.example-region.se")]
    assert len(users) == 4
    assert cli(runner, state_dir, "audit", "verify").exit_code == 0


def test_the_journal_records_intent_outcome_and_reversibility(runner: CliRunner, state_dir: Path,
                                                              ready: Path) -> None:
    cli(runner, state_dir, "apply", "--yes", str(ready))
    db = sqlite3.connect(state_dir / "journal.sqlite")
    rows = db.execute("SELECT step, action, reversibility, state, object_id IS NOT NULL,"
                      " request_id IS NOT NULL FROM changes").fetchall()
    assert ("account", "create", "compensable", "applied", 1, 1) in rows
    assert ("groups", "create", "reversible", "applied", 1, 1) in rows
    assert all(r[3] == "applied" for r in rows)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_status_shows_runs_and_what_a_rollback_would_touch(runner: CliRunner, state_dir: Path,
                                                           ready: Path) -> None:
    cli(runner, state_dir, "apply", "--yes", str(ready))
    result = cli(runner, state_dir, "status", str(ready))
    assert result.exit_code == 0
    assert "completed" in result.output and "20 applied" in result.output
    assert "Unfinished writes (pending intents): 0" in result.output
    assert "A rollback of everything would touch: 4 accounts to soft-delete" in result.output


def test_graph_writes_are_audited_with_request_ids(runner: CliRunner, state_dir: Path,
                                                   ready: Path) -> None:
    cli(runner, state_dir, "apply", "--yes", str(ready))
    records = [json.loads(x) for x in (state_dir / "audit.jsonl").read_text().splitlines()]
    writes = [r for r in records if r["event"] == "graph_write"]
    assert len(writes) == 20
    assert all(r["request_id"] and r["run_id"] and r["change_id"] and r["upn"] for r in writes)
    creates = [r for r in writes if r["step"] == "account"]
    assert all(r["object_id"] for r in creates)
    [command] = [r for r in records if r["event"] == "command"]
    assert command["command"] == "apply" and command["exit_status"] == 0
    assert command["graph_identity"].startswith("sandbox")
    assert cli(runner, state_dir, "audit", "verify").exit_code == 0


def test_no_secret_reaches_the_journal_audit_log_or_output(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    password = "Known!Secret-4711"
    monkeypatch.setattr("provisioner.steps.account.generate_password", lambda: password)
    numbers = {"P1": "19811218-9876", "P2": "8112189876"}
    roster = "person_id,given_name,surname,body,personal_number\n" + "".join(
        f"{pid},Bo{pid},Ek,Kulturnämnden,{pnr}\n" for pid, pnr in numbers.items())
    make_sandbox()
    playbook = write_playbook(roster=roster)
    outputs = [cli(runner, state_dir, "-vv", "apply", "--yes", str(playbook)).output,
               cli(runner, state_dir, "-vv", "rollback", "--yes", str(playbook)).output,
               cli(runner, state_dir, "status", str(playbook)).output,
               cli(runner, state_dir, "audit", "export").output,
               cli(runner, state_dir, "audit", "show", "--person", "P1", "--json").output]
    secrets = [password, "sandbox-token", "198112189876", "8112189876", "811218-9876"]
    blobs = [o.encode() for o in outputs] + [
        (state_dir / name).read_bytes() for name in ("journal.sqlite", "audit.jsonl")]
    blobs += [p.read_bytes() for p in state_dir.glob("journal.sqlite-*")]
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in blobs), secret
    assert "Apply complete: 10 applied" in outputs[0]


def test_rollback_never_deletes_a_user_through_members_without_ref(
        runner: CliRunner, state_dir: Path, ready: Path) -> None:
    """DELETE /groups/{g}/members/{u} (no /$ref) deletes the user itself: rollback must not."""
    cli(runner, state_dir, "apply", "--yes", str(ready))
    # A membership-only undo: move a person, then roll that run back.
    roster = ready.parent / "roster.csv"
    roster.write_text(roster.read_text(encoding="utf-8").replace("Regionstyrelsen", "Kulturnämnden"),
                      encoding="utf-8")
    second = cli(runner, state_dir, "apply", "--yes", str(ready))
    undo = cli(runner, state_dir, "rollback", "--run", run_id_of(second), "--yes", str(ready))
    assert ("- remove hakan.oberg@politiker.example-region.se"
            " from group Politiker Kulturnämnden") in undo.output
    assert "hakan.oberg@politiker.example-region.se" in directory(state_dir)["users"]
    assert reopen(state_dir).store.all("deletedUsers") == {}


@pytest.mark.parametrize("how", [["--person", "P00002"], ["--cohort", "all"], [], ["--force"]])
def test_an_account_deleted_by_hand_never_wedges_a_rollback(runner: CliRunner, state_dir: Path,
                                                            ready: Path, how: list[str]) -> None:
    """Graph's 404 for what is being undone (the user is gone, and its licence, memberships,
    mailbox with it) means done: every kind of rollback goes through, and twice is a no-op."""
    before = directory(state_dir)
    applied = cli(runner, state_dir, "apply", "--yes", str(ready))
    assert applied.exit_code == 0, applied.output
    t = reopen(state_dir)
    t.delete_user("hakan.oberg@politiker.example-region.se")  # an admin, in the Entra portal
    t.store.close()
    assert cli(runner, state_dir, "rollback", "--dry-run", *how, str(ready)).exit_code == 0
    rolled = cli(runner, state_dir, "rollback", "--yes", *how, str(ready))
    assert rolled.exit_code == 0, rolled.output
    if how[:1] != ["--person"]:
        assert directory(state_dir) == before
    again = cli(runner, state_dir, "rollback", "--yes", *how, str(ready))
    assert again.exit_code == 0 and "Rollback: nothing to undo." in again.output
