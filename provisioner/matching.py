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
from typing import NamedTuple

from .errors import ConfigurationError
from .heap import collector_off
from .identity import normalise_mobile, personal_number_hash
from .naming import transliterate
from .playbook import DualRole, Weights
from .roster import Person
from .snapshot import DirectoryUser


class MatchStatus(enum.StrEnum):
    NEW = "new"        # nobody in the directory is this person
    MATCH = "match"    # one enabled account is, with enough evidence
    REVIEW = "review"  # someone may be: a human decides


NEW, MATCH, REVIEW = MatchStatus


class Candidate(NamedTuple):
    """An account that may be the person (a NamedTuple, not a frozen dataclass: a directory of
    50,000 namesakes makes as many, and a frozen dataclass takes three times as long to make)."""

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


NameKey = tuple[frozenset[str], frozenset[str]]


def name_key(given: str, surname: str) -> NameKey:
    # Surname tokens as a set: double surnames match in either order.
    return name_tokens(given), name_tokens(surname)


def _mobile(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return normalise_mobile(value)
    except ValueError:
        return None


_NOT_DIGIT = re.compile(r"\D")


def _phone_tail(value: str) -> str:
    """The last nine digits: equal for two numbers that normalise to the same one (a Swedish
    mobile has nine after +46), and found without normalising the directory's every number."""
    if value[:1] == "+" and value[1:].isdigit():  # E.164, as Entra mostly holds them
        return value[-9:]
    return _NOT_DIGIT.sub("", value)[-9:]


@dataclass(frozen=True, slots=True)
class LookupKeys:
    """What one roster person is looked up by, each key as the index files it."""

    employee_id: str | None
    pnr: str | None  # the keyed hash: the number itself is never compared
    mobile: str | None  # E.164
    email: str | None
    name: NameKey

    @classmethod
    def of(cls, person: Person, key: bytes | None) -> LookupKeys:
        return cls(person.employee_id.casefold() if person.employee_id else None,
                   personal_number_hash(person.personal_number, key)
                   if person.personal_number and key is not None else None,
                   person.mobile or None,
                   person.private_email.casefold() if person.private_email else None,
                   name_key(person.given_name, person.surname))


@dataclass
class DirectoryIndex:
    """The directory's accounts by the keys a roster looks them up by: only the accounts that
    hold a key someone in the roster has (2,000 people against 50,000 accounts: a few
    thousand lists, not 200,000, and half the time)."""

    by_employee_id: dict[str, list[DirectoryUser]] = field(default_factory=lambda: defaultdict(list))
    by_pnr: dict[str, list[DirectoryUser]] = field(default_factory=lambda: defaultdict(list))
    by_phone_tail: dict[str, list[DirectoryUser]] = field(default_factory=lambda: defaultdict(list))
    by_email: dict[str, list[DirectoryUser]] = field(default_factory=lambda: defaultdict(list))
    by_name: dict[NameKey, list[DirectoryUser]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def build(cls, users: Iterable[DirectoryUser], policy: DualRole,
              asked: Iterable[LookupKeys]) -> DirectoryIndex:
        asked = list(asked)
        employee_ids = {k.employee_id for k in asked if k.employee_id}
        pnrs = {k.pnr for k in asked if k.pnr} if policy.personal_number_attribute else set()
        tails = {_phone_tail(k.mobile) for k in asked if k.mobile}
        emails = {k.email for k in asked if k.email}
        names = {k.name for k in asked}
        index = cls()
        for u in users:
            a = u.attributes
            employee_id = a.get("employeeId")
            if employee_ids and employee_id and (key := str(employee_id).casefold()) in employee_ids:
                index.by_employee_id[key].append(u)
            if pnrs:
                ext = a.get("onPremisesExtensionAttributes") or {}
                theirs = ext.get(policy.personal_number_attribute)
                if theirs and (key := str(theirs).lower()) in pnrs:
                    index.by_pnr[key].append(u)
            if tails and a.get("mobilePhone") and (key := _phone_tail(a["mobilePhone"])) in tails:
                index.by_phone_tail[key].append(u)
            if emails:
                for mail in a.get("otherMails") or ():
                    if (key := mail.casefold()) in emails:
                        index.by_email[key].append(u)
            given, surname = a.get("givenName"), a.get("surname")
            if given and surname and (key := name_key(given, surname)) in names:
                index.by_name[key].append(u)
        return index

    def by_mobile(self, mobile: str) -> list[DirectoryUser]:
        """Accounts whose mobilePhone is ``mobile`` (E.164) once normalised."""
        return [u for u in self.by_phone_tail.get(_phone_tail(mobile), ())
                if _mobile(u.attributes.get("mobilePhone")) == mobile]


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
    with collector_off():  # an index of the directory: a few objects a user, no cycles
        keys = {p.person_id: LookupKeys.of(p, key) for p in people}
        matcher = _Matcher(DirectoryIndex.build(users, policy, keys.values()), policy, owner_prefix)
        return {p.person_id: matcher.match(p, keys[p.person_id]) for p in people}


@dataclass(frozen=True, slots=True)
class _Namesakes:
    """The accounts sharing a name (not the playbook's own), as candidates on the name alone.
    A common name has dozens in a region, and everyone in the roster with that name has the
    same ones: they are judged once per name, not once per person."""

    ids: frozenset[str]
    undated: tuple[Candidate, ...]  # no birth date on the account: by upn
    dated: dict[str, list[DirectoryUser]]  # by the birth date on the account (yyyy-mm-dd)
    everyone: tuple[Candidate, ...]  # all of them on the name alone (no birth date to compare): by upn


class _Matcher:
    def __init__(self, index: DirectoryIndex, policy: DualRole, owner_prefix: str) -> None:
        self.index, self.policy, self.owner_prefix = index, policy, owner_prefix
        self._namesakes: dict[NameKey, _Namesakes] = {}
        self._scores: dict[tuple[str, ...], float] = {}

    def match(self, person: Person, keys: LookupKeys) -> MatchResult:
        index, policy = self.index, self.policy
        evidence: dict[str, dict[str, DirectoryUser]] = defaultdict(dict)

        def add(kind: str, users: Iterable[DirectoryUser]) -> None:
            for u in users:
                evidence[u.id][kind] = u

        if keys.employee_id:
            add("employee_id", index.by_employee_id.get(keys.employee_id, ()))
        if keys.pnr:
            add("personal_number", index.by_pnr.get(keys.pnr, ()))
        if keys.mobile:
            add("mobile", index.by_mobile(keys.mobile))
        if keys.email:
            add("private_email", index.by_email.get(keys.email, ()))
        namesakes = self.namesakes(keys.name)
        for uid in evidence.keys() & namesakes.ids:
            kinds = evidence[uid]
            kinds["name"] = next(iter(kinds.values()))
        born = _birth_date(person) if policy.birth_date_attribute else None
        if born is None:
            name_only: Sequence[Candidate] = namesakes.everyone
            same_birth: list[Candidate] = []
        else:  # a namesake with another birth date is another person
            name_only = namesakes.undated
            same_birth = [self.candidate(u, ("name", "birth_date")) for u in namesakes.dated.get(born, ())]
        candidates = [self.candidate(user, (*found, "birth_date") if birth == "agrees" else found)
                      for user, found, birth in self._judged(evidence, born)]
        if evidence:
            name_only = [c for c in name_only if c.user_id not in evidence]
            same_birth = [c for c in same_birth if c.user_id not in evidence]
        if candidates or same_birth:
            candidates += same_birth
            candidates += name_only
            candidates.sort(key=lambda c: (-c.score, c.upn))
        else:  # the name alone: one score, already by upn
            candidates = list(name_only)
        return _classify(person.person_id, tuple(candidates), policy)

    def _judged(self, evidence: dict[str, dict[str, DirectoryUser]],
                born: str | None) -> Iterable[tuple[DirectoryUser, tuple[str, ...], str | None]]:
        for kinds in evidence.values():
            user = next(iter(kinds.values()))
            if self._ours(user):
                continue  # the person's own account, made (or adopted) by this playbook
            found = tuple(kinds)
            birth = _birth_date_evidence(born, user, self.policy)
            if birth == "disagrees" and found == ("name",):
                continue
            yield user, found, birth

    def namesakes(self, key: NameKey) -> _Namesakes:
        known = self._namesakes.get(key)
        if known is not None:
            return known
        named = self.index.by_name.get(key, [])
        users = [u for u in named if not self._ours(u)]
        dated: dict[str, list[DirectoryUser]] = defaultdict(list)
        attribute = self.policy.birth_date_attribute
        for u in users:
            ext = u.attributes.get("onPremisesExtensionAttributes") or {}
            theirs = ext.get(attribute) if attribute else None
            if theirs:
                dated[str(theirs)[:10]].append(u)
        everyone = tuple(sorted((self.candidate(u, ("name",)) for u in users), key=lambda c: c.upn))
        has_date = {u.id for same in dated.values() for u in same}
        known = self._namesakes[key] = _Namesakes(
            frozenset(u.id for u in named), tuple(c for c in everyone if c.user_id not in has_date),
            dict(dated), everyone)
        return known

    def _ours(self, user: DirectoryUser) -> bool:
        return bool(user.owner_tag and user.owner_tag.startswith(self.owner_prefix))

    def candidate(self, user: DirectoryUser, found: tuple[str, ...]) -> Candidate:
        score = self._scores.get(found)
        if score is None:  # the same few combinations of evidence over and over
            score = self._scores[found] = _score(found, self.policy.weights)
        return _candidate(user, found, score)


def _score(found: tuple[str, ...], w: Weights) -> float:
    """Independent signals combined: 1 − Π(1 − weight)."""
    score = 1.0
    for kind in found:
        score *= 1 - getattr(w, kind)
    return round(1 - score, 3)


def _candidate(user: DirectoryUser, found: tuple[str, ...], score: float) -> Candidate:
    tag = user.owner_tag or ""
    return Candidate(user.id, user.upn, str(user.attributes.get("displayName") or ""), score,
                     found, bool(user.attributes.get("accountEnabled", True)),
                     "provisioner:" + tag.split(":")[1] if tag.startswith("provisioner:") else None)


def _birth_date(person: Person) -> str | None:
    """The birth date in a personnummer (a samordningsnummer's day is 60 more), as yyyy-mm-dd."""
    pnr = person.personal_number
    if not pnr:
        return None
    day = int(pnr[6:8])
    return f"{pnr[:4]}-{pnr[4:6]}-{day - 60 if day > 60 else day:02d}"


def _birth_date_evidence(born: str | None, user: DirectoryUser, policy: DualRole) -> str | None:
    if born is None or not policy.birth_date_attribute:
        return None
    ext = user.attributes.get("onPremisesExtensionAttributes") or {}
    theirs = ext.get(policy.birth_date_attribute)
    if not theirs:
        return None
    return "agrees" if str(theirs)[:10] == born else "disagrees"


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
