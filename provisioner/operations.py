"""What each command does, between the thin CLI and the pure core: load, connect, plan, apply."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from .errors import InputError, StalePlanError
from .graph.client import Target
from .graph.gateway import Graph
from .model import PLAN_FORMAT, Plan
from .planner import make_plan
from .playbook import Playbook, load_playbook
from .rollout import Hook, Report, apply_plan
from .roster import Roster, load_roster
from .snapshot import read_snapshot
from .steps.groups import group_names

if TYPE_CHECKING:
    from .sandbox import Sandbox

log = structlog.get_logger("provisioner")


@dataclass(frozen=True, slots=True)
class Settings:
    state_dir: Path
    graph_url: str | None = None
    device_code: bool = False


@dataclass(frozen=True, slots=True)
class Loaded:
    playbook: Playbook
    roster: Roster


def load(playbook_path: Path) -> Loaded:
    playbook = load_playbook(playbook_path)
    return Loaded(playbook, load_roster(playbook.roster_path))


@contextlib.asynccontextmanager
async def connect(settings: Settings, playbook: Playbook) -> AsyncIterator[Graph]:
    """A Graph for the playbook's tenant: the sandbox in the state dir (created on first use),
    a served sandbox at ``--graph-url``, or the real tenant through MSAL."""
    if playbook.tenant != "sandbox":
        target = Target(tenant=playbook.tenant, device_code=settings.device_code,
                        token_cache=settings.state_dir / "msal-cache.json")
        async with Graph(target) as graph:
            yield graph
        return
    if settings.graph_url:
        async with Graph(Target(graph_url=settings.graph_url)) as graph:
            yield graph
        return
    with open_sandbox(settings.state_dir) as app:
        async with Graph(Target(sandbox_app=app)) as graph:
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


async def plan(settings: Settings, loaded: Loaded) -> Plan:
    async with connect(settings, loaded.playbook) as graph:
        return await _plan_with(graph, loaded)


async def _plan_with(graph: Graph, loaded: Loaded) -> Plan:
    needed = {n for p in loaded.roster for n in group_names(loaded.playbook.groups, p)}
    snapshot = await read_snapshot(graph, loaded.playbook, loaded.roster, needed)
    return make_plan(loaded.playbook, loaded.roster, snapshot)


def save_plan(plan: Plan, path: Path) -> None:
    path.write_text(json.dumps(plan.to_file(), indent=2, ensure_ascii=False) + "\n")


def read_saved_plan(path: Path) -> Plan | None:
    """The plan in ``path`` if it is a saved plan, None if it is something else (a playbook)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        return None
    try:
        return Plan.from_file(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: a damaged saved plan ({type(exc).__name__}: {exc})") from None


def check_fresh(saved: Plan, loaded: Loaded, fresh: Plan) -> None:
    """Refuse a saved plan when the roster, the playbook or the objects it touches changed."""
    problems = []
    if saved.playbook_digest != loaded.playbook.digest:
        problems.append(f"the playbook {loaded.playbook.source} changed since the plan was made")
    if saved.roster_digest != loaded.roster.digest:
        problems.append(f"the roster {loaded.roster.path} changed since the plan was made")
    old = {c.id: c for c in saved.changes}
    new = {c.id: c for c in fresh.changes}
    for cid in sorted(old.keys() - new.keys(), key=lambda i: old[i].target):
        problems.append(f"{old[cid].target}: planned {old[cid].action.value}, no longer needed or"
                        " different now")
    for cid in sorted(new.keys() - old.keys(), key=lambda i: new[i].target):
        problems.append(f"{new[cid].target}: now needs {new[cid].action.value}, not in the saved plan")
    for cid in sorted(old.keys() & new.keys(), key=lambda i: old[i].target):
        if old[cid].before != new[cid].before:
            problems.append(f"{old[cid].target}: the object changed since the plan was made")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise StalePlanError("the saved plan is stale; make a new one with `provisioner plan"
                             " --out`:\n  " + "\n  ".join(shown))


async def apply(settings: Settings, loaded: Loaded, hooks: Sequence[Hook], *,
                saved: Plan | None = None,
                confirm: Callable[[Plan], bool] | None = None) -> tuple[Plan, Report | None]:
    """Plan afresh (refusing a stale saved plan), let ``confirm(plan)`` say yes, then apply."""
    async with connect(settings, loaded.playbook) as graph:
        fresh = await _plan_with(graph, loaded)
        if saved is not None:
            check_fresh(saved, loaded, fresh)
        if not fresh.changes:
            return fresh, None
        # A saved plan that survived the check is carried out exactly as it was shown.
        chosen = saved or fresh
        if confirm is not None and not confirm(chosen):
            return chosen, None
        report = await apply_plan(graph, chosen, hooks, concurrency=loaded.playbook.concurrency,
                                  mailbox_wait=_mailbox_wait(loaded.playbook))
        return chosen, report


def _mailbox_wait(playbook: Playbook) -> float:
    return playbook.mailbox_settings.wait_seconds if playbook.mailbox_settings else 0.0
