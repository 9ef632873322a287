"""The audit log's hash chain: every kind of tampering is named by `audit verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.audit import AuditLog, redact_argv, verify
from provisioner.cli import main

from .conftest import cli


def write_log(path: Path, n: int = 6, key: bytes | None = None) -> list[bytes]:
    log = AuditLog(path, key)
    for i in range(n):
        log.event("graph_write", step="account", target=f"user:u{i}@p.se", outcome="applied")
    return path.read_bytes().splitlines(keepends=True)


def test_an_intact_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path)
    verdict = verify(path)
    assert verdict.ok and verdict.records == 6


def test_an_edited_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = write_log(path)
    lines[2] = lines[2].replace(b'"applied"', b'"failed"')
    path.write_bytes(b"".join(lines))
    verdict = verify(path)
    assert (verdict.ok, verdict.line) == (False, 3)
    assert "seq 3 was edited" in verdict.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    import hashlib

    from provisioner.model import canonical

    path = tmp_path / "a.jsonl"
    lines = write_log(path)
    record = json.loads(lines[2])
    record["outcome"] = "failed"
    record["hash"] = hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})
                                    .encode()).hexdigest()
    lines[2] = (canonical(record) + "\n").encode()
    path.write_bytes(b"".join(lines))
    verdict = verify(path)
    assert verdict.line == 4 and "previous record's hash does not match" in verdict.reason


def test_with_a_key_a_recomputed_hash_is_not_enough(tmp_path: Path) -> None:
    import hashlib

    from provisioner.model import canonical

    path = tmp_path / "a.jsonl"
    lines = write_log(path, key=b"k3y")
    record = json.loads(lines[1])
    record["outcome"] = "failed"
    record["hash"] = hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})
                                    .encode()).hexdigest()
    lines[1] = (canonical(record) + "\n").encode()
    path.write_bytes(b"".join(lines))
    assert verify(path, b"k3y").line == 2
    assert "set PROVISIONER_AUDIT_KEY" in verify(path, None).reason


def test_a_deleted_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = write_log(path)
    del lines[3]
    path.write_bytes(b"".join(lines))
    verdict = verify(path)
    assert verdict.line == 4 and "deleted: seq 4 to 4 are missing" in verdict.reason


def test_reordered_records_are_named(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = write_log(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    verdict = verify(path)
    assert verdict.line == 2 and "out of order: seq 3 stands where seq 2 should" in verdict.reason


def test_a_cut_in_the_middle_of_a_record_is_truncation(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = write_log(path)
    path.write_bytes(b"".join(lines[:4]) + lines[4][:40])
    verdict = verify(path)
    assert verdict.line == 5 and verdict.reason == "truncated: the last record is incomplete"


def test_records_cut_off_the_end_are_caught_by_the_journals_anchor(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    heads: list[tuple[int, str]] = []
    log = AuditLog(path, None, lambda _prev, head: heads.append(head))
    for i in range(5):
        log.event("command", command=f"c{i}")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))
    assert verify(path).ok  # on its own, a shorter chain is still a chain
    verdict = verify(path, head=heads[-1])
    assert not verdict.ok and "the log ends at seq 3, but seq 5 was recorded as its head" \
        in verdict.reason


def test_audit_verify_command_exits_1_on_a_tampered_copy(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "copy.jsonl"
    lines = write_log(path)
    lines[0] = lines[0].replace(b"u0@p.se", b"x0@p.se")
    path.write_bytes(b"".join(lines))
    result = runner.invoke(main, ["--state-dir", str(tmp_path / "s"), "audit", "verify", str(path)])
    assert result.exit_code == 1
    assert f"{path}: broken at line 1: record seq 1 was edited" in result.output


def test_every_command_is_audited_with_who_and_exit_status(runner: CliRunner, tmp_path: Path) -> None:
    state = tmp_path / "s"
    runner.invoke(main, ["--state-dir", str(state), "validate", str(tmp_path / "missing.yaml")])
    [record] = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert record["event"] == "command" and record["command"] == "validate"
    assert record["exit_status"] == 1 and record["operator"]
    assert record["argv"] == ["--state-dir", str(state), "validate", str(tmp_path / "missing.yaml")]


def test_export_filters_by_date_and_writes_csv(runner: CliRunner, tmp_path: Path) -> None:
    state = tmp_path / "s"
    write_log(state / "audit.jsonl", n=3)
    out = runner.invoke(main, ["--state-dir", str(state), "audit", "export", "--since", "2000-01-01",
                               "--format", "csv"]).output.splitlines()
    assert out[0].startswith("seq,ts,event,command")
    assert len(out) == 4
    future = runner.invoke(main, ["--state-dir", str(state), "audit", "export", "--since",
                                  "2999-01-01"]).output
    assert future == ""


@pytest.mark.parametrize(("argv", "expected"), [
    (["--client-secret", "abc", "plan"], ["--client-secret", "[redacted]", "plan"]),
    (["--password=abc"], ["--password=[redacted]"]),
    (["--state-dir", "x"], ["--state-dir", "x"]),
])
def test_secrets_are_redacted_from_the_command_line(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected


# -- someone with write access to the file -------------------------------------------------


def test_rewriting_a_keyed_chain_as_plain_sha256_is_caught(tmp_path: Path) -> None:
    """With a key, every record must be keyed: a forger without it who rewrites the whole log
    as plain sha256 (recomputing every link) fails verify at the first record."""
    import hashlib

    from provisioner.audit import GENESIS
    from provisioner.model import canonical

    path = tmp_path / "a.jsonl"
    lines = write_log(path, key=b"k3y")
    prev, forged = GENESIS, []
    for raw in lines:
        record = {k: v for k, v in json.loads(raw).items() if k != "hash"}
        record |= {"alg": "sha256", "prev": prev}
        record["hash"] = prev = hashlib.sha256(canonical(record).encode()).hexdigest()
        forged.append((canonical(record) + "\n").encode())
    path.write_bytes(b"".join(forged))
    verdict = verify(path, b"k3y")
    assert not verdict.ok and verdict.line == 1
    assert "claims alg 'sha256', but this chain is keyed" in verdict.reason


@pytest.mark.parametrize("tamper", ["cut the last two records", "delete the log"])
def test_truncation_and_deletion_stay_detectable_after_more_commands(
        runner: CliRunner, tmp_path: Path, tamper: str) -> None:
    """The journal's anchor never moves over a chain that lost its head, so `audit verify` run
    twice, or any command after the cut, still says what happened."""
    state = tmp_path / "state"
    for _ in range(4):
        cli(runner, state, "audit", "verify") if (state / "audit.jsonl").exists() else \
            cli(runner, state, "sandbox", "reset", "--employees", "5")
    log = state / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 4
    if tamper == "delete the log":
        log.unlink()
        cli(runner, state, "sandbox", "show")  # one command writes a new log
    else:
        log.write_bytes(b"".join(lines[:-2]))
    for _ in range(3):
        result = cli(runner, state, "audit", "verify")
        assert result.exit_code == 1, result.output
        assert "truncated or replaced" in result.output or "replaced: seq" in result.output


def test_a_moved_state_dir_keeps_its_anchor(runner: CliRunner, tmp_path: Path) -> None:
    import shutil

    state = tmp_path / "state"
    cli(runner, state, "sandbox", "reset", "--employees", "5")
    cli(runner, state, "sandbox", "show")
    moved = tmp_path / "moved"
    shutil.copytree(state, moved)
    log = moved / "audit.jsonl"
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:-1]))
    result = cli(runner, moved, "audit", "verify")
    assert result.exit_code == 1 and "truncated or replaced" in result.output


def test_an_external_head_catches_a_replaced_log(runner: CliRunner, tmp_path: Path) -> None:
    """A head kept outside the state dir (a SIEM, a ticket) outlives both the log and the
    journal: a fresh log and journal in their place do not pass it."""
    import re
    import shutil

    state = tmp_path / "state"
    cli(runner, state, "sandbox", "reset", "--employees", "5")
    first = cli(runner, state, "audit", "verify")
    head = re.search(r"head (\d+:[0-9a-f]{64})", first.output).group(1)  # type: ignore[union-attr]
    assert cli(runner, state, "audit", "verify", "--expect-head", head).exit_code == 0
    shutil.rmtree(state)
    cli(runner, state, "sandbox", "reset", "--employees", "5")
    cli(runner, state, "sandbox", "show")
    replaced = cli(runner, state, "audit", "verify", "--expect-head", head)
    assert replaced.exit_code == 1 and "replaced: seq" in replaced.output


def test_a_record_over_64_kb_does_not_fork_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    log.event("approval", note="x" * 100_000)
    log.event("approval", note="short")
    assert verify(path).ok
    assert [json.loads(x)["seq"] for x in path.read_bytes().splitlines()] == [1, 2]


@pytest.mark.parametrize("between", ["another writer appends", "the log is cut", "the log is replaced"])
def test_a_writer_reads_the_tail_again_when_the_file_is_not_as_it_left_it(tmp_path: Path,
                                                                          between: str) -> None:
    """A writer remembers the head it wrote last and skips reading the tail while the file is
    as it left it; anything else in between (another command, a cut, a new file) is read."""
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    log.event("command", command="first")
    log.event("command", command="second")
    if between == "another writer appends":
        AuditLog(path).event("command", command="other")
    elif between == "the log is cut":
        path.write_bytes(path.read_bytes().splitlines(keepends=True)[0])
    else:
        path.unlink()
        AuditLog(path).event("command", command="new log")
    log.event("command", command="third")
    assert verify(path).ok
    records = [json.loads(x) for x in path.read_bytes().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))


def test_a_torn_tail_is_repaired_and_audited_before_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path, 3)
    with path.open("ab") as fh:
        fh.write(b'{"event": "graph_write", "seq": 4, "half a rec')  # the disk filled up here
    AuditLog(path).event("graph_write", step="account")
    records = [json.loads(x) for x in path.read_bytes().splitlines()]
    assert [r["event"] for r in records[3:]] == ["audit_repaired", "graph_write"]
    assert records[3]["dropped_bytes"] == len(b'{"event": "graph_write", "seq": 4, "half a rec')
    assert verify(path).ok


def test_export_reports_a_damaged_line_and_goes_on(runner: CliRunner, tmp_path: Path) -> None:
    state = tmp_path / "state"
    cli(runner, state, "sandbox", "reset", "--employees", "5")
    log = state / "audit.jsonl"
    log.write_bytes(log.read_bytes() + b"this line was typed by hand\n")
    result = runner.invoke(main, ["--state-dir", str(state), "audit", "export"])
    assert result.exit_code == 0
    assert f"{log}:2: not an audit record (damaged); skipped" in result.output
    records = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    assert [r["seq"] for r in records] == [1]


# -- what a Graph write record says, and `audit show` ------------------------------------

def test_a_graph_write_record_says_who_where_which_version_playbook_and_what_changed(
        runner: CliRunner, state_dir: Path, make_sandbox: Any, write_playbook: Any) -> None:
    from provisioner.playbook import load_playbook

    make_sandbox()
    playbook = write_playbook(2)
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    records = [json.loads(x) for x in (state_dir / "audit.jsonl").read_text().splitlines()]
    writes = [r for r in records if r["event"] == "graph_write"]
    digest = load_playbook(playbook).digest
    for r in writes:
        assert r["operator"] and r["host"] and r["tool_version"]
        assert r["person_id"] and r["cohort"] and r["playbook"] == "test-officials"
        assert r["playbook_digest"] == digest and r["graph_identity"].startswith("sandbox")
        assert "after" in r and "before" in r
    [account] = [r for r in writes if r["step"] == "account" and r["person_id"] == writes[0]["person_id"]]
    assert account["before"] is None and account["after"]["userPrincipalName"] == account["upn"]
    [settings] = [r for r in writes if r["step"] == "mailbox_settings" and r["upn"] == account["upn"]]
    assert settings["before"]["timeZone"] != settings["after"]["timeZone"]  # as Exchange had it


def test_audit_show_answers_for_an_account_a_person_and_a_run(
        runner: CliRunner, state_dir: Path, make_sandbox: Any, write_playbook: Any) -> None:
    make_sandbox()
    playbook = write_playbook(2)
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    cli(runner, state_dir, "rollback", "--yes", str(playbook))
    writes = [json.loads(x) for x in (state_dir / "audit.jsonl").read_text().splitlines()]
    upn = next(r["upn"] for r in writes if r["event"] == "graph_write")
    shown = json.loads(cli(runner, state_dir, "audit", "show", "--upn", upn.upper(), "--json").output)
    assert shown["query"] == {"upn": upn.upper()}
    done = [(r["step"], r["action"]) for r in shown["records"]]
    # Made, licensed, added to groups, set up; then removed by the rollback: nothing else.
    assert done[0] == ("account", "create") and done[-1] == ("account", "delete")
    assert {r["upn"] for r in shown["records"]} == {upn}
    assert len({r["run_id"] for r in shown["records"]}) == 2
    person = shown["records"][0]["person_id"]
    by_person = json.loads(cli(runner, state_dir, "audit", "show", "--person", person, "--json").output)
    assert by_person["records"] == shown["records"]
    run = shown["records"][0]["run_id"]
    by_run = json.loads(cli(runner, state_dir, "audit", "show", "--run", run, "--json").output)
    events = [r["event"] for r in by_run["records"]]
    assert events.count("command") == 1 and "gates" in events
    assert {r["person_id"] for r in by_run["records"] if r["event"] == "graph_write"} == {
        r["person_id"] for r in writes if r.get("run_id") == run and r["event"] == "graph_write"}
    text = cli(runner, state_dir, "audit", "show", "--upn", upn).output
    assert f"created user:{upn} (account): applied" in text and f"removed user:{upn}" in text


def test_audit_show_follows_a_person_across_a_renamed_address(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    log.event("graph_write", person_id="P1", upn="anna.ek@p.se", step="account", action="create")
    log.event("graph_write", person_id="P2", upn="bo.ek@p.se", step="account", action="create")
    log.event("graph_write", person_id="P1", upn="anna.lind@p.se", step="account", action="update")
    log.event("command", command="plan", run_ids=[])
    from provisioner.audit import history

    assert [r["seq"] for r in history(path, upn="anna.ek@p.se")] == [1, 3]
    assert [r["seq"] for r in history(path, upn="ANNA.LIND@p.se")] == [1, 3]
    assert history(path, upn="nobody@p.se") == []


@pytest.mark.parametrize("args", [[], ["--upn", "a@p.se", "--run", "r"]])
def test_audit_show_wants_exactly_one_question(runner: CliRunner, state_dir: Path,
                                               args: list[str]) -> None:
    result = cli(runner, state_dir, "audit", "show", *args)
    assert result.exit_code == 64 and "give one of --upn, --person or --run" in result.output


def test_audit_show_exits_1_when_the_log_knows_nothing(runner: CliRunner, state_dir: Path) -> None:
    write_log(state_dir / "audit.jsonl", n=2)
    result = cli(runner, state_dir, "audit", "show", "--upn", "nobody@p.se")
    assert result.exit_code == 1 and "nothing in the audit log about upn nobody@p.se" in result.output


@pytest.mark.slow
def test_commands_appending_at_the_same_time_never_fork_the_chain(tmp_path: Path) -> None:
    """Four processes append 100 records each to one log at the same time: the lock makes
    one chain of 400 (without it, two read the same head and both follow it)."""
    import subprocess
    import sys

    path = tmp_path / "a.jsonl"
    code = ("import sys; from pathlib import Path; from provisioner.audit import AuditLog\n"
            "log = AuditLog(Path(sys.argv[1]))\n"
            "for i in range(100): log.event('command', command=f'{sys.argv[2]}-{i}')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(n)]) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert verify(path).ok
    assert [json.loads(x)["seq"] for x in path.read_bytes().splitlines()] == list(range(1, 401))


def test_the_journal_waits_for_the_disk_and_only_the_audit_anchor_does_not(tmp_path: Path) -> None:
    """An intent is on disk before its write goes to Graph (synchronous=FULL); the audit log's
    anchor alone may lag a power cut behind (NORMAL), because its record was on disk first."""
    from provisioner.session import Session, Settings

    session = Session(Settings(tmp_path))
    try:
        session.audit.event("command", command="test")
        journal = session.journal()
        modes = [j.backend._db.execute("PRAGMA synchronous").fetchone()[0]  # type: ignore[attr-defined]
                 for j in (journal, session._anchor_journal)]
        journal.close()
    finally:
        session.close()
    assert modes == [2, 1]  # FULL, NORMAL
