"""groups.create: the playbook owns its groups. Plan shows the ones the tenant lacks, apply
makes them before any cohort (the licensing group with its SKU through assignLicense on the
group), rollback removes only the groups it made and only once no one else is in them.

Graph pages the sandbox follows: group-post-groups (a security group: mailEnabled false,
securityEnabled true, a mailNickname; Group.Create), group-assignlicense (202 with the group;
LicenseAssignment.ReadWrite.All), group-delete (Group.ReadWrite.All; a security group is
deleted for good)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.model import PREREQUISITES, Action
from provisioner.planner import make_plan
from provisioner.sandbox import Tenant

from . import builders as b
from .conftest import cli, reopen

OWNED = {"create": True, "names": ["Solbacka förtroendevalda", "Solbacka {body}"]}
LICENCE = {"sku": "office 365 e3", "via_group": "Licens E3 Solbacka"}


# -- the pure tier: what the plan says ------------------------------------------------------

def test_the_groups_a_playbook_owns_are_planned_before_any_cohort_and_memberships_name_them() -> None:
    pb = b.playbook(groups=OWNED, license=LICENCE)
    people = b.roster(b.person("P1", body="Kulturnämnden"), b.person("P2", "Bo", body="Servicenämnden"))
    plan = make_plan(pb, people, b.snapshot(skus={"ENTERPRISEPACK": b.sku()}))
    made = [c for c in plan.changes if plan.cohort_of[c.person_id] == PREREQUISITES]
    assert [c.target for c in made] == [
        "group:Licens E3 Solbacka", "license:group:Licens E3 Solbacka:ENTERPRISEPACK",
        "group:Solbacka Kulturnämnden", "group:Solbacka Servicenämnden", "group:Solbacka förtroendevalda"]
    assert made[0].after == {"displayName": "Licens E3 Solbacka", "mailNickname": "licens-e3-solbacka",
                             "description": "Made by provisioner for the playbook t",
                             "securityEnabled": True, "mailEnabled": False}
    assert made[1].after["skuId"] == b.ENTERPRISEPACK and plan.cohort_order[0] == PREREQUISITES
    # The people's memberships wait for the ids Graph will give (placeholders until then).
    joins = {c.after["groupId"] for c in plan.changes if c.person_id == "P1" and "groupId" in (c.after or {})}
    assert joins == {"new:Licens E3 Solbacka", "new:Solbacka Kulturnämnden", "new:Solbacka förtroendevalda"}


def test_groups_that_exist_are_not_made_again_and_a_licensing_group_without_its_sku_gets_it() -> None:
    pb = b.playbook(groups=OWNED, license=LICENCE)
    existing = (b.group("Solbacka förtroendevalda"), b.group("Solbacka Kulturnämnden"),
                b.group("Licens E3 Solbacka"))
    plan = make_plan(pb, b.roster(b.person("P1", body="Kulturnämnden")),
                     b.snapshot(groups=existing, skus={"ENTERPRISEPACK": b.sku()}))
    made = [(c.action, c.target) for c in plan.changes if plan.cohort_of[c.person_id] == PREREQUISITES]
    assert made == [(Action.CREATE, "license:group:Licens E3 Solbacka:ENTERPRISEPACK")]


def test_without_create_a_missing_group_is_an_error_as_before() -> None:
    from provisioner.errors import ConfigurationError

    pb = b.playbook(groups={"names": ["Solbacka förtroendevalda"]})
    with pytest.raises(ConfigurationError, match="no group named 'Solbacka förtroendevalda'"):
        make_plan(pb, b.roster(b.person("P1")), b.snapshot(skus={"ENTERPRISEPACK": b.sku()}))


def test_groups_create_without_the_groups_step_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"groups\.create: the `groups` step makes the groups"):
        b.playbook(groups=OWNED, steps=["account", "license"])


# -- the CLI on the sandbox -----------------------------------------------------------------

@pytest.fixture
def owned(tmp_path: Path, make_sandbox: Callable[..., Tenant], write_playbook: Callable[..., Path]) -> Path:
    make_sandbox()
    path = write_playbook(8, steps="account, license, groups")
    text = path.read_text(encoding="utf-8")
    text = text.replace('groups: [Förtroendevalda, "Politiker {body}"]',
                        'groups: {create: true, names: [Solbacka förtroendevalda, "Solbacka {body}"]}')
    text = text.replace("  sku: ENTERPRISEPACK", "  sku: Office 365 E3\n  via_group: Licens E3 Solbacka")
    path.write_text(text, encoding="utf-8")
    return path


def _groups(state_dir: Path) -> dict[str, dict]:
    return {g["displayName"]: g for g in reopen(state_dir).store.values("groups")
            if "Solbacka" in g["displayName"]}


def test_preflight_asks_for_the_permission_to_make_groups(runner: CliRunner, state_dir: Path,
                                                          owned: Path) -> None:
    found = cli(runner, state_dir, "preflight", "--json", str(owned))
    checks = {c["name"]: c for c in json.loads(found.output)["checks"]}
    assert checks["permissions"]["status"] == "FAIL"
    assert "Group.ReadWrite.All (to make the playbook's groups" in checks["permissions"]["detail"]
    assert "apply makes" in checks["groups"]["detail"] and checks["groups"]["status"] == "ok"
    refused = cli(runner, state_dir, "apply", "--yes", str(owned))
    assert refused.exit_code == 5 and _groups(state_dir) == {}


@pytest.mark.slow
def test_apply_makes_the_groups_then_rollback_removes_only_those_it_made_and_only_when_empty(
        runner: CliRunner, state_dir: Path, owned: Path) -> None:
    assert cli(runner, state_dir, "sandbox", "grant", "Group.ReadWrite.All").exit_code == 0
    plan = json.loads(cli(runner, state_dir, "plan", "--json", str(owned)).output)
    made = [c for c in plan["changes"] if c["cohort"] == PREREQUISITES]
    assert {c["target"] for c in made} >= {"group:Solbacka förtroendevalda", "group:Licens E3 Solbacka"}
    applied = cli(runner, state_dir, "apply", "--yes", "--json", str(owned))
    assert applied.exit_code == 0, applied.output
    groups = _groups(state_dir)
    assert len(groups["Solbacka förtroendevalda"]["_members"]) == 8
    assert groups["Licens E3 Solbacka"]["assignedLicenses"][0]["disabledPlans"] == []
    tenant = reopen(state_dir)
    licensed = [u for u in tenant.users.values() if u["id"] in groups["Licens E3 Solbacka"]["_members"]]
    assert len(licensed) == 8 and all(u["assignedLicenses"] for u in licensed)  # Entra gave the SKU
    again = cli(runner, state_dir, "plan", "--detailed-exitcode", str(owned))
    assert again.exit_code == 0, again.output

    # Someone else puts an employee into one of the groups: that group stays, with its licence.
    employee = next(u["id"] for u in tenant.users.values()
                    if u["userPrincipalName"].endswith("@example-region.se"))
    tenant.store.put("groups", {**groups["Solbacka förtroendevalda"],
                                "_members": [*groups["Solbacka förtroendevalda"]["_members"], employee]})
    tenant.store.close()
    undone = cli(runner, state_dir, "rollback", "--yes", str(owned))
    assert undone.exit_code == 1  # not all undone: says what stays
    assert "group 'Solbacka förtroendevalda': kept" in undone.output
    left = _groups(state_dir)
    assert list(left) == ["Solbacka förtroendevalda"]
    assert left["Solbacka förtroendevalda"]["_members"] == [employee]


@pytest.mark.slow
def test_a_saved_plan_with_groups_to_make_applies_with_the_ids_graph_gave(
        runner: CliRunner, state_dir: Path, owned: Path, tmp_path: Path) -> None:
    cli(runner, state_dir, "sandbox", "grant", "Group.ReadWrite.All")
    saved = tmp_path / "plan.json"
    assert cli(runner, state_dir, "plan", "--out", str(saved), str(owned)).exit_code in (0, 2)
    applied = cli(runner, state_dir, "apply", "--yes", "--json", str(saved))
    assert applied.exit_code == 0, applied.output
    doc = json.loads(applied.output)
    assert doc["summary"]["failed"] == 0 and doc["cohorts"][0]["cohort"] == PREREQUISITES
    assert len(_groups(state_dir)["Solbacka förtroendevalda"]["_members"]) == 8
