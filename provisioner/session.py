"""One operator command's session: its settings, its audit log, the playbook and roster it
loaded, and the Graph it connects to (the sandbox, a served sandbox, or a real tenant)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from .audit import AuditLog, audit_key
from .forward import Destination, Forwarder
from .graph.client import Target
from .graph.gateway import Graph
from .journal import Journal, operator
from .lock import state_lock
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
    state_url: str | None = None  # --state / PROVISIONER_STATE: a shared PostgreSQL state
    audit_forward: Destination | None = None  # --audit-forward: a SIEM's syslog collector


class Session:
    """One operator command: its settings, its audit log, where its state is, and who it
    acted as."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.graph_identity = "none"
        self.run_ids: list[str] = []
        self._audit: AuditLog | None = None
        self._anchor_journal: Journal | None = None  # where the audit log's anchor is kept
        self._anchor_key = ""                         # and under which name
        self.state_url = settings.state_url
        self.forwarder = (Forwarder(self.audit_path, settings.audit_forward)
                          if settings.audit_forward else None)

    def journal(self, playbook: Playbook | None = None) -> Journal:
        """The journal: in the shared state (--state, else the playbook's ``state``), or in
        SQLite in the state dir."""
        if self.state_url is None and playbook is not None and playbook.state:
            self.state_url = playbook.state
        return Journal(self.settings.state_dir, self.state_url)

    def close(self) -> None:
        if self._anchor_journal is not None:
            self._anchor_journal.close()
            self._anchor_journal = None

    def lock(self, command: str, playbook: Playbook | None = None) -> contextlib.AbstractContextManager[None]:
        """One apply, rollback or settle at a time: per state dir, or per shared state."""
        if self.state_url is None and playbook is not None and playbook.state:
            self.state_url = playbook.state
        if self.state_url:
            from .backends import postgres_lock

            return postgres_lock(self.state_url, command)
        return state_lock(self.settings.state_dir, command)

    @property
    def audit_path(self) -> Path:
        return self.settings.audit_path or self.settings.state_dir / "audit.jsonl"

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            state_dir = self.settings.state_dir

            def anchor(prev: tuple[int, str], head: tuple[int, str]) -> None:
                """Move the journal's anchor only from the head it holds: a log cut short,
                replaced or deleted stays detectable however many commands run after. One
                connection to the journal serves the whole command. Its commits need not wait
                for the disk: the record is on disk first, and a power cut that undoes the
                last moves leaves the anchor at an earlier head of the same chain, which the
                log still reaches (a fifth of an audit record's CPU, a third of its time)."""
                if self._anchor_journal is None:
                    self._anchor_journal = Journal(state_dir, self.state_url, durable=False)
                    self._anchor_key = anchor_key(self.audit_path, state_dir, shared=bool(self.state_url))
                key = self._anchor_key
                journal = self._anchor_journal
                held = journal.audit_head(key)
                if held is None or tuple(held) == prev:
                    journal.set_audit_head(key, *head)

            self._audit = AuditLog(self.audit_path, audit_key(), anchor, context={
                "operator": operator(), "host": socket.gethostname(), "tool_version": tool_version()},
                on_append=self.forwarder.notify if self.forwarder else None)
        return self._audit

    def audited_run(self, run_id: str, playbook: Playbook, cohort: str | None) -> Any:
        """The audit log bound to one run: its records name the run, the cohort, the
        playbook by name and digest, and the identity Graph saw."""
        return self.audit.bind(run_id=run_id, cohort=cohort, playbook=playbook.name,
                               playbook_digest=playbook.digest, graph_identity=self.graph_identity)


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("provisioner")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def anchor_key(audit_path: Path, state_dir: Path, *, shared: bool = False) -> str:
    """Where the journal keeps a log's head: by name inside the state dir (so a moved or
    copied state dir keeps it), by absolute path elsewhere; in a shared state, each machine's
    log by its host as well (several machines keep their own log beside one journal)."""
    key = audit_path.name if audit_path.resolve().parent == state_dir.resolve() else str(audit_path.resolve())
    return f"{socket.gethostname()}:{key}" if shared else key


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
