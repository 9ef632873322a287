"""Audit records to a SIEM: RFC 5424 syslog messages over TLS (RFC 5425), from a spool.

The audit log is the spool. Beside it a cursor file names, per collector, the last record
the collector has confirmed; every record after it is waiting. A record is confirmed when the
TLS connection that carried it was closed cleanly: the collector answers our close_notify
only after it has read everything sent before it, so a collector that dies, restarts or
resets the connection leaves the batch unconfirmed, and it is sent again, in order, once the
collector is back. Nothing is lost; a record is sent twice only if the collector read it and
then died before answering the close (each message carries the record's ``seq`` and ``hash``,
so a SIEM can drop such a repeat). A dead collector never stops a command: records wait, and
the next command (or ``provisioner audit forward``) sends them.

While a command runs, a thread sends what was appended, at most one connection every
``interval`` seconds (records written meanwhile go in one batch); when it ends, the command
sends what is left within ``timeout`` seconds and says how many records wait, if any.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from filelock import FileLock, Timeout

from .errors import InputError
from .model import canonical_bytes
from .private import private_file

log = structlog.get_logger("provisioner")

SCHEME = "syslog+tls"
DEFAULT_PORT = 6514  # RFC 5425
# The structured data's SD-ID: a name "@" a private enterprise number. 32473 is the number
# RFC 5612 reserves for documentation and examples; a region that wants its own can set it.
SD_ID = "provisioner@32473"
FACILITY = 13  # "log audit" (RFC 5424, 6.2.1)
INFO, WARNING = 6, 4
MAX_BATCH_RECORDS, MAX_BATCH_BYTES = 1000, 4 << 20
# Record fields repeated as structured data, so a SIEM can filter without parsing the JSON
# message (which carries the whole record, before and after values included).
SD_FIELDS = ("seq", "hash", "event", "operator", "host", "tool_version", "graph_identity",
             "command", "exit_status", "run_id", "cohort", "playbook", "playbook_digest",
             "person_id", "upn", "object_id", "step", "action", "target", "outcome",
             "request_id", "error_code")


@dataclass(frozen=True, slots=True)
class Destination:
    """``syslog+tls://HOST[:PORT][?ca=FILE&cert=FILE&key=FILE&timeout=SECONDS]``: ``ca`` the
    collector's CA (else the system's trust store), ``cert`` and ``key`` a client certificate
    when the collector asks for one, ``timeout`` how long a command's end waits for it."""

    host: str
    port: int = DEFAULT_PORT
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    timeout: float = 5.0

    @classmethod
    def parse(cls, url: str) -> Destination:
        where = f"--audit-forward {url!r}"
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != SCHEME:
            raise InputError(f"{where}: give syslog+tls://HOST:PORT (syslog over TLS, RFC 5425);"
                             " plain syslog would carry the audit log unencrypted")
        if parts.username or parts.password:
            raise InputError(f"{where}: no user or password in the address; a client certificate"
                             " goes in ?cert=FILE&key=FILE")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise InputError(f"{where}: the port must be a number from 1 to 65535") from None
        if not parts.hostname:
            raise InputError(f"{where}: no host")
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"ca", "cert", "key", "timeout"})
        if unknown:
            raise InputError(f"{where}: unknown setting {unknown[0]!r} (known: ca, cert, key, timeout)")
        files = {}
        for name in ("ca", "cert", "key"):
            if name in query:
                path = Path(query[name][-1]).expanduser()
                if not path.is_file():
                    raise InputError(f"{where}: {name}={path}: no such file")
                files[name] = path
        if ("cert" in files) != ("key" in files):
            raise InputError(f"{where}: a client certificate needs both cert= and key=")
        try:
            timeout = float(query.get("timeout", ["5"])[-1])
        except ValueError:
            raise InputError(f"{where}: timeout must be a number of seconds") from None
        return cls(parts.hostname, port, timeout=timeout, **files)

    def __str__(self) -> str:
        return f"{SCHEME}://{self.host}:{self.port}"

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert and self.key:
            context.load_cert_chain(str(self.cert), str(self.key))
        return context


# -- the message ---------------------------------------------------------------------------

