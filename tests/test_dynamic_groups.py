"""groups.dynamic: the groups a playbook makes get a membership rule on the tool's ownership
mark (and the department, for ``{body}``), so Entra puts each account in them and no
membership is written.

Microsoft's pages the sandbox follows: groups-dynamic-membership (rule syntax: user.PROPERTY
-eq "value", -startsWith, -and; extensionAttribute1-15; a quote escaped with a backtick;
members of a dynamic group cannot be added or removed by hand), groups-create-rule (dynamic
groups need Microsoft Entra ID P1; "when an attribute changes ... rules are processed": the
membership follows after a delay), group-post-groups (groupTypes DynamicMembership,
membershipRule, membershipRuleProcessingState)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.model import PREREQUISITES
from provisioner.planner import make_plan
from provisioner.sandbox import Sandbox, Tenant, reset_tenant
from provisioner.sandbox.app import Call
from provisioner.sandbox.prepare import grant
from provisioner.steps.groups import membership_rule, rule_selects

from . import builders as b
from .conftest import cli, reopen

DYNAMIC = {"create": True, "dynamic": True, "names": ["Solbacka förtroendevalda", "Solbacka {body}"]}
LICENCE = {"sku": "office 365 e3", "via_group": "Licens E3 Solbacka"}
MARK = 'user.extensionAttribute15 -startsWith "provisioner:t:"'
GROUP_WRITER = "Group.ReadWrite.All"  # group-post-groups: the permission to make groups


# -- the pure tier ----------------------------------------------------------------------------

def test_dynamic_groups_are_made_with_rules_and_no_membership_is_planned() -> None:
    pb = b.playbook(groups=DYNAMIC, license=LICENCE)
    people = b.roster(b.person("P1", body="Kulturnämnden"), b.person("P2", "Bo", body="Servicenämnden"))
    plan = make_plan(pb, people, b.snapshot(skus={"ENTERPRISEPACK": b.sku()}))
    made = {c.target: c.after for c in plan.changes if plan.cohort_of[c.person_id] == PREREQUISITES}
    assert made["group:Solbacka Kulturnämnden"]["membershipRule"] == \
        f'({MARK}) -and (user.department -eq "Kulturnämnden")'
    assert made["group:Solbacka förtroendevalda"]["membershipRule"] == f"({MARK})"
    assert made["group:Licens E3 Solbacka"]["membershipRule"] == f"({MARK})"
    assert made["group:Licens E3 Solbacka"]["groupTypes"] == ["DynamicMembership"]
    people_steps = {c.step for c in plan.changes if plan.cohort_of[c.person_id] != PREREQUISITES}
    assert people_steps == {"account"}  # licence and groups come from the rules


def test_an_existing_group_gets_members_by_hand_unless_it_has_a_rule_of_its_own() -> None:
    """A group that exists is used as it is: without a rule the playbook adds its people, with
    one (made dynamic by someone) Entra does and Graph would refuse the write."""
    from dataclasses import replace

    pb = b.playbook(groups=DYNAMIC)
    existing = (b.group("Solbacka förtroendevalda"),
                replace(b.group("Solbacka Kulturnämnden"), rule='(user.department -eq "Kulturnämnden")'))
    plan = make_plan(pb, b.roster(b.person("P1", body="Kulturnämnden")),
                     b.snapshot(groups=existing, skus={"ENTERPRISEPACK": b.sku()}))
    joins = [c.target for c in plan.changes if c.step == "groups" and c.person_id == "P1"]
    assert joins == ["group:Solbacka förtroendevalda:anna.berg@politiker.example.se"]


@pytest.mark.parametrize(("groups", "error"), [
    ({"dynamic": True, "names": ["A"]}, "only groups the playbook makes can be dynamic"),
    ({"create": True, "dynamic": True, "names": ["Politiker {role}"]}, "may hold at most {body}"),
])
def test_a_dynamic_group_needs_create_and_a_name_a_rule_can_follow(groups: dict[str, Any],
                                                                   error: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=error):
        b.playbook(groups=groups)


def test_a_rule_escapes_a_quote_and_compares_as_entra_does() -> None:
    terms = [("department", "eq", 'Nämnden "Kultur"')]
    assert membership_rule(terms) == '(user.department -eq "Nämnden `"Kultur`"")'
    assert rule_selects(terms, {"department": 'NÄMNDEN "kultur"'})
    assert not rule_selects([("onPremisesExtensionAttributes.extensionAttribute15", "startsWith", "p:")],
                            {"onPremisesExtensionAttributes": {"extensionAttribute15": None}})


# -- the sandbox: Entra's side --------------------------------------------------------------

def _call(app: Sandbox, method: str, path: str, body: Any = None) -> Any:
    return app.handle(Call(method, path, {}, {}, body, "https://graph.sandbox.invalid/v1.0"), "t")


def _dynamic(rule: str) -> dict[str, Any]:
    return {"displayName": "D", "mailNickname": "d", "mailEnabled": False, "securityEnabled": True,
            "groupTypes": ["DynamicMembership"], "membershipRule": rule,
            "membershipRuleProcessingState": "On"}


def test_sandbox_evaluates_a_rule_after_its_processing_delay_and_refuses_hand_made_members() -> None:
    now = [1000.0]
    tenant = reset_tenant(None, employees=20, seed=3, dynamic_delay=30)
    grant(tenant, GROUP_WRITER)
    tenant.clock = lambda: now[0]
    app = Sandbox(tenant)
    department = next(u["department"] for u in tenant.users.values() if u.get("department"))
    reply = _call(app, "POST", "/groups", _dynamic(f'(user.department -eq "{department.upper()}")'))
    assert reply.status == 201, reply.body
    gid = reply.body["id"]
    economists = {u["id"] for u in tenant.users.values() if u.get("department") == department}
    assert economists and not tenant.find_group(gid)["_members"]  # not yet processed
    now[0] += 31
    _call(app, "GET", "/groups")
    assert set(tenant.find_group(gid)["_members"]) == economists
    one = next(iter(economists))
    refused = _call(app, "POST", f"/groups/{gid}/members/$ref",
                    {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{one}"})
    assert refused.status == 400


@pytest.mark.parametrize("how", ["add", "bind", "remove"])
def test_sandbox_refuses_every_way_of_changing_a_dynamic_groups_members_by_hand(how: str) -> None:
    """groups-dynamic-membership: members of a dynamic group cannot be added or removed by
    hand; not by POST members/$ref (group-post-members), PATCH members@odata.bind
    (group-update) or DELETE members/{id}/$ref (group-delete-members)."""
    tenant = reset_tenant(None, employees=10, seed=3, dynamic_delay=0)
    grant(tenant, GROUP_WRITER)
    app = Sandbox(tenant)
    department = next(u["department"] for u in tenant.users.values() if u.get("department"))
    gid = _call(app, "POST", "/groups", _dynamic(f'user.department -eq "{department}"')).body["id"]
    _call(app, "GET", "/groups")  # Entra has processed the rule
    inside = tenant.find_group(gid)["_members"][0]
    outside = next(u for u in tenant.users if u not in tenant.find_group(gid)["_members"])
    ref = f"https://graph.microsoft.com/v1.0/directoryObjects/{outside}"
    reply = {"add": lambda: _call(app, "POST", f"/groups/{gid}/members/$ref", {"@odata.id": ref}),
             "bind": lambda: _call(app, "PATCH", f"/groups/{gid}", {"members@odata.bind": [ref]}),
             "remove": lambda: _call(app, "DELETE", f"/groups/{gid}/members/{inside}/$ref")}[how]()
    assert reply.status == 400 and "dynamic membership" in reply.body["error"]["message"]
    assert inside in tenant.find_group(gid)["_members"] and outside not in tenant.find_group(gid)["_members"]


def test_sandbox_refuses_a_rule_on_a_group_that_is_not_dynamic_and_shows_a_rule_it_has() -> None:
    """group-post-groups: membershipRule is for a group whose groupTypes hold
    DynamicMembership; group-get: membershipRule is a property of the group ($select)."""
    tenant = reset_tenant(None, employees=5, seed=3)
    grant(tenant, GROUP_WRITER)
    app = Sandbox(tenant)
    plain = {**_dynamic('user.department -eq "Ekonomi"'), "groupTypes": []}
    assert _call(app, "POST", "/groups", plain).status == 400
    made = _call(app, "POST", "/groups", _dynamic('user.department -eq "Ekonomi"')).body
    shown = app.handle(Call("GET", f"/groups/{made['id']}", {"$select": "id,membershipRule"}, {}, None,
                            "https://graph.sandbox.invalid/v1.0"), "t")
    assert shown.status == 200 and shown.body["membershipRule"] == 'user.department -eq "Ekonomi"'


@pytest.mark.parametrize(("rule", "premium", "why"), [
    ('user.department -eq "Ekonomi"', False, "Microsoft Entra ID P1"),
    ("user.department == Ekonomi", True, "Invalid membership rule"),
])
def test_sandbox_refuses_a_dynamic_group_without_p1_or_with_a_rule_it_cannot_read(
        rule: str, premium: bool, why: str) -> None:
    tenant = reset_tenant(None, employees=5, seed=3)
    grant(tenant, GROUP_WRITER)
    if not premium:
        for sku in list(tenant.store.values("skus")):
            plans = [p for p in sku["servicePlans"]
                     if p["servicePlanName"] not in ("AAD_PREMIUM", "AAD_PREMIUM_P2")]
            tenant.store.put("skus", {**sku, "servicePlans": plans})
    reply = _call(Sandbox(tenant), "POST", "/groups", _dynamic(rule))
    assert reply.status == 400 and why in reply.body["error"]["message"]


# -- the CLI on the sandbox -----------------------------------------------------------------

@pytest.fixture
def dynamic_playbook(make_sandbox: Callable[..., Tenant], write_playbook: Callable[..., Path]) -> Path:
    make_sandbox(dynamic_delay=1.0, mailbox_delay=0)
    path = write_playbook(8, steps="account, license, groups")
    text = path.read_text(encoding="utf-8")
    text = text.replace('groups: [Förtroendevalda, "Politiker {body}"]',
                        'groups: {create: true, dynamic: true,'
                        ' names: [Solbacka förtroendevalda, "Solbacka {body}"]}')
    text = text.replace("  sku: ENTERPRISEPACK", "  sku: Office 365 E3\n  via_group: Licens E3 Solbacka")
    text += ("cohorts:\n  - name: alla\n    select: {rest: true}\n    gates:\n"
             "      verify: {checks: [groups, license], timeout: 20, interval: 0.2}\n")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
def test_apply_with_dynamic_groups_writes_one_entra_write_per_person_and_the_gate_waits_for_entra(
        runner: CliRunner, state_dir: Path, dynamic_playbook: Path) -> None:
    assert cli(runner, state_dir, "sandbox", "grant", "Group.ReadWrite.All").exit_code == 0
    preflight = json.loads(cli(runner, state_dir, "preflight", "--json", str(dynamic_playbook)).output)
    checks = {c["name"]: c for c in preflight["checks"]}
    assert checks["dynamic groups"]["status"] == "ok", checks["dynamic groups"]
    before = reopen(state_dir).store.counters["entra writes"]
    applied = cli(runner, state_dir, "apply", "--yes", "--json", str(dynamic_playbook))
    assert applied.exit_code == 0, applied.output
    tenant = reopen(state_dir)
    groups = {g["displayName"]: g for g in tenant.store.values("groups") if "Solbacka" in g["displayName"]}
    made = len(groups) + 1  # each group, and the licensing group's SKU
    assert tenant.store.counters["entra writes"] - before == 8 + made  # one POST /users a person
    assert len(groups["Solbacka förtroendevalda"]["_members"]) == 8  # Entra's work, the gate waited
    licensed = [u for u in tenant.users.values() if u["id"] in groups["Licens E3 Solbacka"]["_members"]]
    assert len(licensed) == 8 and all(u["assignedLicenses"] for u in licensed)
    tenant.store.close()
    again = cli(runner, state_dir, "plan", "--detailed-exitcode", str(dynamic_playbook))
    assert again.exit_code == 0, again.output


def test_preflight_fails_when_a_rule_would_select_an_account_that_is_not_the_playbooks(
        runner: CliRunner, state_dir: Path, dynamic_playbook: Path) -> None:
    tenant = reopen(state_dir)
    employee = next(u for u in tenant.users.values() if not u.get("onPremisesSyncEnabled"))
    tenant.update_user(employee["id"], {"onPremisesExtensionAttributes": {
        "extensionAttribute15": "provisioner:test-officials:copied"}})
    tenant.store.close()
    found = json.loads(cli(runner, state_dir, "preflight", "--json", str(dynamic_playbook)).output)
    check = next(c for c in found["checks"] if c["name"] == "dynamic groups")
    assert check["status"] == "FAIL" and employee["userPrincipalName"] in check["detail"]
