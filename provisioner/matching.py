"""Dual roles: which roster people already have an account in the directory, and why we think so.

The directory is indexed once by every key we match on (employeeId, the keyed hash of the
personnummer, mobile, other e-mails, normalised name); each person looks up only those keys,
so a 2,000-person roster against 50,000 users never compares all pairs. Each piece of
evidence has a weight; a candidate's score combines them as independent signals
(1 − Π(1 − w)). A person is ``new`` (no candidate reaches the review threshold), ``match``
(exactly one candidate reaches it, at or above the match threshold, enabled) or ``review``
(anything else: several candidates, a score in between, a disabled account).
"""

from __future__ import annotations

import enum
import functools
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import ConfigurationError
from .identity import normalise_mobile, personal_number_hash
from .naming import transliterate
from .playbook import DualRole
from .roster import Person
from .snapshot import DirectoryUser


class MatchStatus(enum.StrEnum):
    NEW = "new"        # nobody in the directory is this person
    MATCH = "match"    # one enabled account is, with enough evidence
    REVIEW = "review"  # someone may be: a human decides


NEW, MATCH, REVIEW = MatchStatus


@dataclass(frozen=True, slots=True)
class Candidate:
    user_id: str
    upn: str
    display_name: str
    score: float
    evidence: tuple[str, ...]
    enabled: bool
    made_by: str | None  # "this playbook" / "provisioner:<other>" when the tool made it


@dataclass(frozen=True, slots=True)
class MatchResult:
    person_id: str
    status: MatchStatus
    candidates: tuple[Candidate, ...] = ()
    reason: str = ""

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@functools.lru_cache(maxsize=1 << 16)
def name_tokens(text: str) -> frozenset[str]:
    """'Anna-Karin' and 'Anna Karin' alike; diacritics and case ignored."""
    return frozenset(t for t in re.split(r"[\s\-'’]+", transliterate(text).casefold()) if t)


def name_key(given: str, surname: str) -> tuple[frozenset[str], frozenset[str]]:
    # Surname tokens as a set: double surnames match in either order.
    return name_tokens(given), name_tokens(surname)


