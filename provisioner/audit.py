"""The audit log: JSON lines, hash-chained, for information security.

Each record carries ``seq``, the hash of the record before it (``prev``) and its own
``hash`` over its canonical JSON: SHA-256, or HMAC-SHA-256 when ``PROVISIONER_AUDIT_KEY`` is
set, so that only a key holder can forge a chain. Appends take an exclusive lock on
``audit.jsonl.lock`` (flock where there is one; filelock, the platform's own call, on
Windows), read the last record and write the new one
with a single ``write``, so concurrent
commands never fork the chain and a killed process never leaves half a record. The
journal keeps the last (seq, hash) as an anchor, so that cutting records off the end is
detected too. ``verify`` names the first broken record: edited, deleted, reordered or truncated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from filelock import FileLock

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from .logs import drop_secrets
from .model import canonical, canonical_bytes
from .private import private_dir

GENESIS = "0" * 64
KEY_ENV = "PROVISIONER_AUDIT_KEY"
SECRET_FLAGS = ("secret", "password", "passphrase", "token", "key", "pass")


def _hasher(key: bytes | None) -> tuple[str, Callable[[bytes], str]]:
    if key:
        return "hmac-sha256", lambda data: hmac.new(key, data, hashlib.sha256).hexdigest()
    return "sha256", lambda data: hashlib.sha256(data).hexdigest()


def audit_key() -> bytes | None:
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else None


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with anything that looks like a secret replaced, a URL's user and
    password (``--graph-url http://user:secret@host``) among them."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        arg = _USERINFO.sub(r"\1[redacted]@", arg)
        if hide_next:
            out.append("[redacted]")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        secretish = arg.startswith("-") and any(f in name.lower() for f in SECRET_FLAGS)
        if secretish and eq:
            out.append(f"{name}=[redacted]")
        elif secretish:
            out.append(arg)
            hide_next = True
        else:
            out.append(arg)
    return out


class _Sink:
    """structlog's final 'logger': chains and appends one record."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    def msg(self, **event: Any) -> None:
        self._log.append(event)


Head = tuple[int, str]  # (seq, hash) of a chain's last record


class AuditLog:
    """``context``: fields every record carries (who ran the tool, on which host, which
    version); ``bind`` adds those of a run (its playbook, cohort, identity). ``on_append`` is
    called after each record is on disk."""

    def __init__(self, path: Path, key: bytes | None = None,
                 anchor: Callable[[Head, Head], None] | None = None,
                 context: dict[str, Any] | None = None,
                 on_append: Callable[[], None] | None = None) -> None:
        self.path = path
        self._lock_path = str(path.with_name(path.name + ".lock"))
        self._lock = FileLock(self._lock_path, mode=0o600)
        self._on_append = on_append  # a record is on disk: a forwarder may send it
        self.alg, self._hash = _hasher(key)
        self._anchor = anchor
        # where this process left the file, and the head it wrote there
        self._tail: tuple[tuple[int, int, int], Head] | None = None
        # A plain BoundLogger: the audit log never obeys the console's log level.
        self.logger = structlog.wrap_logger(
            _Sink(self),
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                drop_secrets,
                lambda _l, _m, event: event,  # hand the dict to the sink as keyword arguments
            ],
            **(context or {}),
        )

    def event(self, name: str, **fields: Any) -> None:
        self.logger.msg(name, **fields)

    def bind(self, **fields: Any) -> Any:
        """A logger whose records also carry ``fields``: ``.msg(event_name, **more)``."""
        return self.logger.bind(**fields)

    def append(self, event: dict[str, Any]) -> None:
        if self._tail is None:  # this process's first record, or the file is not as it left it
            private_dir(self.path.parent)
        with self._locked():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o600)
            try:
                head = self._known_head(fd)
                if head is None:  # not the file as this process left it: read its tail again
                    os.chmod(self.path, 0o600)
                    torn = _repair_torn_tail(fd)
                    if torn:  # a short write (disk full) left half a record: cut it off, and say so
                        self._write(fd, {"event": "audit_repaired", "dropped_bytes": torn,
                                         "ts": event.get("ts")}, _last(fd))
                    head = _last(fd)
                self._write(fd, event, head)
            finally:
                os.close(fd)
        if self._on_append:
            self._on_append()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The append lock. flock directly where there is one: filelock, which takes the same
        lock on the same file, costs fifty times the CPU, once per record."""
        if fcntl is None:
            with self._lock:
                yield
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and with it the lock

    def _known_head(self, fd: int) -> Head | None:
        """The head this process wrote last, if the file is still the one it wrote to, at the
        size it left (no other writer since, nothing cut off); None when it must be read."""
        if self._tail is None:
            return None
        where, head = self._tail
        return head if where == _where(os.fstat(fd)) else None

    def _write(self, fd: int, event: dict[str, Any], head: Head) -> None:
        """One record, whole or not at all, then the anchor (only over an intact tail)."""
        seq, prev = head
        record = {**event, "seq": seq + 1, "prev": prev, "alg": self.alg}
        body = canonical(record)
        record["hash"] = self._hash(body.encode())
        # The hash goes last: the line is the canonical body it was computed over, plus it.
        data = (body[:-1] + ',"hash":"' + record["hash"] + '"}\n').encode()
        size = os.fstat(fd).st_size
        self._tail = None
        try:
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # never leave half a record for the next one to follow
            raise
        self._tail = (_where(os.fstat(fd)), (record["seq"], record["hash"]))
        if self._anchor:
            self._anchor((seq, prev), (record["seq"], record["hash"]))


def _where(st: os.stat_result) -> tuple[int, int, int]:
    """Which file, and how long: (device, inode, size)."""
    return st.st_dev, st.st_ino, st.st_size


def _pread(fd: int, size: int, offset: int) -> bytes:
    """``os.pread`` where the platform has it (not Windows); the caller holds the lock, so a
    seek and a read are as good there."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


