"""The journal: the durable record of every run (SQLite, WAL, in the state dir).

Intent is committed before each Graph write and the outcome after it, with the image
needed to undo the change. A row left at ``intent`` is a write whose outcome nobody saw
(the process died): the next apply reconciles it by reading Graph. Rollback reads the
applied rows; resume and status read the rest. No secret is ever written here: Changes hold
no password, and personal data stays in the roster.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import Backend, PostgresBackend, SQLiteBackend
from .cohort_state import CohortState, advance
from .model import Action, Change, Json, canonical
from .private import private_dir, private_file

DB_NAME = "journal.sqlite"

INTENT = "intent"  # written before the Graph write; no outcome seen yet
APPLIED_STATES = ("applied", "reconciled")
AMBIGUOUS = "AmbiguousOutcome"  # errors.AmbiguousOutcome.code


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Entry:
    """One journaled change, as rollback, resume and status read it."""

    seq: int
    run_id: str
    cohort: str | None
    change: Change
    reversibility: str
    before_image: Json | None
    upn: str | None
    object_id: str | None
    state: str
    undone_by: int | None
    undo_of: int | None


@dataclass(frozen=True, slots=True)
class CohortRecord:
    cohort: str
    state: CohortState
    updated: str | None
    applied_at: str | None
    report: Json | None


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    kind: str
    playbook_name: str
    operator: str
    host: str
    pid: int
    started: str
    finished: str | None
    status: str


class Journal:
    """The journal in SQLite in the state dir, or in a shared PostgreSQL (``url``)."""

    def __init__(self, state_dir: Path, url: str | None = None, durable: bool = True) -> None:
        """``durable``: each commit on disk before it returns (every journal but the audit
        log's anchor: see Session.audit)."""
        self._db: Backend
        if url:
            self._db = PostgresBackend(url, durable)
            return
        private_dir(state_dir)
        self.path = private_file(state_dir / DB_NAME)  # mobiles and private addresses inside
        self._db = SQLiteBackend(self.path, durable)

    @property
    def backend(self) -> Backend:
        return self._db

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """What is written inside commits together at the end, or not at all."""
        return self._db.transaction()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, kind: str, playbook_name: str, playbook_path: str, digest: str) -> str:
        import os

        run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        self._db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 'running')",
            (run_id, kind, playbook_name, playbook_path, digest, operator(), socket.gethostname(),
             os.getpid(), now()))
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        self._db.execute("UPDATE runs SET finished = ?, status = ? WHERE id = ?",
                         (now(), status, run_id))

    def runs(self, playbook_name: str | None = None) -> list[Run]:
        sql = "SELECT id, kind, playbook_name, operator, host, pid, started, finished, status FROM runs"
        rows = (self._db.execute(sql + " WHERE playbook_name = ? ORDER BY started", (playbook_name,))
                if playbook_name else self._db.execute(sql + " ORDER BY started"))
        return [Run(*r) for r in rows]

    def mark_interrupted(self, playbook_name: str) -> list[str]:
        """Runs still 'running' whose process is gone (the caller holds the lock)."""
        ids = [r.id for r in self.runs(playbook_name) if r.status == "running"]
        for rid in ids:
            self.finish_run(rid, "interrupted")
        return ids

    def outcome_counts(self, run_id: str) -> dict[str, int]:
        return dict(self._db.execute(
            "SELECT state, COUNT(*) FROM changes WHERE run_id = ? GROUP BY state", (run_id,)))

    # -- changes ---------------------------------------------------------------------------
    def intend(self, run_id: str, change: Change, *, reversibility: str, cohort: str | None,
               upn: str | None, object_id: str | None, before_image: Json | None,
               undo_of: int | None = None) -> int:
        """Commit the intent of a change; returns its seq. Called before the Graph write."""
        row = self._db.execute(
            "INSERT INTO changes (run_id, cohort, change_id, step, person_id, action, target,"
            " reversibility, intent, before_image, upn, object_id, state, undo_of, started)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (run_id, cohort, change.id, change.step, change.person_id, change.action.value,
             change.target, str(reversibility), _dump(change.after), _dump(before_image), upn,
             object_id, INTENT, undo_of, now())).fetchone()
        return int(row[0])

    def record(self, seq: int, state: str, *, object_id: str | None = None,
               before_image: Json | None = None, request_id: str | None = None,
               error_code: str | None = None, message: str | None = None) -> None:
        with self._db.transaction():
            self._db.execute(
                "UPDATE changes SET state = ?, object_id = COALESCE(?, object_id),"
                " before_image = COALESCE(?, before_image), request_id = ?, error_code = ?,"
                " message = ?, finished = ? WHERE seq = ?",
                (state, object_id, _dump(before_image), request_id, error_code, message, now(), seq))
            if state in (*APPLIED_STATES, "unchanged"):
                undo_of = self._db.execute("SELECT undo_of FROM changes WHERE seq = ?", (seq,)).fetchone()[0]
                if undo_of is not None:
                    self._db.execute("UPDATE changes SET undone_by = ? WHERE seq = ?", (seq, undo_of))

    def mark_undone(self, seqs: Sequence[int], by: int) -> None:
        """Changes that went with an undone one (a deleted user's licence and groups)."""
        self._db.executemany("UPDATE changes SET undone_by = ? WHERE seq = ?", [(by, s) for s in seqs])

    def pending(self, playbook_name: str) -> list[Entry]:
        return self._entries("c.state = ? AND r.playbook_name = ?", (INTENT, playbook_name))

    def applied(self, playbook_name: str) -> list[Entry]:
        """Applied changes not yet undone (undo changes themselves excluded), in order."""
        return self._entries(
            "c.state IN ('applied', 'reconciled', 'unchanged') AND c.undone_by IS NULL"
            " AND c.undo_of IS NULL AND r.kind = 'apply' AND r.playbook_name = ?", (playbook_name,))

    def entries(self, run_id: str) -> list[Entry]:
        return self._entries("c.run_id = ?", (run_id,))

    def _entries(self, where: str, args: tuple[Any, ...]) -> list[Entry]:
        rows = self._db.execute(
            "SELECT c.seq, c.run_id, c.cohort, c.step, c.person_id, c.action, c.target,"
            " c.intent, c.reversibility, c.before_image, c.upn, c.object_id, c.state,"
            " c.undone_by, c.undo_of FROM changes c JOIN runs r ON r.id = c.run_id"
            f" WHERE {where} ORDER BY c.seq", args)
        return [_entry(r) for r in rows]

    # -- cohorts -----------------------------------------------------------------------------
    def cohort_state(self, playbook: str, cohort: str) -> CohortRecord:
        row = self._db.execute("SELECT state, updated, applied_at, report FROM cohorts"
                               " WHERE playbook = ? AND cohort = ?", (playbook, cohort)).fetchone()
        if row is None:
            return CohortRecord(cohort, CohortState.PENDING, None, None, None)
        return CohortRecord(cohort, CohortState(row[0]), row[1], row[2],
                            json.loads(row[3]) if row[3] else None)

    def set_cohort_state(self, playbook: str, cohort: str, state: CohortState, *,
                         applied: bool = False, report: Json | None = None) -> None:
        """Move a cohort (only along ``cohort_state.TRANSITIONS``)."""
        old = self.cohort_state(playbook, cohort)
        advance(old.state, state)
        self._db.execute(
            "INSERT INTO cohorts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (playbook, cohort) DO UPDATE SET"
            " state = EXCLUDED.state, updated = EXCLUDED.updated, applied_at = EXCLUDED.applied_at,"
            " report = EXCLUDED.report",
            (playbook, cohort, str(state), now(), now() if applied else old.applied_at,
             canonical(report) if report is not None else (canonical(old.report) if old.report else None)))

    def approve(self, playbook: str, cohort: str, who: str, note: str | None) -> None:
        self._db.execute("INSERT INTO approvals VALUES (?, ?, ?, ?, ?)",
                         (playbook, cohort, who, now(), note))

    def appliers(self, playbook: str, cohort: str) -> set[str]:
        """Who ran the apply runs that made the cohort's changes."""
        return {str(row[0]) for row in self._db.execute(
            "SELECT DISTINCT r.operator FROM runs r JOIN changes c ON c.run_id = r.id"
            " WHERE r.playbook_name = ? AND r.kind = 'apply' AND c.cohort = ?", (playbook, cohort))}

    def approvals_since(self, playbook: str, cohort: str, since: str | None) -> list[tuple[str, str]]:
        """(who, when) of every approval of the cohort since ``since``, newest first."""
        return [(str(r[0]), str(r[1])) for r in self._db.execute(
            "SELECT approved_by, approved_at FROM approvals WHERE playbook = ? AND cohort = ?"
            " AND approved_at >= ? ORDER BY approved_at DESC", (playbook, cohort, since or ""))]

    def latest_run_outcomes(self, playbook: str, cohort: str) -> dict[str, int]:
        """The latest outcome for each thing the cohort's changes touch (step, person, target),
        over all its apply runs: a change that failed once and whose target a later run applied,
        even with other values after the playbook was fixed, counts as applied."""
        last: dict[tuple[str, str, str], str] = {}
        for step, person, target, state in self._db.execute(
                "SELECT c.step, c.person_id, c.target, c.state FROM changes c JOIN runs r"
                " ON r.id = c.run_id WHERE r.kind = 'apply' AND r.playbook_name = ? AND c.cohort = ?"
                " AND c.state NOT IN ('intent', 'waiting') ORDER BY c.seq", (playbook, cohort)):
            last[(step, person, target)] = state
        counts: dict[str, int] = {}
        for state in last.values():
            counts[state] = counts.get(state, 0) + 1
        return counts

    def last_applied(self, playbook: str, step: str) -> dict[str, str]:
        """person_id → when the step last started a change that was made (UTC, ISO 8601)."""
        return dict(self._db.execute(
            "SELECT c.person_id, MAX(c.started) FROM changes c JOIN runs r ON r.id = c.run_id"
            " WHERE r.playbook_name = ? AND c.step = ? AND c.state = 'applied'"
            " AND c.undone_by IS NULL AND c.undo_of IS NULL GROUP BY c.person_id", (playbook, step)))

    def uncertain(self, playbook: str) -> dict[str, list[tuple[int, str]]]:
        """person_id → (seq, step) of writes that got no clear answer and cannot be read back
        (an e-mail, a pass): not repeated until a human settles them."""
        out: dict[str, list[tuple[int, str]]] = {}
        for pid, seq, step in self._db.execute(
                "SELECT c.person_id, c.seq, c.step FROM changes c JOIN runs r ON r.id = c.run_id"
                " WHERE r.playbook_name = ? AND c.state = 'failed' AND c.error_code = ?"
                " ORDER BY c.seq", (playbook, AMBIGUOUS)):
            out.setdefault(pid, []).append((seq, step))
        return out

    def settle(self, seqs: Sequence[int], happened: bool, who: str) -> None:
        """A human's word on uncertain writes: it happened (applied), or do it again."""
        with self._db.transaction():
            self._db.executemany(
                "UPDATE changes SET state = ?, error_code = ?, message = ? WHERE seq = ?",
                [("applied" if happened else "failed", None if happened else "AmbiguousSettled",
                  f"settled by {who}: {'it happened' if happened else 'do it again'}", seq) for seq in seqs])

    def leaving_since(self, playbook: str) -> dict[str, str]:
        """person_id → when their first leaver stage was applied."""
        return dict(self._db.execute(
            "SELECT c.person_id, MIN(c.started) FROM changes c JOIN runs r ON r.id = c.run_id"
            " WHERE r.playbook_name = ? AND c.cohort = 'leavers' AND c.state = 'applied'"
            " AND c.undone_by IS NULL AND c.undo_of IS NULL GROUP BY c.person_id", (playbook,)))

    def added_groups(self, playbook: str) -> set[str]:
        """Names of the groups this playbook has ever added people to."""
        rows = self._db.execute(
            f"SELECT DISTINCT {self._db.json_text('c.intent', 'group')} FROM changes c JOIN runs r"
            " ON r.id = c.run_id WHERE r.playbook_name = ? AND c.step = 'groups'"
            " AND c.action = 'create' AND c.state IN ('applied', 'reconciled')"
            " AND c.person_id NOT LIKE ?", (playbook, "group:%"))  # not a group's own licence
        return {str(r[0]) for r in rows if r[0]}

    # -- the audit log's anchor --------------------------------------------------------------
    def set_audit_head(self, path: str, seq: int, digest: str) -> None:
        self._db.execute("INSERT INTO audit_head VALUES (?, ?, ?) ON CONFLICT (path) DO UPDATE SET"
                         " seq = EXCLUDED.seq, hash = EXCLUDED.hash", (path, seq, digest))

    def audit_head(self, path: str) -> tuple[int, str] | None:
        row = self._db.execute("SELECT seq, hash FROM audit_head WHERE path = ?", (path,)).fetchone()
        return (int(row[0]), str(row[1])) if row else None


def _entry(row: tuple[Any, ...]) -> Entry:
    (seq, run_id, cohort, step, person_id, action, target, intent, reversibility, before,
     upn, object_id, state, undone_by, undo_of) = row
    after = json.loads(intent) if intent else None
    before_image = json.loads(before) if before else None
    change = Change(step, person_id, Action(action), target, before_image, after)
    return Entry(seq, run_id, cohort, change, reversibility, before_image,
                 upn, object_id, state, undone_by, undo_of)


def _dump(value: Json | None) -> str | None:
    return None if value is None else canonical(value)


def operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"

