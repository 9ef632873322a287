"""One operator command's session: its settings, its audit log, the playbook and roster it
loaded, and the Graph it connects to (the sandbox, a served sandbox, or a real tenant)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from .audit import AuditLog, audit_key
from .graph.client import Target
from .graph.gateway import Graph
from .journal import Journal
from .playbook import Playbook, load_playbook
from .roster import Roster, load_roster

if TYPE_CHECKING:
    from .sandbox import Sandbox


log = structlog.get_logger("provisioner")


@dataclass(frozen=True, slots=True)
class Settings:
    state_dir: Path
    graph_url: str | None = None
    device_code: bool = False
    audit_path: Path | None = None


class Session:
    """One operator command: its settings, its audit log, and who it acted as."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.graph_identity = "none"
        self.run_ids: list[str] = []
        self._audit: AuditLog | None = None

    @property
    def audit_path(self) -> Path:
        return self.settings.audit_path or self.settings.state_dir / "audit.jsonl"

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            state_dir = self.settings.state_dir

            key = anchor_key(self.audit_path, state_dir)

            def anchor(prev: tuple[int, str], head: tuple[int, str]) -> None:
                """Move the journal's anchor only from the head it holds: a log cut short,
                replaced or deleted stays detectable however many commands run after."""
                with Journal(state_dir) as journal:
                    held = journal.audit_head(key)
                    if held is None or tuple(held) == prev:
                        journal.set_audit_head(key, *head)

            self._audit = AuditLog(self.audit_path, audit_key(), anchor)
        return self._audit


def anchor_key(audit_path: Path, state_dir: Path) -> str:
    """Where the journal keeps a log's head: by name inside the state dir (so a moved or
    copied state dir keeps it), by absolute path elsewhere."""
    if audit_path.resolve().parent == state_dir.resolve():
        return audit_path.name
    return str(audit_path.resolve())


@dataclass(frozen=True, slots=True)
class Loaded:
    playbook: Playbook
    roster: Roster


def load(playbook_path: Path) -> Loaded:
    playbook = load_playbook(playbook_path)
    return Loaded(playbook, load_roster(playbook.roster_path))


@contextlib.asynccontextmanager
async def connect(session: Session, playbook: Playbook) -> AsyncIterator[Graph]:
    """A Graph for the playbook's tenant: the sandbox in the state dir (created on first use),
    a served sandbox at ``--graph-url``, or the real tenant through MSAL."""
    settings = session.settings
    session.graph_identity = _identity(settings, playbook)
    if playbook.tenant != "sandbox":
        target = Target(tenant=playbook.tenant, device_code=settings.device_code,
                        token_cache=settings.state_dir / "msal-cache.json")
        async with Graph(target, concurrency=playbook.concurrency) as graph:
            yield graph
        return
    if settings.graph_url:
        async with Graph(Target(graph_url=settings.graph_url), concurrency=playbook.concurrency) as graph:
            yield graph
        return
    with open_sandbox(settings.state_dir) as app:
        async with Graph(Target(sandbox_app=app), concurrency=playbook.concurrency) as graph:
            yield graph


@contextlib.contextmanager
def open_sandbox(state_dir: Path) -> Iterator[Sandbox]:
    from .sandbox import DB_NAME, Sandbox, open_tenant, reset_tenant

    if not (state_dir / DB_NAME).exists():
        log.info("sandbox.created", state_dir=str(state_dir),
                 hint="a fresh sandbox tenant; `provisioner sandbox reset` makes another")
        tenant = reset_tenant(state_dir)
    else:
        tenant = open_tenant(state_dir)
    try:
        yield Sandbox(tenant)
    finally:
        tenant.store.close()


def _identity(settings: Settings, playbook: Playbook) -> str:
    if playbook.tenant == "sandbox":
        where = settings.graph_url or f"in-process, {settings.state_dir}"
        return f"sandbox ({where})"
    how = "device code" if settings.device_code else "app"
    return f"{how} {playbook.tenant.client_id} in tenant {playbook.tenant.tenant_id}"
