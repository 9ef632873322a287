from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.naming import MAX_LOCAL, Names, NamingPolicy, transliterate
from provisioner.roster import Person

POLICY = NamingPolicy("{given}.{surname}@politiker.example-region.se")
# Graph's rules (GRAPH-NOTES.md): UPN local part characters, and mailNickname's.
UPN_LOCAL = re.compile(r"^[A-Za-z0-9'.\-_!#^~]+$")
NICK_BAD = set('@()\\[]";:<>, ')


def person(given: str, surname: str, pid: str = "P1") -> Person:
    return Person(pid, given, surname)


@pytest.mark.parametrize(("given_name", "surname", "upn"), [
    ("Åsa", "Öberg", "asa.oberg"),
    ("Märta", "Ødegård", "marta.odegard"),
    ("René", "Müller", "rene.muller"),
    ("Björn", "Æbelø", "bjorn.aebelo"),
    ("Anna-Karin", "Berg-Nilsson", "anna-karin.berg-nilsson"),
    ("Sören", "Svensson Lind", "soren.svenssonlind"),
    ("Siobhán", "O'Brien", "siobhan.obrien"),
    ("Ebba", "af Klint", "ebba.afklint"),
    ("Carl", "von Essen", "carl.vonessen"),
    ("Jöns", "Ångström-Éclair", "jons.angstrom-eclair"),
])
def test_transliteration_lower_case_and_punctuation(given_name: str, surname: str, upn: str) -> None:
    names = POLICY.candidate(person(given_name, surname), 1)
    assert names.upn == f"{upn}@politiker.example-region.se"
    assert names.mail_nickname == upn


def test_latin1_letters_all_become_ascii() -> None:
    latin1 = "".join(chr(c) for c in range(0xC0, 0x100) if chr(c).isalpha())
    assert transliterate(latin1).isascii()


def test_collisions_get_dot_two_dot_three_in_order() -> None:
    taken: set[str] = {"anna.svensson@politiker.example-region.se"}

    def is_taken(n: Names) -> bool:
        return n.upn in taken

    first = POLICY.assign(person("Anna", "Svensson"), is_taken)
    taken.add(first.upn)
    second = POLICY.assign(person("Anna", "Svensson", "P2"), is_taken)
    assert (first.upn, second.upn) == ("anna.svensson.2@politiker.example-region.se",
                                       "anna.svensson.3@politiker.example-region.se")


def test_a_taken_nickname_also_moves_the_address_on() -> None:
    policy = NamingPolicy("{given}.{surname}@p.se", mail_nickname_template="{upn_local}")
    names = policy.assign(person("Bo", "Ek"), lambda n: n.mail_nickname == "bo.ek")
    assert (names.upn, names.mail_nickname) == ("bo.ek.2@p.se", "bo.ek.2")


def test_long_names_are_cut_to_64_with_room_for_the_suffix() -> None:
    names = POLICY.candidate(person("A" * 50, "B" * 50), 12)
    local = names.upn.split("@")[0]
    assert len(local) == MAX_LOCAL and local.endswith(".12")
    assert len(names.mail_nickname) <= MAX_LOCAL


def test_a_name_without_latin_letters_is_an_error_naming_the_person() -> None:
    with pytest.raises(ValueError, match="person P9: the naming policy gives an empty address"):
        POLICY.candidate(person("李", "王", "P9"), 1)


def test_display_name_template_keeps_the_real_name() -> None:
    policy = NamingPolicy("{given}.{surname}@p.se", "{given} {surname} (förtroendevald)")
    assert policy.display_name(person("Åsa", "O'Brien")) == "Åsa O'Brien (förtroendevald)"


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80), st.integers(1, 99))
def test_every_address_the_policy_gives_is_one_graph_accepts(given_name: str, surname: str,
                                                             n: int) -> None:
    try:
        names = POLICY.candidate(person(given_name, surname), n)
    except ValueError as exc:
        assert "gives an empty address" in str(exc)
        return
    local = names.upn.split("@")[0]
    assert UPN_LOCAL.match(local) and len(local) <= MAX_LOCAL
    assert not local.startswith(".") and not local.endswith(".") and ".." not in local
    nick = names.mail_nickname
    assert nick.isascii() and 0 < len(nick) <= MAX_LOCAL and not set(nick) & NICK_BAD
    assert not nick.startswith(".") and not nick.endswith(".")
