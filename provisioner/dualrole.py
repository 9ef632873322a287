"""Dual-role policy and decisions: what happens to a person the matching found in the directory.

The decisions file (CSV: person_id, decision, user_id, decided_by, note) is the admin's record,
kept in version control beside the playbook; a decision there overrides the policy:

    new               not the same person: an account of their own, no link
    separate_account  an account of their own, linked to the employee account (user_id, or
                      the best candidate)
    use_existing      no new account: the employee account (user_id) gets what officials get
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .matching import MATCH, NEW, MatchResult, match_people, pnr_key
from .playbook import DualRole, Playbook
from .roster import Person
from .snapshot import DirectoryUser, Snapshot

DECISIONS = ("new", "separate_account", "use_existing")


class Kind(enum.StrEnum):
    OWN = "own"      # the official gets (or has) their own account
    ADOPT = "adopt"  # the official's role goes on their existing employee account
    HELD = "held"    # nothing is made until a human decides


OWN, ADOPT, HELD = Kind


@dataclass(frozen=True, slots=True)
class Decision:
    person_id: str
    decision: str
    user_id: str
    decided_by: str
    note: str
    where: str  # file:line


@dataclass(frozen=True, slots=True)
class Resolution:
    kind: Kind
    user: DirectoryUser | None  # adopt: the account to use; own: the account to link to
    source: str                 # "policy separate_account", "decisions.csv:4", "no match"
    reason: str = ""            # why a person is held


def load_decisions(path: Path, person_ids: set[str], users: dict[str, DirectoryUser]) -> dict[str, Decision]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: the decisions file named in dual_role.decisions does not exist"
                         " (create it with the header person_id,decision,user_id,decided_by,note,"
                         " or remove the key)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the decisions file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 (save the file as CSV UTF-8)") from None
    first = text.split("\n", 1)[0]
    reader = csv.DictReader(io.StringIO(text), delimiter=";" if first.count(";") > first.count(",") else ",")
    need = {"person_id", "decision", "user_id", "decided_by", "note"}
    if set(reader.fieldnames or ()) != need:
        raise InputError(f"{path}:1: the decisions file has the columns {', '.join(sorted(need))}")
    out: dict[str, Decision] = {}
    problems = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        d = Decision(row["person_id"].strip(), row["decision"].strip(), row["user_id"].strip(),
                     row["decided_by"].strip(), row["note"].strip(), where)
        if d.person_id not in person_ids:
            problems.append(f"{where}: person_id: {d.person_id!r} is not in the roster")
        elif d.decision not in DECISIONS:
            problems.append(f"{where}: decision: {d.decision!r} is not one of {', '.join(DECISIONS)}")
        elif d.decision == "use_existing" and not d.user_id:
            problems.append(f"{where}: user_id: use_existing needs the id of the account to use")
        elif d.user_id and d.user_id not in users:
            problems.append(f"{where}: user_id: no account {d.user_id} in the directory")
        elif not d.decided_by:
            problems.append(f"{where}: decided_by: say who decided")
        elif d.person_id in out:
            problems.append(f"{where}: person_id: {d.person_id} is decided twice"
                            f" (also {out[d.person_id].where})")
        elif d.decision == "use_existing" and (twin := next(
                (o for o in out.values() if o.decision == "use_existing" and o.user_id == d.user_id), None)):
            problems.append(f"{where}: user_id: {d.user_id} is already given to {twin.person_id}"
                            f" ({twin.where}); one account cannot be two people's")
        else:
            out[d.person_id] = d
    if problems:
        raise InputError("\n".join(problems))
    return out


def resolve(match: MatchResult, policy: DualRole, decision: Decision | None,
            users: dict[str, DirectoryUser]) -> Resolution:
    best = users.get(match.best.user_id) if match.best else None
    if decision is not None:
        chosen = users.get(decision.user_id) if decision.user_id else None
        if decision.decision == "new":
            return Resolution(OWN, None, decision.where)
        if decision.decision == "separate_account":
            return Resolution(OWN, chosen or best, decision.where)
        return Resolution(ADOPT, chosen, decision.where)
    if match.status == NEW:
        return Resolution(OWN, None, "no match")
    if match.status != MATCH:
        return Resolution(HELD, None, "review", f"dual role: {match.reason}; decide in the decisions file")
    if policy.policy == "separate_account":
        return Resolution(OWN, best, "policy separate_account")
    if policy.policy == "use_existing":
        return Resolution(ADOPT, best, "policy use_existing")
    return Resolution(HELD, None, "policy review",
                      "dual role: the policy holds every match for a decision in the decisions file")


@dataclass(frozen=True, slots=True)
class DualRoleView:
    match: MatchResult
    resolution: Resolution
    decision: Decision | None


def analyse(playbook: Playbook, people: Sequence[Person], snapshot: Snapshot,
            owner_prefix: str) -> dict[str, DualRoleView]:
    """Match, read the decisions file, and resolve each person (canaries excluded)."""
    policy = playbook.dual_role
    real = [p for p in people if not p.person_id.startswith("canary-")]
    matches = match_people(real, snapshot.users.values(), policy, owner_prefix=owner_prefix,
                           key=pnr_key(policy))
    decisions = (load_decisions(playbook.resolve(policy.decisions), {p.person_id for p in real},
                                snapshot.users) if policy.decisions else {})
    return {pid: DualRoleView(m, resolve(m, policy, decisions.get(pid), snapshot.users),
                              decisions.get(pid))
            for pid, m in matches.items()}
