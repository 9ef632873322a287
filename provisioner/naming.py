"""Naming policy: userPrincipalName, mailNickname and displayName from a Person.

Graph allows A–Z a–z 0–9 and ``' . - _ ! # ^ ~`` in a UPN's local part, and rejects
``@ ( ) \\ [ ] " ; : < > ,``, spaces and non-ASCII in a mailNickname of at most 64
characters, which may not start or end with a dot. The policy transliterates Latin
letters (å ä → a, ö ø → o, é → e, ü → u, æ → ae …), lower-cases, removes spaces and
apostrophes, keeps hyphens, and resolves collisions deterministically with ``.2``, ``.3``.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from .roster import Person

MAX_LOCAL = 64
# Letters NFKD does not decompose into a base letter plus marks.
_SPECIAL = str.maketrans(
    {"æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "ß": "ss", "þ": "th", "Þ": "TH",
     "ð": "d", "Ð": "D", "œ": "oe", "Œ": "OE", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D",
     "ı": "i"}
)
_NOT_LOCAL = re.compile(r"[^a-z0-9.\-_]")
_DOTS = re.compile(r"\.{2,}")

NAME_FIELDS = ("given", "surname", "initial", "person_id")
DISPLAY_FIELDS = ("given", "surname", "role", "body", "category", "person_id")


@functools.lru_cache(maxsize=1 << 16)
def transliterate(text: str) -> str:
    """Latin text → ASCII: diacritics dropped, ligatures spelt out. Remembered: a region's
    50,000 users and 10,000 officials share a few thousand names."""
    text = text.translate(_SPECIAL)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@functools.lru_cache(maxsize=1 << 16)
def name_token(text: str) -> str:
    """One name as it appears in an address: ``"O'Brien-Åberg"`` → ``"obrien-aberg"``
    (remembered, as `transliterate`: a plan asks three times a person)."""
    ascii_text = transliterate(text).lower()
    ascii_text = re.sub(r"[\s'’`´]", "", ascii_text)
    return _NOT_LOCAL.sub("", ascii_text)


def slug(text: str, limit: int) -> str:
    """Words as one ASCII token, hyphen-joined: "Barn- och utbildningsnämnden" →
    "barn-och-utbildningsnamnden" (a group's mailNickname, a cohort's or a file's name)."""
    words = (name_token(w).strip("-") for w in text.replace("/", " ").split())
    return "-".join(filter(None, words))[:limit].strip(".-")


def clean_local(local: str) -> str:
    local = _DOTS.sub(".", local).strip(".-_")
    return local[:MAX_LOCAL].rstrip(".")


@functools.lru_cache(maxsize=256)
def template_fields(template: str) -> tuple[str, ...]:
    """The fields a template names, in order (parsed once: a plan asks per person and template)."""
    return tuple(f for _, f, _, _ in string.Formatter().parse(template) if f is not None)


@dataclass(frozen=True, slots=True)
class Names:
    upn: str
    mail_nickname: str
    display_name: str


@dataclass(frozen=True, slots=True)
class NamingPolicy:
    upn_template: str  # "{given}.{surname}@politiker.example-region.se"
    display_name_template: str = "{given} {surname}"
    mail_nickname_template: str = "{upn_local}"
    domain: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", self.upn_template.rsplit("@", 1)[1].lower())

    def base_local(self, person: Person) -> str:
        if person.upn_local:
            return clean_local(person.upn_local.lower())
        tokens = {
            "given": name_token(person.given_name),
            "surname": name_token(person.surname),
            "initial": name_token(person.given_name)[:1],
            "person_id": name_token(person.person_id),
        }
        local = clean_local(self.upn_template.rsplit("@", 1)[0].format_map(tokens))
        if not local:
            raise ValueError(
                f"person {person.person_id}: the naming policy gives an empty address"
                " (no Latin letters in the name?)"
            )
        return local

    def dropped(self, person: Person) -> list[str]:
        """The roster names the address template uses that give no letters to the address
        (Arabic or Cyrillic script, say): they would vanish from it without a word."""
        if person.upn_local:
            return []
        used = template_fields(self.upn_template.rsplit("@", 1)[0])
        names = {"given": person.given_name, "initial": person.given_name, "surname": person.surname}
        return [f"{field} name {names[field]!r}".replace("initial name", "given name")
                for field in used if field in names and names[field] and not name_token(names[field])]

    def display_name(self, person: Person) -> str:
        return self.display_name_template.format_map(
            {"given": person.given_name, "surname": person.surname, "role": person.role,
             "body": person.body, "category": person.category, "person_id": person.person_id}
        ).strip()

    def candidate(self, person: Person, n: int) -> Names:
        """The n-th candidate (1 = no suffix, 2 = ``.2`` ...)."""
        local = self.local(self.base_local(person), n)
        return Names(f"{local}@{self.domain}", self.nickname(person, local, n), self.display_name(person))

    @staticmethod
    def local(base: str, n: int) -> str:
        """The n-th candidate's address before the @."""
        suffix = "" if n == 1 else f".{n}"
        return base[: MAX_LOCAL - len(suffix)].rstrip(".") + suffix

    def nickname(self, person: Person, local: str, n: int) -> str:
        """The n-th candidate's mailNickname, its address before the @ being ``local``."""
        nickname = clean_local(
            _NICK_BAD.sub("", self.mail_nickname_template.format_map(
                {"upn_local": local, "given": name_token(person.given_name),
                 "surname": name_token(person.surname), "person_id": name_token(person.person_id)}
            ))
        )
        if self.mail_nickname_template != "{upn_local}" and n > 1:
            suffix = f".{n}"
            nickname = nickname[: MAX_LOCAL - len(suffix)].rstrip(".") + suffix
        return nickname

    def assign(self, person: Person, is_taken: Callable[[Names], bool]) -> Names:
        """The first candidate that ``is_taken`` accepts, trying each in turn: deterministic
        for a given directory (`Namer` names many people faster, and the same)."""
        for n in range(1, 1000):
            names = self.candidate(person, n)
            if not is_taken(names):
                return names
        raise ValueError(f"person {person.person_id}: no free address after 999 tries")


class Namer:
    """Names people one after another against what is taken, each person's address the first
    free candidate. Linear however many share a name: people with the same base address share
    every candidate address, and an address once taken stays taken, so each base remembers
    the first candidate whose address may still be free. A candidate's nickname and display
    name are made only once its address is free."""

    def __init__(self, policy: NamingPolicy, upn_taken: Callable[[str], bool],
                 nickname_taken: Callable[[str], bool]) -> None:
        self.policy = policy
        self._upn_taken, self._nickname_taken = upn_taken, nickname_taken
        self._first: dict[str, int] = {}  # base address -> first candidate not known taken

    def assign(self, person: Person) -> Names:
        policy = self.policy
        base = policy.base_local(person)
        n = self._first.get(base, 1)
        while n < 1000:
            local = policy.local(base, n)
            upn = f"{local}@{policy.domain}"
            if self._upn_taken(upn):
                if self._first.get(base, 1) == n:
                    self._first[base] = n + 1
            else:
                nickname = policy.nickname(person, local, n)
                if not self._nickname_taken(nickname):
                    return Names(upn, nickname, policy.display_name(person))
            n += 1
        raise ValueError(f"person {person.person_id}: no free address after 999 tries")


_NICK_BAD = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]")
