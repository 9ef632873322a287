"""Will they be able to sign in? Conditional Access predicted before an account is made.

The pure tier holds policies (as Graph returns them: learn.microsoft.com/graph/api/resources/
conditionalaccesspolicy) against each way a person signs in; the CLI tier runs the story on the
sandbox: a policy requiring a compliant device for all users stops the presidium at preflight
before anyone is touched, excluding the officials' group lets it through, and for accounts that
exist the prediction comes from What If (graph/api/conditionalaccessroot-evaluate) and agrees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.signin import PlannedPredictions, Verdict, Way, applies, grant_met, predict_planned, ways

from .builders import person
from .conftest import cli, reopen

OFFICIALS = "g-officials"


def policy(name: str = "P", *, state: str = "enabled", controls: tuple[str, ...] = ("block",),
           operator: str = "OR", **conditions: Any) -> dict[str, Any]:
    cond = {"users": {"includeUsers": ["All"], "excludeUsers": [], "includeGroups": [], "excludeGroups": []},
            "applications": {"includeApplications": ["All"], "excludeApplications": []},
            "clientAppTypes": ["all"], "platforms": None, "locations": None}
    cond.update(conditions)
    return {"id": name, "displayName": name, "state": state, "conditions": cond,
            "grantControls": {"operator": operator, "builtInControls": list(controls)}}


IPHONE = Way("Outlook för iOS", "mobileAppsAndDesktopClients", "iOS")
WEB = Way("Outlook på webben", "browser", "windows")
EAS = Way("Mail", "exchangeActiveSync", "iOS")


@pytest.mark.parametrize(("pol", "way", "expected"), [
    (policy(), WEB, True),
    (policy(state="disabled"), WEB, False),
    (policy(users={"includeUsers": ["All"], "excludeGroups": [OFFICIALS]}), WEB, False),
    (policy(users={"includeUsers": [], "includeGroups": ["g-staff"]}), WEB, False),
    (policy(users={"includeUsers": [], "includeGroups": [OFFICIALS]}), WEB, True),
    (policy(clientAppTypes=["exchangeActiveSync", "other"]), EAS, True),
    (policy(clientAppTypes=["exchangeActiveSync", "other"]), IPHONE, False),
    (policy(platforms={"includePlatforms": ["iOS", "android"], "excludePlatforms": []}), WEB, False),
    (policy(platforms={"includePlatforms": ["all"], "excludePlatforms": ["iOS"]}), IPHONE, False),
    (policy(applications={"includeApplications": ["Office365"]}), WEB, True),
    (policy(applications={"includeApplications": ["some-other-app"]}), WEB, False),
    (policy(locations={"includeLocations": ["All"], "excludeLocations": ["se"]}), WEB, False),
    (policy(locations={"includeLocations": ["All"], "excludeLocations": ["no"]}), WEB, True),
])
def test_when_a_policy_applies_to_a_way_of_signing_in(pol: dict[str, Any], way: Way, expected: bool) -> None:
    locations = [{"id": "se", "countriesAndRegions": ["SE"]}, {"id": "no", "countriesAndRegions": ["NO"]}]
    assert applies(pol, way, {OFFICIALS}, locations) is expected


@pytest.mark.parametrize(("controls", "operator", "way", "managed", "met"), [
    (("mfa",), "OR", WEB, False, True),               # the pass, or registering at first sign-in
    (("block",), "OR", WEB, False, False),
    (("compliantDevice",), "OR", IPHONE, False, False),  # an official's own phone
    (("compliantDevice",), "OR", IPHONE, True, True),    # a work phone enrolled in Intune
    (("compliantDevice", "approvedApplication"), "OR", IPHONE, False, True),  # Outlook for iOS
    (("compliantDevice", "approvedApplication"), "OR", WEB, False, False),
    (("mfa", "compliantDevice"), "AND", WEB, False, False),
    (("domainJoinedDevice",), "OR", WEB, False, False),
])
def test_what_an_official_can_meet(controls: tuple[str, ...], operator: str, way: Way, managed: bool,
                                   met: bool) -> None:
    assert grant_met(policy(controls=controls, operator=operator), way, managed_device=managed) is met


def test_the_ways_follow_the_device_in_the_roster() -> None:
    assert [(w.client_app_type, w.platform) for w in ways(person("P1", device_model="iPad mini"))] == [
        ("browser", "iOS"), ("mobileAppsAndDesktopClients", "iOS")]
    assert [w.platform for w in ways(person("P2", device_model="Samsung XCover 5"))] == ["android", "android"]
    assert [(w.client_app_type, w.platform) for w in ways(person("P3"))] == [("browser", "windows")]


def test_report_only_policies_are_seen_but_do_not_block() -> None:
    watched = policy("watch", state="enabledForReportingButNotEnforced")
    prediction = predict_planned(person("P1"), "p1@x.se", [watched], [], {OFFICIALS}, managed_device=False)
    assert prediction.verdict is Verdict.OK
    [way] = prediction.ways
    assert [(h.policy, h.blocks, h.report_only) for h in way.hits] == [("watch", True, True)]


def test_people_alike_are_judged_once_and_each_keeps_their_own_name() -> None:
    """Predictions for many people against the same policies are shared between people with
    the same ways of signing in, groups and device, and only between them."""
    staff_only = policy("staff", users={"includeUsers": [], "includeGroups": ["g-staff"]})
    apps_only = policy("apps", controls=("compliantDevice",), clientAppTypes=["mobileAppsAndDesktopClients"],
                       platforms={"includePlatforms": ["iOS", "android"], "excludePlatforms": []})
    predict = PlannedPredictions([staff_only, apps_only], [])
    phone = {"device_model": "iPhone 12"}
    cases = [(person("P1", **phone), {OFFICIALS}, False), (person("P2", **phone), {OFFICIALS}, False),
             (person("P3", **phone), {OFFICIALS, "g-staff"}, False),  # the staff policy blocks them
             (person("P4", **phone), {OFFICIALS}, True),  # a work phone: the app is let in
             (person("P5"), {OFFICIALS}, False)]  # a computer: the web
    for who, groups, managed in cases:
        shared = predict(who, f"{who.person_id}@x.se", groups, managed_device=managed)
        alone = predict_planned(who, f"{who.person_id}@x.se", [staff_only, apps_only], [], groups,
                                managed_device=managed)
        assert shared == alone
    assert len(predict._judged) == 4


# -- the story, on the sandbox ----------------------------------------------------------


@pytest.fixture
def example(tmp_path: Path, make_sandbox: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example playbook and roster, gates that do not wait."""
    import shutil

    from .conftest import PLAYBOOKS

    make_sandbox(employees=300)
    monkeypatch.setenv("PROVISIONER_PNR_KEY", "sandbox-personnummer-key")
    for name in PLAYBOOKS.glob("fritidspolitiker-*"):
        shutil.copy(name, tmp_path / name.name)
    return tmp_path / "fritidspolitiker-epost.yaml"


