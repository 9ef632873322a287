"""Real servers that tests and benchmarks start for themselves, from Debian's packages (`make
test` installs them): never mocks. Each runs in a temporary folder on a free port of
127.0.0.1 and is stopped when its ``with`` block ends."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def postgres(*, durable: bool = False) -> Iterator[str]:
    """A PostgreSQL server; yields its base URL (``postgresql://provisioner@127.0.0.1:PORT``).
    PostgreSQL refuses to run as root, so as root (CI) it runs as the postgres user. Tests
    run it without fsync; a benchmark asks for a ``durable`` one, as a real server is."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `make test` installs it (Debian: postgresql)")
    bin_dir = Path(found[-1]).parent
    home = Path(tempfile.mkdtemp(prefix="provisioner-pg-"))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(home, "postgres", "postgres")

    def run(*args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *args] if as_root else list(args)
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    port = free_port()
    run(str(bin_dir / "initdb"), "-D", str(home / "data"), "-A", "trust", "-U", "provisioner",
        "--no-sync", "-E", "UTF8")
    run(str(bin_dir / "pg_ctl"), "-D", str(home / "data"), "-l", str(home / "log"), "-w", "-o",
        f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync={'on' if durable else 'off'}", "start")
    try:
        yield f"postgresql://provisioner@127.0.0.1:{port}"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(home / "data"), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


def create_database(server: str, name: str) -> str:
    """A new empty database on ``server``; its URL."""
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


def tls_authority(folder: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A private CA and a server certificate for ``host`` (an IP address or a name), signed by
    it, as PEM files in ``folder``: ``ca``, ``cert`` and ``key``."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                    signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            try:
                name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
            except ValueError:
                name = x509.DNSName(host)
            builder = builder.add_extension(x509.SubjectAlternativeName([name]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provisioner test CA")])
    ca = certificate("provisioner test CA", ca_key, ca_name, ca_key, True)
    server = certificate(host, server_key, ca_name, ca_key, False)
    files = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


# What the collector writes for each message: the RFC 5424 fields rsyslog parsed, then the
# message, so a test sees what a SIEM behind it would.
_RSYSLOG_CONF = """\
global(workDirectory="{home}" maxMessageSize="64k"
       defaultNetstreamDriver="ossl" defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}" defaultNetstreamDriverKeyFile="{key}")
main_queue(queue.type="Direct")
module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="fields" type="list") {{
  property(name="pri") constant(value="\\t") property(name="protocol-version")
  constant(value="\\t") property(name="timereported" dateFormat="rfc3339")
  constant(value="\\t") property(name="hostname") constant(value="\\t") property(name="app-name")
  constant(value="\\t") property(name="msgid") constant(value="\\t")
  property(name="structured-data") constant(value="\\t") property(name="msg") constant(value="\\n")
}}
action(type="omfile" file="{out}" template="fields")
"""


class Rsyslog:
    """Debian's rsyslogd as a syslog-over-TLS collector (RFC 5425) on a free port of
    127.0.0.1, writing what it receives to ``out``; ``stop()`` and ``start()`` restart it on
    the same port, as a collector restarted in the middle of an apply."""

    def __init__(self, home: Path) -> None:
        if not shutil.which("rsyslogd") and not Path("/usr/sbin/rsyslogd").exists():
            raise RuntimeError("rsyslog is not installed: `make test` installs it (Debian: rsyslog)")
        self.home = home
        self.port = free_port()
        self.tls = tls_authority(home)
        self.out = home / "received.log"
        self.conf = home / "rsyslog.conf"
        self.conf.write_text(_RSYSLOG_CONF.format(home=home, port=self.port, out=self.out,
                                                  **{k: str(v) for k, v in self.tls.items()}))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import time

        with (self.home / "rsyslogd.err").open("ab") as err:
            self.proc = subprocess.Popen(
                [shutil.which("rsyslogd") or "/usr/sbin/rsyslogd", "-n", "-f", str(self.conf),
                 "-i", str(self.home / "rsyslogd.pid")], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rsyslogd did not start: {(self.home / 'rsyslogd.err').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None

    def received(self) -> list[list[str]]:
        """Each message: PRI, version, timestamp, host, app, MSGID, structured data, message."""
        if not self.out.exists():
            return []
        return [line.split("\t", 7) for line in self.out.read_text(encoding="utf-8").splitlines()]


@contextlib.contextmanager
def rsyslog() -> Iterator[Rsyslog]:
    home = Path(tempfile.mkdtemp(prefix="provisioner-rsyslog-"))
    collector = Rsyslog(home)
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()
        shutil.rmtree(home, ignore_errors=True)
