"""Cohorts: who goes in which wave, decided by the playbook, the same way every time.

Each cohort selects by roster fields; ``share`` keeps a stable fraction of those (by a hash of
person_id, so the same people are picked on every run) and ``limit`` caps the count (lowest
hash first); ``rest`` takes everyone no other cohort has. Every person must land in exactly
one cohort: overlaps and unassigned people are listed by person_id. Without a ``cohorts``
section the whole roster is one cohort, ``all``, with no gates.

A ``canary`` cohort also gets synthetic test accounts, one per profile found among its people
(an official, a dual-role official, each device model), made and verified before any real
person of the cohort is touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import PlaybookError
from .playbook import Cohort, Gates, Playbook, Selector
from .roster import Person, Roster

ALL = Cohort(name="all", select=Selector(rest=True), gates=Gates(max_failure_ratio=None))
CANARY_PREFIX = "canary-"


@dataclass(frozen=True, slots=True)
class Assignment:
    order: tuple[Cohort, ...]
    members: dict[str, tuple[Person, ...]]  # cohort name → its people (canaries first)
    cohort_of: dict[str, str]               # person_id → cohort name

    def cohort(self, name: str) -> Cohort:
        for c in self.order:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.order)
        raise PlaybookError([f"no cohort named {name!r} (cohorts: {known})"])

    def predecessors(self, name: str) -> list[Cohort]:
        return list(self.order[: [c.name for c in self.order].index(name)])


def stable_fraction(person_id: str) -> float:
    digest = hashlib.sha256(person_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _matches(selector: Selector, person: Person) -> bool:
    for field in ("body", "role", "category", "device_model", "person_id"):
        wanted = getattr(selector, field)
        if wanted and getattr(person, field).casefold() not in {w.casefold() for w in wanted}:
            return False
    return True


def _nobody(selector: Selector, roster: Roster) -> str:
    """Why a selector matches nobody: the values no one has, and the ones the roster has."""
    parts = []
    for field in ("body", "role", "category", "device_model", "person_id"):
        wanted = getattr(selector, field)
        if not wanted:
            continue
        present = sorted({getattr(p, field) for p in roster if getattr(p, field)})
        known = {v.casefold() for v in present}
        unknown = [w for w in wanted if w.casefold() not in known]
        if unknown:
            shown = ", ".join(present[:15]) + (f" and {len(present) - 15} more" if len(present) > 15 else "")
            parts.append(f"no one has {field} {', '.join(repr(u) for u in unknown)}"
                         f" ({field} in the roster: {shown or 'none'})")
    return "; ".join(parts) or "no one matches all of its conditions at once"


def _narrow(cohort: Cohort, people: Sequence[Person]) -> list[Person]:
    ranked = sorted(people, key=lambda p: stable_fraction(p.person_id))
    if cohort.share is not None:
        ranked = [p for p in ranked if stable_fraction(p.person_id) < cohort.share]
    if cohort.limit is not None:
        ranked = ranked[: cohort.limit]
    chosen = {p.person_id for p in ranked}
    return [p for p in people if p.person_id in chosen]  # roster order


def assign(playbook: Playbook, roster: Roster) -> Assignment:
    cohorts = playbook.cohorts or (ALL,)
    chosen: dict[str, list[Person]] = {}
    problems: list[str] = []
    for cohort in cohorts:
        if not cohort.select.rest:
            matched = [p for p in roster if _matches(cohort.select, p)]
            if not matched and len(roster):
                problems.append(f"{playbook.source}: cohorts: {cohort.name} selects nobody:"
                                f" {_nobody(cohort.select, roster)}")
            chosen[cohort.name] = _narrow(cohort, matched)
    taken: dict[str, list[str]] = {}
    for name, people in chosen.items():
        for p in people:
            taken.setdefault(p.person_id, []).append(name)
    problems += [f"{playbook.source}: cohorts: {pid} is in {' and '.join(names)}"
                 for pid, names in taken.items() if len(names) > 1]
    rest = next((c for c in cohorts if c.select.rest), None)
    if rest is not None:
        chosen[rest.name] = _narrow(rest, [p for p in roster if p.person_id not in taken])
    placed = {p.person_id for people in chosen.values() for p in people}
    missing = [p.person_id for p in roster if p.person_id not in placed]
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        problems.append(f"{playbook.source}: cohorts: {len(missing)} people are in no cohort: {shown}")
    if problems:
        raise PlaybookError(problems)
    members = {c.name: tuple(canaries(playbook, c, chosen[c.name]) + chosen[c.name]) for c in cohorts}
    cohort_of = {p.person_id: name for name, people in members.items() for p in people}
    return Assignment(tuple(cohorts), members, cohort_of)


def canaries(playbook: Playbook, cohort: Cohort, people: Sequence[Person]) -> list[Person]:
    """Synthetic test accounts for a canary cohort: one per profile among its people."""
    if not cohort.canary:
        return []
    body = people[0].body if people else ""
    out = [Person(f"{CANARY_PREFIX}official", "Canary", "Official", role="ledamot", body=body)]
    if any(p.employee_id for p in people):
        out.append(Person(f"{CANARY_PREFIX}dual-role", "Canary", "Dualrole", role="ledamot",
                          body=body))
    for model in sorted({p.device_model for p in people if p.device_model}):
        slug = "".join(ch if ch.isalnum() else "-" for ch in model.lower()).strip("-")
        out.append(Person(f"{CANARY_PREFIX}{slug}", "Canary", model.replace(" ", ""),
                          role="ledamot", body=body, device_model=model))
    return out


def is_canary(person_id: str) -> bool:
    return person_id.startswith(CANARY_PREFIX)