def exclude_officials(state_dir: Path, policy_name: str) -> None:
    t = reopen(state_dir)
    group = next(g for g in t.store.values("groups") if g["displayName"] == "Förtroendevalda")
    pol = next(p for p in t.store.values("conditionalAccessPolicies") if p["displayName"] == policy_name)
    pol["conditions"]["users"]["excludeGroups"] = [group["id"]]
    t.store.put("conditionalAccessPolicies", pol)
    t.store.close()


@pytest.mark.slow
def test_a_policy_that_would_lock_officials_out_stops_the_first_cohort_before_anyone_is_touched(
        runner: CliRunner, state_dir: Path, example: Path) -> None:
    baseline = json.loads(cli(runner, state_dir, "signin-check", str(example), "--format", "json").stdout)
    assert baseline["ready"] is True and baseline["blocked"] == []
    assert {p["verdict"] for p in baseline["people"]} == {"ok"}
    cli(runner, state_dir, "sandbox", "break", "conditional-access", "Kräv kompatibel enhet")
    checked = cli(runner, state_dir, "preflight", "--json", str(example))
    assert checked.exit_code == 5
    [signin] = [c for c in json.loads(checked.stdout)["checks"] if c["name"] == "sign-in"]
    assert signin["status"] == "FAIL"
    assert "'Kräv kompatibel enhet' needs a compliant (Intune-enrolled) device" in signin["detail"]
    assert "canary-official" in signin["detail"] and "P00002" in signin["detail"]
    assert "exclude the officials' group (Förtroendevalda) from it" in signin["detail"]
    applied = cli(runner, state_dir, "apply", "--yes", str(example))
    assert applied.exit_code == 5
    assert reopen(state_dir).store.counters.get("mutating", 0) == 0  # nobody was touched
    exclude_officials(state_dir, "Kräv kompatibel enhet")
    assert cli(runner, state_dir, "preflight", str(example)).exit_code == 0
    assert cli(runner, state_dir, "apply", "--yes", str(example)).exit_code in (0, 8)