def _repair_torn_tail(fd: int) -> int:
    """Cut an incomplete last line (no newline) off the log; how many bytes went."""
    size = os.fstat(fd).st_size
    if size == 0 or _pread(fd, 1, size - 1) == b"\n":
        return 0
    end = size
    while end > 0:
        start = max(0, end - 65536)
        cut = _pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return size - (start + cut + 1)
        end = start
    os.ftruncate(fd, 0)
    return size


def _last(fd: int) -> Head:
    """(seq, hash) of the last complete record, reading backwards from the end in chunks
    until the whole line is in hand (a record may be longer than any one chunk)."""
    size = os.fstat(fd).st_size
    end, tail = size, b""
    while end > 0:
        start = max(0, end - 65536)
        tail = _pread(fd, end - start, start) + tail
        end = start
        lines = tail.split(b"\n")
        # lines[0] may be cut at the chunk's start; the others are whole
        for line in reversed(lines[1:] if end > 0 else lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                return int(record["seq"]), str(record["hash"])
            except (ValueError, KeyError, TypeError):
                continue  # a damaged line: the chain is already broken there, verify says so
    return 0, GENESIS


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    records: int
    line: int | None = None
    reason: str = ""
    head: str = ""  # the last record's hash, when ok

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.records} records, chain intact, head {self.records}:{self.head}"
        return f"broken at line {self.line}: {self.reason}"