def _token(value: Any, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or the NILVALUE."""
    text = "".join(c for c in str(value or "") if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def _param(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def message(record: dict[str, Any]) -> bytes:
    """One record as an RFC 5424 message: facility "log audit", warning for a failure;
    the record's time, host and event (MSGID); its main fields as structured data; the
    whole record as JSON (UTF-8, with the BOM RFC 5424 asks for). Octet-counted (RFC 5425)."""
    failed = record.get("outcome") == "failed" or record.get("exit_status") not in (None, 0)
    pri = FACILITY * 8 + (WARNING if failed else INFO)
    params = " ".join(f'{k}="{_param(record[k])}"' for k in SD_FIELDS
                      if isinstance(record.get(k), (str, int, float)) and not isinstance(record[k], bool))
    header = (f"<{pri}>1 {_token(record.get('ts'), 64)} {_token(record.get('host'), 255)}"
              f" provisioner - {_token(record.get('event'), 32)} [{SD_ID} {params}] ")
    body = header.encode() + b"\xef\xbb\xbf" + canonical_bytes(record)
    return f"{len(body)} ".encode() + body


# -- the spool -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Cursor:
    offset: int = 0  # bytes of the log the collector has confirmed
    seq: int = 0
    hash: str = ""


class Spool:
    """The audit log read from where a collector's cursor stands, and that cursor."""

    def __init__(self, log_path: Path, destination: Destination) -> None:
        self.log_path = log_path
        self.destination = destination
        self.path = log_path.with_name(log_path.name + ".forwarded")
        self.lock = FileLock(str(log_path.with_name(log_path.name + ".forwarding.lock")), mode=0o600)

    def cursor(self) -> Cursor:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8")).get(str(self.destination))
        except (OSError, ValueError, AttributeError):
            return Cursor()
        try:
            return Cursor(int(data["offset"]), int(data["seq"]), str(data["hash"]))
        except (TypeError, KeyError, ValueError):
            return Cursor()

    def advance(self, cursor: Cursor) -> None:
        """Move the cursor (written whole: a new file renamed over the old one)."""
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                state = {}
        except (OSError, ValueError):
            state = {}
        state[str(self.destination)] = {"offset": cursor.offset, "seq": cursor.seq, "hash": cursor.hash}
        temporary = self.path.with_name(self.path.name + ".new")
        private_file(temporary).write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(temporary, self.path)

    def waiting(self) -> Iterator[tuple[dict[str, Any], Cursor]]:
        """Records after the cursor, each with the cursor that confirms it, in order. A log
        that no longer holds the cursor's record where it stood (replaced, cut short) is
        sent again from its start: a SIEM can drop a repeat by seq and hash, but not find a
        record that was never sent."""
        cursor = self.cursor()
        try:
            fh = self.log_path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            if cursor.offset and not self._holds(fh, cursor):
                log.warning("audit.forward.cursor_lost", destination=str(self.destination),
                            seq=cursor.seq, detail="the audit log no longer holds the last"
                            " record the collector confirmed where it was: sending it from the start")
                cursor = Cursor()
            offset = cursor.offset
            fh.seek(offset)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    return  # being written: the next round takes it
                offset += len(raw)
                try:
                    record = json.loads(raw)
                    seq = int(record["seq"])
                except (ValueError, KeyError, TypeError):
                    continue  # not a record (a damaged line): `audit verify` names it
                yield record, Cursor(offset, seq, str(record.get("hash", "")))

    @staticmethod
    def _holds(fh: Any, cursor: Cursor) -> bool:
        """Whether the line that ends at the cursor's offset is the record it names."""
        start = max(0, cursor.offset - 65536)
        fh.seek(start)
        chunk = fh.read(cursor.offset - start)
        if not chunk.endswith(b"\n"):
            return False
        line = chunk[:-1].rsplit(b"\n", 1)[-1]
        try:
            record = json.loads(line)
        except ValueError:
            return False
        return isinstance(record, dict) and record.get("seq") == cursor.seq \
            and record.get("hash") == cursor.hash


# -- sending -------------------------------------------------------------------------------

class Unconfirmed(OSError):
    """The collector did not close the connection cleanly: what it carried is sent again."""


def send_batch(destination: Destination, frames: list[bytes], timeout: float) -> None:
    """Send the frames over one TLS connection and close it cleanly; returns only when the
    collector answered the close (it has read them all)."""
    context = destination.context()
    with socket.create_connection((destination.host, destination.port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=destination.host) as tls:
        tls.settimeout(timeout)
        tls.sendall(b"".join(frames))
        try:
            plain = tls.unwrap()  # our close_notify, and the collector's answer
        except (ssl.SSLError, OSError) as exc:
            raise Unconfirmed(f"the collector did not confirm the batch: {exc}") from exc
        plain.settimeout(timeout)
        if plain.recv(1) != b"":
            raise Unconfirmed("the collector sent data after closing")


class Forwarder:
    """Sends the audit log's waiting records to one collector: from a thread while the
    command runs (``notify`` after each record), then what is left when it ends (``close``)."""

    def __init__(self, log_path: Path, destination: Destination, *, interval: float = 0.2) -> None:
        self.spool = Spool(log_path, destination)
        self.destination = destination
        self.interval = interval
        self.sent = 0
        self.error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def notify(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-forward", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(backoff or None)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.drain(time.monotonic() + self.destination.timeout, wait_for_lock=False):
                backoff = 0.0
                self._stop.wait(self.interval)  # records written meanwhile go in one batch
            else:
                backoff = min(max(backoff * 2, 0.2), 5.0)

    def drain(self, deadline: float, *, wait_for_lock: bool = True) -> bool:
        """Send every waiting record, batch by batch; False if the collector could not be
        reached or did not confirm (the records wait), or another process is sending."""
        try:
            with self.spool.lock.acquire(timeout=max(0.0, deadline - time.monotonic())
                                         if wait_for_lock else 0):
                return self._drain_locked(deadline)
        except Timeout:
            return not wait_for_lock  # another command is sending them: not a failure

    def _drain_locked(self, deadline: float) -> bool:
        batch: list[bytes] = []
        size, last = 0, None
        for record, cursor in self.spool.waiting():
            frame = message(record)
            batch.append(frame)
            size, last = size + len(frame), cursor
            if len(batch) >= MAX_BATCH_RECORDS or size >= MAX_BATCH_BYTES:
                if not self._send(batch, last, deadline):
                    return False
                batch, size = [], 0
        return not batch or self._send(batch, last, deadline)

    def _send(self, batch: list[bytes], last: Cursor | None, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.error = self.error or "no time left"
            return False
        try:
            send_batch(self.destination, batch, min(remaining, self.destination.timeout))
        except (OSError, ssl.SSLError) as exc:
            self.error = str(exc) or type(exc).__name__
            log.info("audit.forward.failed", destination=str(self.destination), error=self.error,
                     records=len(batch))
            return False
        assert last is not None
        self.spool.advance(last)
        self.sent += len(batch)
        self.error = None
        return True

    def close(self, timeout: float | None = None) -> int:
        """Stop the thread, send what is left within ``timeout`` (the destination's); how
        many records still wait."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.destination.timeout)
        self.drain(time.monotonic() + (self.destination.timeout if timeout is None else timeout))
        return self.waiting()

    def waiting(self) -> int:
        return sum(1 for _ in self.spool.waiting())
