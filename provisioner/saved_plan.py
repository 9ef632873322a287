"""A plan saved for a later apply (terraform's ``plan -out``), and the check that refuses it
when the roster, the playbook or the objects it touches changed since."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError, StalePlanError
from .model import PLAN_FORMAT, Plan
from .private import write_private
from .session import Loaded

if TYPE_CHECKING:
    pass


def save_plan(plan: Plan, path: Path) -> None:
    """Owner-only: a plan names people, their addresses and mobiles."""
    write_private(path, json.dumps(plan.to_file(), indent=2, ensure_ascii=False) + "\n")


def read_saved_plan(path: Path) -> Plan | None:
    """The plan in ``path`` if it is a saved plan, None if it is something else (a playbook)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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
