from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from provisioner.sandbox import Sandbox, Tenant, open_tenant, reset_tenant
from provisioner.sandbox.authz import SANDBOX_APP_ID
from provisioner.sandbox.region import officials, roster_csv
from provisioner.sandbox.seed import ADOPTION_EXTENSION

# Where the sandbox region's registered directory extension keeps an adopted account's mark.
ADOPTION_PROP = f"extension_{SANDBOX_APP_ID.replace('-', '')}_{ADOPTION_EXTENSION}"

PLAYBOOKS = Path(__file__).parent.parent / "playbooks"
PLAYBOOK = """\
name: test-officials
tenant: sandbox
roster: roster.csv
domain: politiker.example-region.se
naming:
  upn: "{{given}}.{{surname}}"
  display_name: "{{given}} {{surname}}"
  mail_nickname: "pol.{{upn_local}}"
license:
  sku: ENTERPRISEPACK
groups: [Förtroendevalda, "Politiker {{body}}"]
mailbox_settings:
  wait_seconds: {wait}
steps: [{steps}]
dual_role: {{policy: separate_account}}
concurrency: {concurrency}
"""


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """The CLI configures structlog globally; each test starts from the defaults."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_sandbox(state_dir: Path) -> Callable[..., Tenant]:
    """Seed the sandbox in the test's state dir; returns the tenant (close before CLI use)."""

    def make(employees: int = 40, **config: Any) -> Tenant:
        config.setdefault("mailbox_delay", 0)
        tenant = reset_tenant(state_dir, employees=employees, seed=7, **config)
        tenant.store.close()
        return tenant

    return make


def reopen(state_dir: Path) -> Tenant:
    return open_tenant(state_dir)


@pytest.fixture
def write_playbook(tmp_path: Path) -> Callable[..., Path]:
    def write(people: int = 6, *, roster: str | None = None, wait: float = 5,
              steps: str = "account, license, groups, mailbox_settings",
              concurrency: int = 4) -> Path:
        (tmp_path / "roster.csv").write_text(
            roster if roster is not None else roster_csv(officials(people, 2026)), encoding="utf-8")
        path = tmp_path / "playbook.yaml"
        path.write_text(PLAYBOOK.format(wait=wait, steps=steps, concurrency=concurrency),
                        encoding="utf-8")
        return path

    return write


@pytest.fixture
def pilot(tmp_path: Path, make_sandbox: Callable[..., Tenant]) -> Path:
    """The pilot playbook, its roster and feedback, with gates that do not wait minutes."""
    make_sandbox(employees=60, checkin_delay=0)
    for name in ("tjanstemobil-pilot-roster.csv", "tjanstemobil-pilot-feedback.csv"):
        shutil.copy(PLAYBOOKS / name, tmp_path / name)
    text = (PLAYBOOKS / "tjanstemobil-pilot.yaml").read_text(encoding="utf-8")
    path = tmp_path / "tjanstemobil-pilot.yaml"
    path.write_text(text.replace("timeout: 5m, interval: 10s", "timeout: 2, interval: 0.2"),
                    encoding="utf-8")
    return path


@pytest.fixture
def memory_sandbox() -> Sandbox:
    return Sandbox(reset_tenant(None, employees=30, seed=3, mailbox_delay=0))


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """The app served by uvicorn on a free port of 127.0.0.1, in a thread of this process."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def cli(runner: CliRunner, state_dir: Path, *args: str, now: str | None = None,
        catch_exceptions: bool = False, **env: str) -> Result:
    """The CLI in this process, on ``state_dir``; ``now`` sets the one clock. An exception
    other than the CLI's own exit fails the test: an operator must never see a traceback."""
    from provisioner.cli import main

    if now:
        env["PROVISIONER_NOW"] = now
    return runner.invoke(main, ["--state-dir", str(state_dir), *args], env=env or None,
                         catch_exceptions=catch_exceptions)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL for the test session (tests/servers.py); yields its base URL."""
    from .servers import postgres

    with postgres() as url:
        yield url


@pytest.fixture
def shared_state(postgres_server: str) -> str:
    """A fresh, empty database on the test session's PostgreSQL: one shared state."""
    import uuid

    from .servers import create_database

    return create_database(postgres_server, f"state_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def tenant(make_sandbox: Callable[..., Any], state_dir: Path) -> Iterator[str]:
    """One sandbox tenant served over HTTP, as a real one is reachable from every machine."""
    make_sandbox()
    tenant = open_tenant(state_dir)
    with serve_in_thread(Sandbox(tenant)) as url:
        yield url
    tenant.store.close()


@pytest.fixture
def collector() -> Iterator[Any]:
    """A SIEM's syslog collector over TLS: Debian's rsyslog (tests/servers.py)."""
    from .servers import rsyslog

    with rsyslog() as server:
        yield server


# A tenant and app for the tests of signing in to a real tenant (respx stands in for Entra).
ENTRA_TENANT = "0f0f0f0f-1111-2222-3333-444444444444"
ENTRA_CLIENT = "a1a1a1a1-b2b2-c3c3-d4d4-e5e5e5e5e5e5"
LOGIN = f"https://login.microsoftonline.com/{ENTRA_TENANT}"


@pytest.fixture
def entra() -> Iterator[Any]:
    """Entra's sign-in endpoints as respx routes: the tenant's OpenID configuration and
    instance discovery as Microsoft documents them; ``entra.token`` is the token endpoint
    (answering a client-credentials token unless a test says otherwise)."""
    import respx

    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{LOGIN}/v2.0/.well-known/openid-configuration").respond(json={
            "issuer": f"{LOGIN}/v2.0", "token_endpoint": f"{LOGIN}/oauth2/v2.0/token",
            "authorization_endpoint": f"{LOGIN}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{LOGIN}/oauth2/v2.0/devicecode"})
        mock.get(url__startswith="https://login.microsoftonline.com/common/discovery/instance").respond(json={
            "tenant_discovery_endpoint": f"{LOGIN}/v2.0/.well-known/openid-configuration",
            "metadata": [{"preferred_network": "login.microsoftonline.com",
                          "aliases": ["login.microsoftonline.com"]}]})
        mock.token = mock.post(f"{LOGIN}/oauth2/v2.0/token")
        mock.token.respond(json={"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                 "access_token": "graph-token"})
        yield mock
