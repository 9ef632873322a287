"""One apply or rollback at a time per state dir.

A lock on ``state_dir/apply.lock`` through filelock, which takes the platform's own call
(``flock`` on Linux and macOS, ``LockFileEx``/``msvcrt`` on Windows): the operating system drops
it when the holder dies, even by SIGKILL, so a crash never leaves a stale lock. Beside it,
``apply.holder`` names the holder, so that a second process can say who it is waiting for.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import LockedError
from .private import private_dir, write_private

HOLDER = "apply.holder"


@contextmanager
def state_lock(state_dir: Path, command: str) -> Iterator[None]:
    private_dir(state_dir)
    lock = FileLock(str(state_dir / "apply.lock"), mode=0o600)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise LockedError(f"another {_holder(state_dir / HOLDER)} is running on the state dir {state_dir};"
                          " wait for it to finish (or stop it) and try again") from None
    try:
        write_private(state_dir / HOLDER, holder(command))
        yield
    finally:
        lock.release()


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
        return describe(path.read_text(encoding="utf-8"))
    except OSError:
        return "process"
