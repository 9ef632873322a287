"""Dual roles: matching evidence, policies, decisions, and no second identity, ever."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.identity import personal_number_hash
from provisioner.sandbox import Tenant

from .conftest import ADOPTION_PROP, cli, reopen

KEY = "test-pnr-key"
PNR = "19811218-9876"
PLAYBOOK = """\
name: dual
tenant: sandbox
roster: roster.csv
domain: politiker.example-region.se
naming: {{upn: "{{given}}.{{surname}}", mail_nickname: "pol.{{upn_local}}"}}
license: {{sku: ENTERPRISEPACK}}
groups: [Förtroendevalda, "Politiker {{body}}"]
steps: [account, license, groups]
dual_role:
  policy: {policy}
  personal_number_attribute: extensionAttribute1
  personal_number_key_env: TEST_PNR_KEY
  birth_date_attribute: extensionAttribute2
  decisions: decisions.csv
"""
HEADER = "person_id,given_name,surname,body,mobile,private_email,employee_id,personal_number\n"




def employee(state_dir: Path, given: str, surname: str, **attrs: Any) -> str:
    t = reopen(state_dir)
    local = f"{given}.{surname}".lower().replace(" ", "").replace("-", "")
    ext = {}
    if "pnr" in attrs:
        pnr = attrs.pop("pnr").replace("-", "")
        ext = {"extensionAttribute1": personal_number_hash(pnr, KEY.encode()),
               "extensionAttribute2": f"{pnr[:4]}-{pnr[4:6]}-{pnr[6:8]}"}
    doc = t.create_user({
        "accountEnabled": attrs.pop("enabled", True), "displayName": f"{given} {surname}",
        "givenName": given, "surname": surname, "mailNickname": local,
        "userPrincipalName": f"{local}@example-region.se", "usageLocation": "SE",
        "passwordProfile": {"password": "Xy!12345abcd"}, "onPremisesExtensionAttributes": ext,
        **attrs})
    # Entra Connect then takes it over: an employee synced from on-premises AD.
    t.store.put("users", {**t.users[doc["id"]], "onPremisesSyncEnabled": True})
    t.store.close()
    return str(doc["id"])


@pytest.fixture
def setup(tmp_path: Path, state_dir: Path, make_sandbox: Callable[..., Tenant],
          monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    monkeypatch.setenv("TEST_PNR_KEY", KEY)
    make_sandbox(employees=0)

    def write(rows: str, policy: str = "separate_account", decisions: str = "") -> Path:
        (tmp_path / "roster.csv").write_text(HEADER + rows, encoding="utf-8")
        (tmp_path / "decisions.csv").write_text(  # named by the playbook: it must exist
            "person_id,decision,user_id,decided_by,note\n" + decisions, encoding="utf-8")
        path = tmp_path / "dual.yaml"
        path.write_text(PLAYBOOK.format(policy=policy), encoding="utf-8")
        return path
    return write


def report(runner: CliRunner, state_dir: Path, playbook: Path) -> dict[str, dict[str, Any]]:
    result = cli(runner, state_dir, "dual-roles", "--format", "json", str(playbook))
    assert result.exit_code == 0, result.output
    return {row["person_id"]: row for row in json.loads(result.output)}


def politicians(state_dir: Path) -> list[dict[str, Any]]:
    return [u for u in reopen(state_dir).users.values()
            if u["userPrincipalName"].endswith("@politiker.example-region.se")]


def test_same_name_but_another_person_is_never_a_silent_match(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup("P1,Anna,Berg,Kulturnämnden,0701234567,,,\n")
    employee(state_dir, "Anna", "Berg", mobilePhone="+46709999999")
    rows = report(runner, state_dir, playbook)
    assert "P1" not in rows  # name alone: new
    applied = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert applied.exit_code == 0
    assert [u["userPrincipalName"] for u in politicians(state_dir)] == [
        "anna.berg@politiker.example-region.se"]


def test_same_name_with_another_birth_date_is_not_even_a_candidate(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup("P1,Anna,Berg,Kulturnämnden,,,,19900101-0017\n")
    employee(state_dir, "Anna", "Berg", pnr="19811218-9876")
    result = cli(runner, state_dir, "dual-roles", str(playbook))
    assert result.output.strip() == "No roster person matches an existing account."


def test_a_married_name_with_the_same_personnummer_matches(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(f"P1,Sara,Ek,Kulturnämnden,,,,{PNR}\n")
    uid = employee(state_dir, "Sara", "Nilsson", pnr=PNR)
    row = report(runner, state_dir, playbook)["P1"]
    assert row["status"] == "match"
    assert row["candidates"][0]["user_id"] == uid
    assert set(row["candidates"][0]["evidence"]) == {"personal_number", "birth_date"}


def test_hyphenated_and_double_surnames_match_in_any_order(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup("P1,Anna Karin,Nilsson-Berg,Kulturnämnden,0701112233,,,\n")
    employee(state_dir, "Anna-Karin", "Berg Nilsson", mobilePhone="070-111 22 33")
    row = report(runner, state_dir, playbook)["P1"]
    assert set(row["candidates"][0]["evidence"]) == {"name", "mobile"}


def test_two_employees_who_could_be_one_official_go_to_review(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup("P1,Maja,Lund,Kulturnämnden,0701110008,elin@example.org,,\n")
    employee(state_dir, "Omar", "Ali", mobilePhone="+46701110008")
    employee(state_dir, "Elin", "Berg", otherMails=["elin@example.org"])
    row = report(runner, state_dir, playbook)["P1"]
    assert row["status"] == "review" and row["reason"] == "2 accounts could be this person"
    assert row["applies"].startswith("held")


def test_a_disabled_employee_account_is_recognised_and_held(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(f"P1,Per,Holm,Kulturnämnden,,,E1,{PNR}\n")
    employee(state_dir, "Per", "Holm", employeeId="E1", pnr=PNR, enabled=False)
    row = report(runner, state_dir, playbook)["P1"]
    assert row["status"] == "review" and row["reason"] == "the matching account is disabled"
    assert row["candidates"][0]["enabled"] is False


def test_separate_account_makes_one_official_account_linked_to_the_employee(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(f"P1,Karin,Lindqvist,Kulturnämnden,,,E1,{PNR}\n")
    uid = employee(state_dir, "Karin", "Lindqvist", employeeId="E1", pnr=PNR)
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    [official] = politicians(state_dir)
    assert official["userPrincipalName"] == "karin.lindqvist@politiker.example-region.se"
    assert official["onPremisesExtensionAttributes"]["extensionAttribute14"] == f"dual-role:{uid}"
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).output.startswith("No changes")
    assert len(politicians(state_dir)) == 1


def test_use_existing_adopts_the_employee_account_without_a_second_identity(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(f"P1,Karin,Lindqvist,Kulturnämnden,,,E1,{PNR}\n", policy="use_existing")
    uid = employee(state_dir, "Karin", "Lindqvist", employeeId="E1", pnr=PNR, department="IT")
    plan = json.loads(cli(runner, state_dir, "plan", "--json", str(playbook)).output)
    planned = {(c["action"], c["target"], c["person_id"]) for c in plan["changes"]}
    assert {("update", "user:karin.lindqvist@example-region.se", "P1"),
            ("create", "group:Politiker Kulturnämnden:karin.lindqvist@example-region.se", "P1")} <= planned
    applied = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert applied.exit_code == 0, applied.output
    assert politicians(state_dir) == []
    t = reopen(state_dir)
    user = t.users[uid]
    assert user["department"] == "IT" and user["displayName"] == "Karin Lindqvist"  # untouched
    assert user["onPremisesSyncEnabled"] and user[ADOPTION_PROP] == "provisioner:dual:P1:adopted"
    assert user["onPremisesExtensionAttributes"]["extensionAttribute15"] is None  # read-only: synced
    groups = {g["displayName"] for g in t.store.values("groups") if uid in g["_members"]}
    assert groups == {"Förtroendevalda", "Politiker Kulturnämnden"}
    t.store.close()
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(playbook)).exit_code == 0
    # Rollback gives the employee account back as it was: never deleted.
    cli(runner, state_dir, "rollback", "--yes", str(playbook))
    t = reopen(state_dir)
    assert uid in t.users and t.users[uid][ADOPTION_PROP] is None
    assert not any(uid in g["_members"] for g in t.store.values("groups"))


def test_review_policy_holds_matches_and_plan_exits_3(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(f"P1,Karin,Lindqvist,Kulturnämnden,,,E1,{PNR}\nP2,Bo,Ek,Kulturnämnden,,,,\n",
                     policy="review")
    employee(state_dir, "Karin", "Lindqvist", employeeId="E1", pnr=PNR)
    plan = cli(runner, state_dir, "plan", "--detailed-exitcode", str(playbook))
    assert plan.exit_code == 3
    assert "Held for a dual-role decision (1)" in plan.output
    assert "? P1: dual role: the policy holds every match" in plan.output
    applied = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "held: P1 is skipped until decided" in applied.output
    assert [u["userPrincipalName"] for u in politicians(state_dir)] == ["bo.ek@politiker.example-region.se"]


def test_a_decision_overrides_the_policy(runner: CliRunner, state_dir: Path,
                                         setup: Callable[..., Path]) -> None:
    playbook = setup(f"P1,Karin,Lindqvist,Kulturnämnden,,,E1,{PNR}\n", policy="review",
                     decisions="P1,new,,Eva (HR),not the same Karin\n")
    employee(state_dir, "Karin", "Lindqvist", employeeId="E1", pnr=PNR)
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(playbook)).exit_code == 2
    row = report(runner, state_dir, playbook)["P1"]
    assert row["applies"].endswith("decisions.csv:2)")
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    [official] = politicians(state_dir)
    assert official["onPremisesExtensionAttributes"]["extensionAttribute14"] is None


def test_decision_file_errors_name_their_line(runner: CliRunner, state_dir: Path,
                                              setup: Callable[..., Path]) -> None:
    playbook = setup("P1,Bo,Ek,Kulturnämnden,,,,\n",
                     decisions="P9,new,,Eva,\nP1,adopt,,Eva,\nP1,use_existing,,Eva,\n")
    result = cli(runner, state_dir, "plan", str(playbook))
    assert result.exit_code == 1
    assert "decisions.csv:2: person_id: 'P9' is not in the roster" in result.output
    assert "decisions.csv:3: decision: 'adopt' is not one of new, separate_account, use_existing" \
        in result.output
    assert "decisions.csv:4: user_id: use_existing needs the id of the account to use" in result.output


def test_the_report_never_shows_a_personnummer(runner: CliRunner, state_dir: Path,
                                               setup: Callable[..., Path]) -> None:
    playbook = setup(f"P1,Sara,Ek,Kulturnämnden,,,,{PNR}\n")
    employee(state_dir, "Sara", "Nilsson", pnr=PNR)
    for fmt in ("table", "json", "csv"):
        out = cli(runner, state_dir, "dual-roles", "--format", fmt, str(playbook)).output
        assert "P1" in out and "9876" not in out and "811218" not in out


def test_a_missing_hash_key_is_an_error_not_a_silent_new_account(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    playbook = setup(f"P1,Sara,Ek,Kulturnämnden,,,,{PNR}\n")
    monkeypatch.delenv("TEST_PNR_KEY")
    result = cli(runner, state_dir, "plan", str(playbook))
    assert result.exit_code == 1 and "TEST_PNR_KEY is not set" in result.output
