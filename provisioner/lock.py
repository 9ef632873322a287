"""One apply or rollback at a time per state dir.

An advisory ``flock`` on ``state_dir/apply.lock``: the kernel drops it when the holder dies,
even by SIGKILL, so a crash never leaves a stale lock. The file names the holder, so that a
second process can say who it is waiting for.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LockedError
from .private import private_dir


@contextmanager
def state_lock(state_dir: Path, command: str) -> Iterator[None]:
    private_dir(state_dir)
    path = state_dir / "apply.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"another {_holder(path)} is running on the state dir {state_dir};"
                              " wait for it to finish (or stop it) and try again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder(command).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def holder(command: str) -> str:
    """Who holds a lock, as JSON: written beside it so that a refusal can name them."""
    from .journal import operator

    return json.dumps({"command": command, "operator": operator(), "pid": os.getpid(),
                       "host": socket.gethostname(),
                       "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})


def describe(raw: str) -> str:
    """``apply by anna (pid 4711 on adm-pc, since ...)`` from what ``holder`` wrote."""
    try:
        h = json.loads(raw)
        by = f" by {h['operator']}" if h.get("operator") else ""
        return f"{h['command']}{by} (pid {h['pid']} on {h['host']}, since {h['since']})"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "process"


def _holder(path: Path) -> str:
    try:
        return describe(path.read_text())
    except OSError:
        return "process"
