"""The pure tier: the planner from a playbook, a roster and a snapshot built in memory."""

from __future__ import annotations

import pytest

from provisioner.errors import ConfigurationError
from provisioner.leavers import LEAVERS
from provisioner.model import Action, Change
from provisioner.planner import make_plan

from .builders import (
    ENTERPRISEPACK,
    actions,
    group,
    managed,
    person,
    playbook,
    roster,
    sku,
    snapshot,
    user,
)


def test_a_changes_id_is_the_one_earlier_versions_gave_it() -> None:
    """Journals keep change ids across upgrades (resume and rollback find a change by its id):
    the hash of the change's canonical JSON must not move when the code that makes it does."""
    change = Change("account", "P00001", Action.CREATE, "user:asa.oberg@politiker.example-region.se", None,
                    {"displayName": "Åsa Öberg", "accountEnabled": True, "usageLocation": "SE",
                     "onPremisesExtensionAttributes": {"extensionAttribute15": "provisioner:pb:P00001"},
                     "businessPhones": [], "ratio": 0.5, "n": 3, "none": None})
    assert change.id == "9327f1ba23edaf0a"


def test_a_new_person_gets_an_account_a_licence_and_their_groups_in_step_order() -> None:
    plan = make_plan(playbook(), roster(person("p1")), snapshot())
    assert actions(plan) == [("account", "create", "p1"), ("license", "create", "p1"),
                             ("groups", "create", "p1"), ("groups", "create", "p1")]
    account = plan.changes[0].after or {}
    assert account["userPrincipalName"] == "anna.berg@politiker.example.se"
    assert account["onPremisesExtensionAttributes"] == {"extensionAttribute15": "provisioner:t:p1"}
    assert {c.target for c in plan.changes[2:]} == {
        "group:Förtroendevalda:anna.berg@politiker.example.se",
        "group:Politiker Regionfullmäktige:anna.berg@politiker.example.se"}


def test_a_person_whose_account_is_in_line_needs_nothing() -> None:
    plan = make_plan(playbook(), roster(person("p1")), snapshot(managed("p1")))
    assert plan.changes == ()


@pytest.mark.parametrize(("field", "value", "attribute", "before", "after"), [
    ("body", "Hälso- och sjukvårdsnämnden", "department", "Regionfullmäktige", "Hälso- och sjukvårdsnämnden"),
    ("role", "ordförande", "jobTitle", "ledamot", "ordförande"),
    ("mobile", "+46701234567", "mobilePhone", None, "+46701234567"),
])
def test_a_changed_roster_field_is_one_update_with_its_before_image(
        field: str, value: str, attribute: str, before: str | None, after: str) -> None:
    groups = (group("Förtroendevalda", "id-p1"), group("Politiker Regionfullmäktige", "id-p1"),
              group("Politiker Hälso- och sjukvårdsnämnden"))
    plan = make_plan(playbook(), roster(person("p1", **{field: value})),
                     snapshot(managed("p1"), groups=groups))
    update = next(c for c in plan.changes if c.step == "account")
    assert update.action is Action.UPDATE
    assert (update.before, update.after) == ({attribute: before}, {attribute: after})


def test_a_mover_leaves_the_group_of_their_old_body_and_joins_the_new_one() -> None:
    groups = (group("Förtroendevalda", "id-p1"), group("Politiker Regionfullmäktige", "id-p1"),
              group("Politiker Regionstyrelsen"))
    snap = snapshot(managed("p1", department="Regionstyrelsen"), groups=groups,
                    playbook_groups=frozenset(g.name for g in groups))
    plan = make_plan(playbook(), roster(person("p1", body="Regionstyrelsen")), snap)
    assert [(c.action.value, c.target.split(":")[1]) for c in plan.changes if c.step == "groups"] == [
        ("delete", "Politiker Regionfullmäktige"), ("create", "Politiker Regionstyrelsen")]


def test_a_group_the_roster_needs_that_the_tenant_lacks_is_one_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="no group named 'Politiker Regionstyrelsen'"):
        make_plan(playbook(), roster(person("p1", body="Regionstyrelsen")), snapshot())


