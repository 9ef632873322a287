"""The pure tier: a saved plan is refused when what it was made from changed since."""

from __future__ import annotations

from dataclasses import replace

import pytest

from provisioner.errors import StalePlanError
from provisioner.operations import Loaded, check_fresh
from provisioner.planner import make_plan

from .builders import group, managed, person, playbook, roster, snapshot

PEOPLE = roster(person("p1", mobile="+46701111111"), person("p2", "Bo", "Ek"))


def fresh_against(**changes: object) -> tuple[Loaded, object, object]:
    pb = playbook()
    before = snapshot(managed("p1"))
    saved = make_plan(pb, PEOPLE, before)
    after = snapshot(managed("p1", **changes)) if changes else before
    return Loaded(pb, PEOPLE), saved, make_plan(pb, PEOPLE, after)


def test_a_plan_of_an_unchanged_world_is_fresh() -> None:
    loaded, saved, fresh = fresh_against()
    check_fresh(saved, loaded, fresh)  # type: ignore[arg-type]


def test_an_object_someone_changed_since_the_plan_makes_it_stale() -> None:
    """The plan would set mobilePhone from None; someone set another number since: the saved
    plan's before-image no longer holds, so applying it would overwrite their change blind."""
    loaded, saved, fresh = fresh_against(mobilePhone="+46709999999")
    with pytest.raises(StalePlanError, match=r"user:anna\.berg@politiker\.example\.se: the object changed"):
        check_fresh(saved, loaded, fresh)  # type: ignore[arg-type]


def test_a_change_no_longer_needed_makes_it_stale() -> None:
    loaded, saved, fresh = fresh_against(mobilePhone="+46701111111")  # someone did it by hand
    with pytest.raises(StalePlanError, match="planned update, no longer needed"):
        check_fresh(saved, loaded, fresh)  # type: ignore[arg-type]


def test_a_change_the_saved_plan_lacks_makes_it_stale() -> None:
    pb = playbook()
    saved = make_plan(pb, PEOPLE, snapshot(managed("p1")))
    moved = snapshot(managed("p1"), groups=(group("Förtroendevalda", "id-p1"),
                                            group("Politiker Regionfullmäktige")))
    with pytest.raises(StalePlanError, match="now needs create, not in the saved plan"):
        check_fresh(saved, Loaded(pb, PEOPLE), make_plan(pb, PEOPLE, moved))


@pytest.mark.parametrize(("what", "message"), [
    ("playbook", "the playbook playbook.yaml changed since the plan was made"),
    ("roster", "the roster roster.csv changed since the plan was made"),
])
def test_a_changed_file_makes_it_stale(what: str, message: str) -> None:
    loaded, saved, fresh = fresh_against()
    saved = replace(saved, **{f"{what}_digest": "something else"})  # type: ignore[arg-type]
    with pytest.raises(StalePlanError, match=message):
        check_fresh(saved, loaded, fresh)  # type: ignore[arg-type]
