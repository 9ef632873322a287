"""The pure tier: who goes in which cohort, the same way every time."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.cohorts import assign, stable_fraction
from provisioner.errors import PlaybookError

from .builders import person, playbook, roster

PEOPLE = roster(*(person(f"p{i:02d}", body="Regionstyrelsen" if i < 4 else "Regionfullmäktige",
                         device_model="iPad" if i % 2 else "") for i in range(20)))


def cohorts(*specs: dict[str, Any]) -> dict[str, list[str]]:
    found = assign(playbook(cohorts=list(specs)), PEOPLE)
    return {c.name: [p.person_id for p in found.members[c.name]] for c in found.order}


def test_without_cohorts_everyone_is_in_one() -> None:
    found = assign(playbook(), PEOPLE)
    assert [c.name for c in found.order] == ["all"] and len(found.members["all"]) == 20


@pytest.mark.parametrize(("specs", "sizes"), [
    ([{"name": "styrelsen", "select": {"body": "regionstyrelsen"}},  # fields match in any case
      {"name": "rest", "select": {"rest": True}}], {"styrelsen": 4, "rest": 16}),
    ([{"name": "ipads", "select": {"device_model": "iPad"}}, {"name": "rest", "select": {"rest": True}}],
     {"ipads": 10, "rest": 10}),
])
def test_selection(specs: list[dict[str, Any]], sizes: dict[str, int]) -> None:
    assert {name: len(people) for name, people in cohorts(*specs).items()} == sizes


def test_a_share_keeps_the_same_people_on_every_run_by_a_hash_of_person_id() -> None:
    spec = [{"name": "pilot", "select": {"body": "Regionfullmäktige"}, "share": "25%"},
            {"name": "rest", "select": {"rest": True}}]
    first, second = cohorts(*spec), cohorts(*spec)
    assert first == second
    assert set(first["pilot"]) == {f"p{i:02d}" for i in range(4, 20) if stable_fraction(f"p{i:02d}") < 0.25}


def test_a_limit_takes_the_lowest_hashes() -> None:
    chosen = cohorts({"name": "pilot", "select": {"body": "Regionfullmäktige"}, "limit": 3},
                     {"name": "rest", "select": {"rest": True}})["pilot"]
    ranked = sorted((p.person_id for p in PEOPLE if p.body == "Regionfullmäktige"), key=stable_fraction)
    assert sorted(chosen) == sorted(ranked[:3])


def test_a_person_in_two_cohorts_is_an_error_naming_them() -> None:
    with pytest.raises(PlaybookError, match="p00 is in a and b"):
        cohorts({"name": "a", "select": {"body": "Regionstyrelsen"}},
                {"name": "b", "select": {"person_id": "p00"}}, {"name": "c", "select": {"rest": True}})


def test_people_in_no_cohort_are_listed() -> None:
    with pytest.raises(PlaybookError, match="16 people are in no cohort: p04, p05"):
        cohorts({"name": "a", "select": {"body": "Regionstyrelsen"}})


def test_a_canary_cohort_gets_one_synthetic_account_per_profile_first() -> None:
    members = cohorts({"name": "pilot", "select": {"body": "Regionstyrelsen"}, "canary": True},
                      {"name": "rest", "select": {"rest": True}})["pilot"]
    assert members[:2] == ["canary-official", "canary-ipad"]
    assert members[2:] == ["p00", "p01", "p02", "p03"]


@pytest.mark.parametrize(("select", "said"), [
    ({"body": "Kulturnamnden"}, "no one has body 'Kulturnamnden' (body in the roster:"
                                " Regionfullmäktige, Regionstyrelsen)"),
    ({"body": "Regionstyrelsen", "device_model": "iPad"}, "no one matches all of its conditions at once"),
])
def test_a_cohort_that_selects_nobody_is_an_error_listing_what_exists(select: dict[str, Any],
                                                                      said: str) -> None:
    people = roster(person("p1", body="Regionstyrelsen"), person("p2", body="Regionfullmäktige",
                                                                  device_model="iPad"))
    with pytest.raises(PlaybookError) as err:
        assign(playbook(cohorts=[{"name": "pilot", "select": select},
                                 {"name": "rest", "select": {"rest": True}}]), people)
    assert err.value.problems == [f"playbook.yaml: cohorts: pilot selects nobody: {said}"]