def _mobile(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return normalise_mobile(value)
    except ValueError:
        return None


@dataclass
class DirectoryIndex:
    by_employee_id: dict[str, list[DirectoryUser]] = field(default_factory=lambda: defaultdict(list))
    by_pnr: dict[str, list[DirectoryUser]] = field(default_factory=lambda: defaultdict(list))
    by_mobile: dict[str, list[DirectoryUser]] = field(default_factory=lambda: defaultdict(list))
    by_email: dict[str, list[DirectoryUser]] = field(default_factory=lambda: defaultdict(list))
    by_name: dict[tuple[frozenset[str], frozenset[str]], list[DirectoryUser]] = field(
        default_factory=lambda: defaultdict(list))

    @classmethod
    def build(cls, users: Iterable[DirectoryUser], policy: DualRole) -> DirectoryIndex:
        index = cls()
        for u in users:
            a = u.attributes
            if a.get("employeeId"):
                index.by_employee_id[str(a["employeeId"]).casefold()].append(u)
            ext = a.get("onPremisesExtensionAttributes") or {}
            if policy.personal_number_attribute and ext.get(policy.personal_number_attribute):
                index.by_pnr[str(ext[policy.personal_number_attribute]).lower()].append(u)
            mobile = _mobile(a.get("mobilePhone"))
            if mobile:
                index.by_mobile[mobile].append(u)
            for mail in a.get("otherMails") or []:
                index.by_email[mail.casefold()].append(u)
            if a.get("givenName") and a.get("surname"):
                index.by_name[name_key(a["givenName"], a["surname"])].append(u)
        return index


def pnr_key(policy: DualRole) -> bytes | None:
    """The HMAC key for personnummer, from the environment (never from a file)."""
    if not policy.personal_number_attribute:
        return None
    value = os.environ.get(policy.personal_number_key_env)
    return value.encode() if value else None


def match_people(people: Sequence[Person], users: Iterable[DirectoryUser], policy: DualRole, *,
                 owner_prefix: str, key: bytes | None) -> dict[str, MatchResult]:
    if policy.personal_number_attribute and key is None and any(p.personal_number for p in people):
        raise ConfigurationError(
            f"dual_role.personal_number_key_env: {policy.personal_number_key_env} is not set; the"
            " roster has personnummer to match and they are only ever compared as keyed hashes")
    index = DirectoryIndex.build(users, policy)
    return {p.person_id: _match(p, index, policy, owner_prefix, key) for p in people}


def _match(person: Person, index: DirectoryIndex, policy: DualRole, owner_prefix: str,
           key: bytes | None) -> MatchResult:
    w = policy.weights
    evidence: dict[str, dict[str, DirectoryUser]] = defaultdict(dict)

    def add(kind: str, users: Iterable[DirectoryUser]) -> None:
        for u in users:
            evidence[u.id][kind] = u

    if person.employee_id:
        add("employee_id", index.by_employee_id.get(person.employee_id.casefold(), ()))
    if person.personal_number and key is not None:
        add("personal_number", index.by_pnr.get(personal_number_hash(person.personal_number, key), ()))
    if person.mobile:
        add("mobile", index.by_mobile.get(person.mobile, ()))
    if person.private_email:
        add("private_email", index.by_email.get(person.private_email.casefold(), ()))
    add("name", index.by_name.get(name_key(person.given_name, person.surname), ()))

    candidates = []
    for kinds in evidence.values():
        user = next(iter(kinds.values()))
        tag = user.owner_tag or ""
        if tag.startswith(owner_prefix):
            continue  # the person's own account, made (or adopted) by this playbook
        found = list(kinds)
        birth = _birth_date_evidence(person, user, policy)
        if birth == "disagrees" and set(found) == {"name"}:
            continue  # same name, another birth date: another person
        if birth == "agrees":
            found.append("birth_date")
        score = 1.0
        for kind in found:
            score *= 1 - getattr(w, kind)
        candidates.append(Candidate(
            user.id, user.upn, str(user.attributes.get("displayName") or ""), round(1 - score, 3),
            tuple(found), bool(user.attributes.get("accountEnabled", True)),
            "provisioner:" + tag.split(":")[1] if tag.startswith("provisioner:") else None))
    candidates.sort(key=lambda c: (-c.score, c.upn))
    return _classify(person.person_id, tuple(candidates), policy)


def _birth_date_evidence(person: Person, user: DirectoryUser, policy: DualRole) -> str | None:
    if not policy.birth_date_attribute or not person.personal_number:
        return None
    ext = user.attributes.get("onPremisesExtensionAttributes") or {}
    theirs = ext.get(policy.birth_date_attribute)
    if not theirs:
        return None
    pnr = person.personal_number
    day = int(pnr[6:8])
    ours = f"{pnr[:4]}-{pnr[4:6]}-{day - 60 if day > 60 else day:02d}"
    return "agrees" if str(theirs)[:10] == ours else "disagrees"


def _classify(pid: str, candidates: tuple[Candidate, ...], policy: DualRole) -> MatchResult:
    likely = [c for c in candidates if c.score >= policy.review_threshold]
    if not likely:
        return MatchResult(pid, NEW, candidates)
    if len(likely) > 1:
        return MatchResult(pid, REVIEW, candidates, f"{len(likely)} accounts could be this person")
    best = likely[0]
    if best.score < policy.match_threshold:
        return MatchResult(pid, REVIEW, candidates, f"score {best.score:.2f} is below the match"
                           f" threshold {policy.match_threshold:.2f}")
    if not best.enabled:
        return MatchResult(pid, REVIEW, candidates, "the matching account is disabled")
    return MatchResult(pid, MATCH, candidates)