def test_licences_needed_beyond_the_free_seats_are_a_warning() -> None:
    plan = make_plan(playbook(), roster(person("p1"), person("p2", "Bo", "Ek")),
                     snapshot(skus={"ENTERPRISEPACK": sku(free=1)}))
    assert plan.warnings == ("license: 2 ENTERPRISEPACK licences needed but only 1 free"
                             " (1 bought, 0 in use)",)


def test_notes_of_two_steps_about_one_person_are_both_kept() -> None:
    """A name change (account) and a device model without a profile (device_settings) are
    both said; once, the second overwrote the first."""
    pb = playbook(steps=["account", "device_settings"],
                  devices={"profiles": [{"name": "iphone", "model": "iPhone 12", "groups": ["Mobil"]}]})
    married = person("p1", surname="Lind", device_model="Nokia 3310")
    plan = make_plan(pb, roster(married), snapshot(managed("p1"), groups=(group("Mobil"),)))
    assert "name change: the address stays anna.berg@politiker.example.se" in plan.notes["p1"]
    assert "no device profile for the model 'Nokia 3310'" in plan.notes["p1"]


def test_a_device_not_enrolled_yet_is_awaiting_not_a_change() -> None:
    pb = playbook(steps=["account", "device_settings"],
                  devices={"profiles": [{"name": "iphone", "model": "iPhone 12", "groups": ["Mobil"]}]})
    plan = make_plan(pb, roster(person("p1", device_model="iPhone 12")),
                     snapshot(managed("p1"), groups=(group("Mobil"),)))
    assert plan.changes == ()
    assert plan.awaiting == {"p1": "iPhone 12: awaiting enrolment"}


@pytest.mark.parametrize(("days", "due", "scheduled"), [
    (0, [("groups", "delete"), ("groups", "delete"), ("account", "update")],
     "remove licence on 2026-12-31; soft-delete on 2027-03-01"),
    (30, [("license", "delete")], "soft-delete on 2027-03-01"),
    (90, [("license", "delete"), ("account", "delete")], ""),
])
def test_a_leaver_loses_access_at_once_and_the_rest_on_its_dates(
        monkeypatch: pytest.MonkeyPatch, days: int, due: list[tuple[str, str]], scheduled: str) -> None:
    """Day 0 of leaving is 2026-12-01; the licence goes after 30 days, the account after 90."""
    import datetime as dt

    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC) + dt.timedelta(days=days)
    monkeypatch.setenv("PROVISIONER_NOW", now.isoformat())
    leaver = managed("p9", "Bo", "Ek", accountEnabled=days == 0)
    snap = snapshot(managed("p1"), leaver, playbook_groups=frozenset(
        {"Förtroendevalda", "Politiker Regionfullmäktige"}),
        leaving_since={} if days == 0 else {"p9": "2026-12-01T00:00:00+00:00"})
    if days:  # the first stage was applied on day 0
        snap = snapshot(managed("p1"), leaver, groups=(group("Förtroendevalda", "id-p1"),
                                                       group("Politiker Regionfullmäktige", "id-p1")),
                        leaving_since={"p9": "2026-12-01T00:00:00+00:00"})
    plan = make_plan(playbook(), roster(person("p1")), snap)
    assert [(c.step, c.action.value) for c in plan.changes if c.person_id == "p9"] == due
    assert plan.scheduled.get("p9", "") == scheduled
    assert plan.cohort_of["p9"] == LEAVERS


def test_an_adopted_leaver_keeps_their_account_and_licence_and_loses_only_the_mark() -> None:
    employee = user("e1", "anna.berg@region.se", licences={ENTERPRISEPACK: []},
                    onPremisesExtensionAttributes={"extensionAttribute15": "provisioner:t:p9:adopted"})
    plan = make_plan(playbook(), roster(person("p1")), snapshot(managed("p1"), employee))
    leaving = [c for c in plan.changes if c.person_id == "p9"]
    assert [(c.step, c.action.value) for c in leaving] == [("account", "update")]
    assert leaving[0].after == {"onPremisesExtensionAttributes": {"extensionAttribute15": None}}


def test_the_same_inputs_give_the_same_plan() -> None:
    people = roster(*(person(f"p{i}", "Anna", "Berg") for i in range(5)))
    first, second = (make_plan(playbook(), people, snapshot()) for _ in range(2))
    assert [c.id for c in first.changes] == [c.id for c in second.changes]
    assert len({(c.after or {}).get("userPrincipalName") for c in first.changes if c.step == "account"}) == 5
