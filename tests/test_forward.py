"""Audit records forwarded to a SIEM: RFC 5424 over TLS (RFC 5425), spooled in the audit log.

The collector is Debian's rsyslog (`make test` installs it), started by the tests with a TLS
listener (its ``ossl`` driver) and a certificate from a CA made here, and restarted in the
middle of an apply: every record arrives once, in order, whatever it went through.
RFC 5424: https://www.rfc-editor.org/rfc/rfc5424 · RFC 5425: https://www.rfc-editor.org/rfc/rfc5425
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.audit import AuditLog, read_records
from provisioner.errors import InputError
from provisioner.forward import Destination, Forwarder, Spool, message

from .conftest import cli
from .servers import Rsyslog, tls_authority

# -- the message, the address: pure ------------------------------------------------------


def test_a_record_is_an_octet_counted_rfc5424_message_with_its_fields_as_structured_data() -> None:
    record = {"seq": 7, "hash": "ab" * 32, "ts": "2026-12-01T10:00:00.123456Z", "host": "adm-pc 1",
              "event": "graph_write", "target": 'group:Nämnd "A" [x]\\y', "outcome": "failed",
              "after": {"department": "Kultur"}, "exit_status": None, "retried": True}
    frame = message(record)
    length, _, body = frame.partition(b" ")
    assert int(length) == len(body)
    header, _, rest = body.partition(b" [")
    # facility 13 (log audit) * 8 + severity 4 (warning: the write failed)
    assert header == b"<108>1 2026-12-01T10:00:00.123456Z adm-pc1 provisioner - graph_write"
    sd, _, msg = rest.partition(b"] \xef\xbb\xbf")
    assert sd.startswith(b"provisioner@32473 seq=\"7\" hash=\"" + b"ab" * 32 + b"\"")
    assert 'target="group:Nämnd \\"A\\" [x\\]\\\\y"'.encode() in sd
    assert b"retried" not in sd and b"exit_status" not in sd  # booleans and nulls stay in the JSON
    assert json.loads(msg) == record


def test_an_ordinary_record_is_info() -> None:
    assert message({"event": "command", "exit_status": 0}).split(b" ", 2)[1] == b"<110>1"


@pytest.mark.parametrize(("url", "said"), [
    ("syslog://siem.region.se:514", "syslog+tls://HOST:PORT"),
    ("syslog+tls://user:pw@siem.region.se", "no user or password"),
    ("syslog+tls://siem.region.se:99999", "the port must be a number"),
    ("syslog+tls://siem.region.se?ca=/no/such/ca.pem", "ca=/no/such/ca.pem: no such file"),
    ("syslog+tls://siem.region.se?verify=no", "unknown setting 'verify'"),
    ("syslog+tls://siem.region.se?timeout=soon", "timeout must be a number"),
])
def test_a_bad_collector_address_is_one_clear_error(url: str, said: str) -> None:
    with pytest.raises(InputError, match="--audit-forward") as caught:
        Destination.parse(url)
    assert said in str(caught.value)


def test_the_address_defaults_to_port_6514(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    dest = Destination.parse(f"syslog+tls://siem.region.se?ca={tmp_path / 'ca.pem'}")
    assert (dest.host, dest.port, dest.ca) == ("siem.region.se", 6514, tmp_path / "ca.pem")


def test_the_spool_holds_whole_records_after_the_cursor(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.event("command", command=f"c{i}")
    spool = Spool(path, Destination("127.0.0.1", 1))
    [_, second, _] = [c for _, c in spool.waiting()]
    spool.advance(second)
    with path.open("ab") as fh:
        fh.write(b'{"seq": 4, "half a rec')  # being written by another command
    assert [r["seq"] for r, _ in spool.waiting()] == [3]


def test_a_replaced_log_is_sent_again_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(3):
        log.event("command", command=f"c{i}")
    spool = Spool(path, Destination("127.0.0.1", 1))
    *_, (_, last) = spool.waiting()
    spool.advance(last)
    assert list(spool.waiting()) == []
    path.unlink()
    for i in range(2):
        AuditLog(path).event("command", command=f"new{i}")
    # The cursor's record is gone: a repeat is better than a record never sent.
    assert [r["command"] for r, _ in spool.waiting()] == ["new0", "new1"]


# -- against a real collector ----------------------------------------------------------


def address(server: Rsyslog) -> str:
    return f"syslog+tls://127.0.0.1:{server.port}?ca={server.tls['ca']}&timeout=10"


def received_seqs(server: Rsyslog) -> list[int]:
    seqs = []
    for fields in server.received():
        sd = fields[6]
        seqs.append(int(sd.split(' seq="', 1)[1].split('"', 1)[0]))
    return seqs


def log_seqs(state_dir: Path) -> list[int]:
    return [int(r["seq"]) for r in read_records(state_dir / "audit.jsonl")]


def wait_for(check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_an_apply_reaches_the_collector_every_record_once_in_order(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Any],
        write_playbook: Callable[..., Path], collector: Rsyslog) -> None:
    make_sandbox()
    playbook = write_playbook(4)
    result = cli(runner, state_dir, "--audit-forward", address(collector), "apply", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    assert "wait for" not in result.output
    wait_for(lambda: len(collector.received()) == len(log_seqs(state_dir)))
    assert received_seqs(collector) == log_seqs(state_dir)
    records = list(read_records(state_dir / "audit.jsonl"))
    for fields, record in zip(collector.received(), records, strict=True):
        pri, version, ts, host, app, msgid, _sd, msg = fields
        assert pri in ("110", "108")
        assert (version, app, msgid) == ("1", "provisioner", record["event"])
        assert ts == record["ts"] and host == record["host"]
        assert json.loads(msg.lstrip("\ufeff")) == record  # the SIEM can check the chain
    writes = [f for f in collector.received() if f[5] == "graph_write"]
    assert writes and all('person_id="' in f[6] and 'playbook_digest="' in f[6] for f in writes)


@pytest.mark.slow
def test_a_collector_restarted_mid_apply_loses_nothing_and_repeats_nothing(
        state_dir: Path, make_sandbox: Callable[..., Any], write_playbook: Callable[..., Path],
        collector: Rsyslog) -> None:
    # Slow enough to restart the collector while it runs: 40 ms a request, one at a time.
    make_sandbox(latency_ms=40)
    playbook = write_playbook(12, concurrency=1)
    apply = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "--state-dir", str(state_dir), "--audit-forward",
         address(collector), "apply", "--yes", str(playbook)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})
    try:
        wait_for(lambda: (state_dir / "audit.jsonl").exists() and len(collector.received()) >= 5)
        collector.stop()
        down_at = len(log_seqs(state_dir))
        wait_for(lambda: len(log_seqs(state_dir)) >= down_at + 5)  # records written while it is down
        collector.start()
        out, _ = apply.communicate(timeout=300)
    finally:
        apply.kill()
    assert apply.returncode == 0, out
    assert "wait for" not in out
    # Sent while the apply ran, not only at its end.
    assert len(log_seqs(state_dir)) > down_at + 5
    wait_for(lambda: len(collector.received()) >= len(log_seqs(state_dir)))
    assert received_seqs(collector) == log_seqs(state_dir)


@pytest.mark.slow
def test_a_dead_collector_never_fails_a_command_and_gets_the_records_later_in_order(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Any],
        write_playbook: Callable[..., Path], collector: Rsyslog) -> None:
    make_sandbox()
    playbook = write_playbook(2)
    collector.stop()
    result = cli(runner, state_dir, "--audit-forward", address(collector).replace("timeout=10", "timeout=1"),
                 "apply", "--yes", str(playbook))
    assert result.exit_code == 0
    waiting = len(log_seqs(state_dir))
    assert f"warning: {waiting} audit records wait for syslog+tls://127.0.0.1:{collector.port}" \
        " ([Errno 111] Connection refused)" in result.output
    assert collector.received() == []
    collector.start()
    sent = cli(runner, state_dir, "--audit-forward", address(collector), "audit", "forward", "--json")
    assert sent.exit_code == 0
    assert json.loads(sent.output) == {"destination": f"syslog+tls://127.0.0.1:{collector.port}",
                                       "sent": waiting, "waiting": 0, "error": None}
    wait_for(lambda: len(collector.received()) == waiting + 1)  # and the forward command's own
    assert received_seqs(collector) == log_seqs(state_dir)


def test_a_collector_whose_certificate_is_not_trusted_gets_nothing(
        runner: CliRunner, state_dir: Path, tmp_path: Path, collector: Rsyslog) -> None:
    cli(runner, state_dir, "validate", str(tmp_path / "missing.yaml"))  # a record to send
    other = tls_authority(tmp_path)  # a CA that did not sign the collector's certificate
    url = f"syslog+tls://127.0.0.1:{collector.port}?ca={other['ca']}&timeout=2"
    result = cli(runner, state_dir, "--audit-forward", url, "audit", "forward", "--timeout", "0.5")
    assert result.exit_code == 1 and "certificate verify failed" in result.output
    assert collector.received() == []


def test_audit_forward_needs_a_collector(runner: CliRunner, state_dir: Path) -> None:
    result = cli(runner, state_dir, "audit", "forward")
    assert result.exit_code == 64 and "give --audit-forward" in result.output


def test_two_forwarders_on_one_log_send_each_record_once(state_dir: Path, collector: Rsyslog) -> None:
    path = state_dir / "audit.jsonl"
    state_dir.mkdir(exist_ok=True)
    dest = Destination.parse(address(collector))
    first, second = Forwarder(path, dest), Forwarder(path, dest)
    log = AuditLog(path, on_append=first.notify)
    for i in range(30):
        log.event("command", command=f"c{i}")
        if i % 7 == 0:
            second.notify()
    assert first.close() == 0 and second.close() == 0
    wait_for(lambda: len(collector.received()) >= 30)
    assert received_seqs(collector) == list(range(1, 31))


def test_a_batch_the_collector_read_but_never_confirmed_is_sent_again(tmp_path: Path) -> None:
    """A collector that dies after reading (here: it resets the connection instead of
    answering the close) may not have kept what it read: the cursor must not move."""
    import socket
    import ssl
    import struct
    import threading

    tls = tls_authority(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls["cert"], tls["key"])
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def die_after_reading() -> None:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            got.append(conn.recv(65536))
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            socket.socket.close(conn)  # no close_notify: a reset

    server = threading.Thread(target=die_after_reading)
    server.start()
    path = tmp_path / "audit.jsonl"
    for i in range(3):
        AuditLog(path).event("command", command=f"c{i}")
    dest = Destination.parse(f"syslog+tls://127.0.0.1:{listener.getsockname()[1]}?ca={tls['ca']}&timeout=3")
    forwarder = Forwarder(path, dest)
    assert forwarder.drain(time.monotonic() + 5) is False
    server.join(timeout=10)
    listener.close()
    assert got and b"c0" in got[0]  # it did read the records...
    assert forwarder.waiting() == 3  # ...and all three still wait for a collector that confirms
    assert forwarder.error and "did not confirm" in forwarder.error
