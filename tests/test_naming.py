from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.naming import MAX_LOCAL, Namer, Names, NamingPolicy, transliterate
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


def _name_all(policy: NamingPolicy, people: list[Person], upns: set[str],
              nicks: set[str]) -> tuple[list[Names], int]:
    """Each person named in order, what they get taken after them; and how many times the
    namer asked whether something was taken."""
    asked = 0

    def upn_taken(upn: str) -> bool:
        nonlocal asked
        asked += 1
        return upn in upns

    def nick_taken(nickname: str) -> bool:
        nonlocal asked
        asked += 1
        return nickname in nicks

    namer, out = Namer(policy, upn_taken, nick_taken), []
    for p in people:
        names = namer.assign(p)
        upns.add(names.upn)
        nicks.add(names.mail_nickname)
        out.append(names)
    return out, asked


def test_naming_many_people_who_share_a_name_is_linear() -> None:
    """900 Anna Svensson: each asks about the address before hers, her own and her nickname (the
    quadratic namer asked about every address before hers: 405,000 questions)."""
    people = [person("Anna", "Svensson", f"P{i:03d}") for i in range(900)]
    names, asked = _name_all(POLICY, people, {"anna.svensson.2@politiker.example-region.se"}, set())
    assert [n.upn.split("@")[0] for n in names[:3]] == ["anna.svensson", "anna.svensson.3",
                                                        "anna.svensson.4"]
    assert names[-1].upn.startswith("anna.svensson.901@")
    assert asked <= 3 * 900 + 2


@given(st.lists(st.sampled_from(["Anna", "Åsa", "Asa", "Bo"]), min_size=1, max_size=12),
       st.sets(st.integers(1, 6)), st.sets(st.integers(1, 6)))
def test_the_linear_namer_names_as_trying_each_candidate_in_turn_does(
        givens: list[str], upn_taken: set[int], nick_taken: set[int]) -> None:
    """Also when nicknames are made from something else than the address (and so may be
    taken where the address is free)."""
    policy = NamingPolicy("{given}.ek@p.se", mail_nickname_template="{person_id}")
    people = [person(g, "Ek", f"p{i}") for i, g in enumerate(givens)]
    upns = {f"{g}.ek{'' if n == 1 else f'.{n}'}@p.se" for g in ("anna", "asa", "bo") for n in upn_taken}
    nicks = {f"p{i}{'' if n == 1 else f'.{n}'}" for i in range(len(givens)) for n in nick_taken}
    fast, _ = _name_all(policy, people, set(upns), set(nicks))
    slow_upns, slow_nicks, slow = set(upns), set(nicks), []
    for p in people:
        names = policy.assign(p, lambda n: n.upn in slow_upns or n.mail_nickname in slow_nicks)
        slow_upns.add(names.upn)
        slow_nicks.add(names.mail_nickname)
        slow.append(names)
    assert fast == slow


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
