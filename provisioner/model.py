"""Plans are data: a closed set of Actions, Changes with before and after, and the Plan.

A Change's id is a hash of what it does (step, person, action, target, after), so the same
inputs give the same plan, and a saved plan can be compared with a fresh one.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

Json = dict[str, Any]
PLAN_FORMAT = "provisioner-plan/1"
# groups.create: a change to a group itself has the person id "group:NAME", and the plan's part
# "(groups)" holds them: apply makes them before any cohort.
GROUP_SUBJECT = "group:"
PREREQUISITES = "(groups)"


class Action(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "delete": "-"}[self.value]


class Outcome(enum.Enum):
    APPLIED = "applied"      # the write was made
    UNCHANGED = "unchanged"  # found already done when applying (a retried or raced write)
    PENDING = "pending"      # waiting on Graph (a mailbox not provisioned yet): next apply
    FAILED = "failed"
    SKIPPED = "skipped"      # not attempted: an earlier change for the person failed


# json.dumps with these arguments makes this very encoder anew on every call: made once, the
# same text a third faster (a plan hashes 50,000 changes; the audit log canonicalises each record).
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_SCALARS = frozenset({str, bool, type(None)})


def canonical_bytes(value: Any) -> bytes:
    """The canonical JSON text (sorted keys, no spaces, UTF-8) that ids and the audit chain are
    hashes of: the standard library's, which journals and logs already hold. orjson writes the
    very same bytes five times faster for strings, booleans, null and integers in lists and
    dicts (a plan's changes); anything else, floats above all (orjson writes ``1e-7`` for
    ``1e-07``), takes the standard library's encoder. `tests/test_model.py` holds them equal."""
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # a key not a string, an integer beyond 64 bits, nesting beyond 255
            pass
    return _CANONICAL.encode(value).encode()


def canonical(value: Any) -> str:
    return canonical_bytes(value).decode()


