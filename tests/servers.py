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
