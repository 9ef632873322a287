"""The sandbox tenant: a Graph-compatible tenant in-process, or served on 127.0.0.1.

    tenant = open_tenant(state_dir)        # the directory, persisted in the state dir
    app = Sandbox(tenant)                  # the ASGI app (httpx.ASGITransport or uvicorn)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .app import Sandbox
from .seed import seed_region
from .store import Store
from .tenant import Tenant

DB_NAME = "sandbox.sqlite"

__all__ = ["Sandbox", "Tenant", "open_tenant", "reset_tenant"]


def open_tenant(state_dir: Path | None) -> Tenant:
    """``state_dir=None`` gives a throw-away tenant in memory."""
    if state_dir is not None:  # the sandbox's region is made-up, but kept as private as real state
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        fd = os.open(state_dir / DB_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(state_dir / DB_NAME, 0o600)
    return Tenant(Store(None if state_dir is None else state_dir / DB_NAME))


def reset_tenant(state_dir: Path | None, *, employees: int = 300, seed: int = 1,
                 **config: Any) -> Tenant:
    tenant = open_tenant(state_dir)
    seed_region(tenant.store, employees_count=employees, seed=seed, config=config)
    tenant.reindex()
    return tenant