def read_records(path: Path, damaged: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """The records; a line that is not one is passed to ``damaged`` (its line number) and
    skipped, or is an error without it."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not a record")
            except ValueError:
                if damaged is None:
                    raise
                damaged(number)
                continue
            yield record


def verify(path: Path, key: bytes | None = None, head: tuple[int, str] | None = None) -> Verdict:
    """Walk the chain one record at a time (a log of any length in constant memory)."""
    prev, expected, line, complete, head_hash = GENESIS, 1, 0, True, None
    with path.open("rb") as fh:
        for raw in fh:
            line += 1
            i, complete = line - 1, raw.endswith(b"\n")
            record = _record(raw)
            if record is None:
                reason = ("truncated: the last record is incomplete" if not complete
                          else "not a JSON record (edited)")
                return Verdict(False, i, line, reason)
            alg = record.get("alg", "sha256")
            if alg == "hmac-sha256" and not key:
                return Verdict(False, i, line, f"the chain is keyed: set {KEY_ENV} to verify it")
            if key and alg != "hmac-sha256":
                # With a key the chain is keyed from its first record: a record that says
                # otherwise was rewritten by someone without the key.
                return Verdict(False, i, line, f"record seq {record.get('seq')} claims alg {alg!r},"
                               " but this chain is keyed (rewritten without the key)")
            _, digest = _hasher(key if alg == "hmac-sha256" else None)
            body = {k: v for k, v in record.items() if k != "hash"}
            if digest(canonical_bytes(body)) != record.get("hash"):
                return Verdict(False, i, line, f"record seq {record.get('seq')} was edited"
                               " (its hash does not match its content)")
            seq = record.get("seq")
            if seq != expected:
                if _seq_after(path, line, expected):
                    return Verdict(False, i, line, f"records are out of order: seq {seq} stands where"
                                   f" seq {expected} should")
                if isinstance(seq, int) and seq > expected:
                    return Verdict(False, i, line, f"record(s) deleted: seq {expected} to {seq - 1}"
                                   " are missing before this line")
                return Verdict(False, i, line, f"seq {seq} repeats or goes back (expected {expected})")
            if record.get("prev") != prev:
                return Verdict(False, i, line, "the previous record's hash does not match (a record"
                               " before this one was replaced)")
            if head is not None and seq == head[0]:
                head_hash = record["hash"]
            prev, expected = record["hash"], expected + 1
    if not complete:
        return Verdict(False, line, line, "truncated: the last record is incomplete")
    if head is not None:
        if head[0] > expected - 1:
            return Verdict(False, expected - 1, line + 1,
                           f"truncated or replaced: the log ends at seq {expected - 1}, but seq"
                           f" {head[0]} was recorded as its head")
        if head[0] > 0 and head_hash != head[1]:
            return Verdict(False, expected - 1, head[0],
                           f"replaced: seq {head[0]} is not the record whose hash was recorded")
    return Verdict(True, expected - 1, None, "", prev)


def _record(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _seq_after(path: Path, line: int, seq: int) -> bool:
    """Does a record with ``seq`` stand after line ``line`` (read again, on a broken chain)?"""
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if n > line and (_record(raw) or {}).get("seq") == seq:
                return True
    return False


EXPORT_FIELDS = ("seq", "ts", "event", "command", "operator", "host", "tool_version",
                 "graph_identity", "exit_status", "run_id", "cohort", "playbook", "playbook_digest",
                 "change_id", "person_id", "step", "action", "target", "upn", "object_id",
                 "outcome", "request_id", "error_code", "hash")


def export(path: Path, since: dt.datetime | None,
           damaged: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    out = []
    for record in read_records(path, damaged):
        if since is not None:
            try:
                ts = dt.datetime.fromisoformat(str(record.get("ts", "")).replace("Z", "+00:00"))
            except ValueError:
                continue  # no readable time: not provably after ``since``
            if ts.tzinfo is None or ts < since:
                continue
        out.append(record)
    return out


# What ``audit show`` answers with: the records about accounts and runs, not every command.
HISTORY_EVENTS = ("graph_write", "settle", "approval", "gates")


def history(path: Path, *, upn: str | None = None, person: str | None = None,
            run: str | None = None,
            damaged: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Who created, changed or removed what and when, for one account (``upn``: every record
    of the person who ever had that address, so a renamed account's past comes with it), one
    person of the roster, or one run (its writes, its gates and the command that ran it).
    Reads the log as a stream (twice for ``upn``), in order."""
    people: set[str] = set()
    if upn is not None:
        wanted = upn.casefold()
        people = {str(r["person_id"]) for r in read_records(path, damaged)
                  if r.get("person_id") and str(r.get("upn", "")).casefold() == wanted}
        damaged = None if damaged is None else (lambda _line: None)  # said once, on the first read
    elif person is not None:
        people = {person}

    def about(record: dict[str, Any]) -> bool:
        if run is not None:
            return record.get("run_id") == run or run in (record.get("run_ids") or ())
        if record.get("event") not in HISTORY_EVENTS:
            return False
        return record.get("person_id") in people or (
            upn is not None and str(record.get("upn", "")).casefold() == upn.casefold())

    return [r for r in read_records(path, damaged) if about(r)]