def _plain(value: Any) -> bool:
    """Strings, booleans, null and integers, in lists and dicts (orjson refuses what else it
    would write otherwise: keys that are not strings, integers beyond 64 bits)."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        for v in value.values() if kind is dict else value:
            if type(v) not in _SCALARS and not _plain(v):
                return False
        return True
    return kind in _SCALARS or kind is int


@dataclass(frozen=True, slots=True)
class Change:
    step: str
    person_id: str
    action: Action
    target: str
    before: Json | None
    after: Json | None
    # What the change is, stable across runs: a hash of everything but the before-image.
    # Computed once (a plan of 50,000 changes asks for each id several times).
    id: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(canonical_bytes(
            [self.step, self.person_id, self.action.value, self.target, self.after]))
        object.__setattr__(self, "id", digest.hexdigest()[:16])

    def to_json(self) -> Json:
        return {"id": self.id, "step": self.step, "person_id": self.person_id,
                "action": self.action.value, "target": self.target,
                "before": self.before, "after": self.after}

    @classmethod
    def from_json(cls, data: Json) -> Change:
        return cls(data["step"], data["person_id"], Action(data["action"]), data["target"],
                   data.get("before"), data.get("after"))


@dataclass(frozen=True, slots=True)
class PersonTarget:
    """Who a person's changes are about: the address they get, and the account if it exists."""

    upn: str
    user_id: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    playbook_name: str
    playbook_path: str
    playbook_digest: str
    roster_digest: str
    people: dict[str, PersonTarget]
    changes: tuple[Change, ...]
    warnings: tuple[str, ...] = ()
    steps: tuple[str, ...] = field(default=())
    # change id → reversible | compensable | one-way (how the journal can undo it)
    reversibility: dict[str, str] = field(default_factory=dict)
    cohort_of: dict[str, str] = field(default_factory=dict)  # person_id → cohort
    cohort_order: tuple[str, ...] = ()
    held: dict[str, str] = field(default_factory=dict)  # person_id → why (a dual-role decision)
    awaiting: dict[str, str] = field(default_factory=dict)  # person_id → device awaiting enrolment
    scheduled: dict[str, str] = field(default_factory=dict)  # person_id → later leaver stages
    notes: dict[str, str] = field(default_factory=dict)      # person_id → for the admin to act on

    def only(self, cohort: str | None = None, people: set[str] | None = None) -> Plan:
        """The part of the plan for one cohort, or for some people."""
        def wanted(pid: str) -> bool:
            return ((cohort is None or self.cohort_of.get(pid) == cohort)
                    and (people is None or pid in people))

        keep = [c for c in self.changes if wanted(c.person_id)]
        pids = {c.person_id for c in keep} | {
            pid for pid in self.people if cohort is not None and self.cohort_of.get(pid) == cohort}
        return replace(self, changes=tuple(keep),
                       people={pid: t for pid, t in self.people.items() if pid in pids},
                       held={pid: why for pid, why in self.held.items() if wanted(pid)},
                       awaiting={pid: why for pid, why in self.awaiting.items() if wanted(pid)})

    def by_cohort(self) -> dict[str, list[Change]]:
        present = {self.cohort_of.get(pid) for pid in self.people}
        out: dict[str, list[Change]] = {name: [] for name in self.cohort_order if name in present}
        for c in self.changes:
            out.setdefault(self.cohort_of.get(c.person_id, ""), []).append(c)
        return out

    def summary(self) -> dict[str, int]:
        counts = Counter(c.action.value for c in self.changes)
        return {a.value: counts.get(a.value, 0) for a in Action}

    def by_step(self) -> dict[str, list[Change]]:
        out: dict[str, list[Change]] = {s: [] for s in self.steps}
        for c in self.changes:
            out.setdefault(c.step, []).append(c)
        return {s: cs for s, cs in out.items() if cs}

    def to_json(self) -> Json:
        """The stable document of ``plan --json`` (and, with ``saved``, of ``plan --out``)."""
        changes = [{**c.to_json(), "reversibility": self.reversibility.get(c.id, "reversible"),
                    "cohort": self.cohort_of.get(c.person_id)} for c in self.changes]
        return {"changes": changes, "summary": self.summary(), "warnings": list(self.warnings),
                "held": [{"person_id": pid, "reason": why} for pid, why in sorted(self.held.items())],
                "awaiting_enrolment": [{"person_id": pid, "device": why}
                                       for pid, why in sorted(self.awaiting.items())],
                "scheduled": [{"person_id": pid, "stages": what}
                              for pid, what in sorted(self.scheduled.items())],
                "notes": [{"person_id": pid, "note": what} for pid, what in sorted(self.notes.items())]}

    def to_file(self) -> Json:
        return {
            "format": PLAN_FORMAT,
            "playbook": {"name": self.playbook_name, "path": self.playbook_path,
                         "digest": self.playbook_digest},
            "roster_digest": self.roster_digest,
            "steps": list(self.steps),
            "people": {pid: {"upn": t.upn, "user_id": t.user_id, "cohort": self.cohort_of.get(pid)}
                       for pid, t in self.people.items()},
            "cohort_order": list(self.cohort_order),
            **self.to_json(),
        }

    @classmethod
    def from_file(cls, data: Json) -> Plan:
        return cls(
            playbook_name=data["playbook"]["name"], playbook_path=data["playbook"]["path"],
            playbook_digest=data["playbook"]["digest"], roster_digest=data["roster_digest"],
            people={pid: PersonTarget(p["upn"], p.get("user_id"))
                    for pid, p in data["people"].items()},
            changes=tuple(Change.from_json(c) for c in data["changes"]),
            warnings=tuple(data.get("warnings", ())), steps=tuple(data.get("steps", ())),
            reversibility={c["id"]: c.get("reversibility", "reversible") for c in data["changes"]},
            cohort_of={pid: p["cohort"] for pid, p in data["people"].items() if p.get("cohort")},
            cohort_order=tuple(data.get("cohort_order", ())),
            held={h["person_id"]: h["reason"] for h in data.get("held", ())},
            awaiting={a["person_id"]: a["device"] for a in data.get("awaiting_enrolment", ())},
        )