@pytest.mark.slow
def test_for_accounts_that_exist_what_if_answers_and_agrees_with_the_policies(
        runner: CliRunner, state_dir: Path, example: Path) -> None:
    before = json.loads(cli(runner, state_dir, "signin-check", str(example), "--cohort", "presidium",
                            "--format", "json").stdout)
    assert {p["by"] for p in before["people"]} == {"policies"}
    assert cli(runner, state_dir, "apply", "--yes", str(example)).exit_code in (0, 8)
    cli(runner, state_dir, "sandbox", "break", "conditional-access", "Kräv kompatibel enhet")
    after = cli(runner, state_dir, "signin-check", str(example), "--cohort", "presidium", "--format", "json")
    assert after.exit_code == 5
    found = json.loads(after.stdout)
    assert {p["by"] for p in found["people"]} == {"what-if"}
    assert {p["verdict"] for p in found["people"]} == {"blocked"}
    # The same tenant, asked the other way (as if the accounts were not made): the same verdicts.
    t = reopen(state_dir)
    from provisioner.sandbox.conditional_access import policies

    pols = policies(t)
    groups = {g["id"] for g in t.store.values("groups") if g["displayName"] in ("Förtroendevalda",)}
    t.store.close()
    for p in found["people"]:
        local = predict_planned(person(p["person_id"]), p["upn"], pols, [], groups, managed_device=False)
        assert str(local.verdict) == p["verdict"]


@pytest.mark.slow
def test_a_policy_enabled_after_preflight_is_caught_by_the_canary_before_a_real_person(
        runner: CliRunner, state_dir: Path, example: Path, make_sandbox: Callable[..., Any]) -> None:
    make_sandbox(employees=300, conditional_access_after="2:Kräv kompatibel enhet")
    assert cli(runner, state_dir, "preflight", str(example)).exit_code == 0  # nothing to see yet
    halted = cli(runner, state_dir, "apply", "--yes", "--json", str(example))
    assert halted.exit_code == 4, halted.output
    [cohort] = json.loads(halted.stdout)["cohorts"]
    gates = {g["gate"]: g for g in cohort["gates"]}
    assert gates["canary"]["status"] == "pass"
    signin = gates["canary sign-in"]
    assert signin["status"] == "fail" and "'Kräv kompatibel enhet'" in signin["detail"]
    assert set(signin["people"]) == {"canary-official", "canary-dual-role"}
    t = reopen(state_dir)
    made = {u["userPrincipalName"].split("@")[0] for u in t.users.values()
            if u["userPrincipalName"].endswith("@politiker.example-region.se")}
    t.store.close()
    assert made == {"canary.official", "canary.dualrole"}  # no real person was touched
    exclude_officials(state_dir, "Kräv kompatibel enhet")
    again = cli(runner, state_dir, "apply", "--yes", "--json", str(example))
    assert again.exit_code in (0, 8), again.output
    gates = {g["gate"]: g["status"] for g in json.loads(again.stdout)["cohorts"][0]["gates"]}
    assert gates["canary sign-in"] == "pass"


def test_a_policy_that_stops_only_the_mail_app_sends_the_guide_to_the_web() -> None:
    apps_only = policy("apps", controls=("compliantDevice",), clientAppTypes=["mobileAppsAndDesktopClients"],
                       platforms={"includePlatforms": ["iOS", "android"], "excludePlatforms": []})
    iphone = person("P1", device_model="iPhone 12")
    switched = predict_planned(iphone, "p1@x.se", [apps_only], [], {OFFICIALS}, managed_device=False)
    assert (switched.verdict, switched.web_mail) == (Verdict.OK, True)
    assert switched.to_json()["mail_client"] == "web"
    everything = policy("all", controls=("compliantDevice",))
    stopped = predict_planned(iphone, "p1@x.se", [everything], [], {OFFICIALS}, managed_device=False)
    assert (stopped.verdict, stopped.web_mail) == (Verdict.BLOCKED, False)
    enrolled = predict_planned(iphone, "p1@x.se", [apps_only], [], {OFFICIALS}, managed_device=True)
    assert (enrolled.verdict, enrolled.web_mail) == (Verdict.OK, False)  # a work phone keeps Outlook
