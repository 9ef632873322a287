"""Movers and leavers: the roster as desired state, with stages, dates and a guard."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.sandbox import Tenant
from provisioner.sandbox.region import officials, roster_csv

from .conftest import ADOPTION_PROP, cli, reopen
from .test_rollback import directory

HEADER = "person_id,given_name,surname,role,body\n"
PEOPLE = {
    "P1": "Anna,Berg,ledamot,Kulturnämnden",
    "P2": "Bo,Ek,ersättare,Kulturnämnden",
    "P3": "Cia,Lund,ledamot,Servicenämnden",
}




def roster(tmp_path: Path, people: dict[str, str]) -> None:
    (tmp_path / "roster.csv").write_text(
        HEADER + "".join(f"{pid},{row}\n" for pid, row in people.items()), encoding="utf-8")


@pytest.fixture
def setup(tmp_path: Path, make_sandbox: Callable[..., Tenant],
          write_playbook: Callable[..., Path]) -> Path:
    make_sandbox()
    playbook = write_playbook(roster="", wait=0)
    playbook.write_text(playbook.read_text(encoding="utf-8") + 'leavers: {auto_reply: "Skriv till'
                        ' registrator@solbacka.se i stället."}\n', encoding="utf-8")
    roster(tmp_path, PEOPLE)
    return playbook


def user(state_dir: Path, upn: str) -> dict[str, Any]:
    t = reopen(state_dir)
    found = {u["userPrincipalName"]: u for u in t.users.values()}.get(upn)
    groups = sorted(g["displayName"] for g in t.store.values("groups")
                    if found and found["id"] in g["_members"])
    deleted = [u["userPrincipalName"] for u in t.store.values("deletedUsers")]
    t.store.close()
    return {"user": found, "groups": groups, "deleted": deleted}


def test_each_kind_of_move(runner: CliRunner, state_dir: Path, setup: Path, tmp_path: Path) -> None:
    assert cli(runner, state_dir, "apply", "--yes", str(setup)).exit_code == 0
    roster(tmp_path, {"P1": "Anna,Berg,ledamot,Servicenämnden",      # another committee
                      "P2": "Bo,Ek,ledamot,Kulturnämnden",           # substitute becomes member
                      "P3": "Cia,Lund-Holm,ledamot,Servicenämnden"})  # married
    plan = cli(runner, state_dir, "-v", "plan", str(setup))
    assert ("- remove anna.berg@politiker.example-region.se"
            " from group Politiker Kulturnämnden") in plan.output
    assert ("+ add    anna.berg@politiker.example-region.se"
            " to group Politiker Servicenämnden") in plan.output
    assert 'jobTitle: "ersättare" -> "ledamot"' in plan.output
    assert 'displayName: "Cia Lund" -> "Cia Lund-Holm"' in plan.output
    assert "! P3: name change: the address stays cia.lund@politiker.example-region.se" in plan.output
    assert cli(runner, state_dir, "apply", "--yes", str(setup)).exit_code == 0
    anna = user(state_dir, "anna.berg@politiker.example-region.se")
    assert anna["groups"] == ["Förtroendevalda", "Politiker Servicenämnden"]
    assert anna["user"]["department"] == "Servicenämnden"
    assert user(state_dir, "bo.ek@politiker.example-region.se")["user"]["jobTitle"] == "ledamot"
    assert user(state_dir, "cia.lund@politiker.example-region.se")["user"]["surname"] == "Lund-Holm"
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(setup)).exit_code == 0


@pytest.mark.slow
def test_a_leaver_goes_through_every_stage_on_its_dates(runner: CliRunner, state_dir: Path,
                                                        setup: Path, tmp_path: Path) -> None:
    cli(runner, state_dir, "apply", "--yes", str(setup))
    roster(tmp_path, {k: v for k, v in PEOPLE.items() if k != "P3"})
    today = dt.datetime.now(dt.UTC)
    first = cli(runner, state_dir, "apply", "--yes", str(setup))
    assert first.exit_code == 0, first.output
    cia = user(state_dir, "cia.lund@politiker.example-region.se")
    assert cia["user"]["accountEnabled"] is False and cia["groups"] == []
    reply = cia["user"]["_mailboxSettings"]["automaticRepliesSetting"]
    assert reply["status"] == "alwaysEnabled" and "registrator@" in reply["internalReplyMessage"]
    licence_day = (today + dt.timedelta(days=30)).date()
    plan = cli(runner, state_dir, "plan", "--detailed-exitcode", str(setup))
    assert plan.exit_code == 0  # nothing due yet
    assert (f"scheduled: P3 cia.lund@politiker.example-region.se: remove licence on {licence_day}"
            in plan.output)
    later = (today + dt.timedelta(days=31)).isoformat()
    second = cli(runner, state_dir, "apply", "--yes", str(setup), now=later)
    assert "- delete license:cia.lund@politiker.example-region.se:ENTERPRISEPACK" in second.output
    assert user(state_dir, "cia.lund@politiker.example-region.se")["user"]["assignedLicenses"] == []
    last = (today + dt.timedelta(days=91)).isoformat()
    third = cli(runner, state_dir, "apply", "--yes", str(setup), now=last)
    assert "- delete user:cia.lund@politiker.example-region.se  [P3]" in third.output
    assert user(state_dir, "cia.lund@politiker.example-region.se")["deleted"] == [
        "cia.lund@politiker.example-region.se"]
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(setup), now=last).exit_code == 0


def test_rollback_of_a_leaver_stage_restores_the_person(runner: CliRunner, state_dir: Path,
                                                        setup: Path, tmp_path: Path) -> None:
    cli(runner, state_dir, "apply", "--yes", str(setup))
    before = directory(state_dir)
    roster(tmp_path, {k: v for k, v in PEOPLE.items() if k != "P3"})
    stage = cli(runner, state_dir, "apply", "--yes", str(setup))
    run_id = re.search(r"Run (\S+) is in the journal", stage.output).group(1)  # type: ignore[union-attr]
    undo = cli(runner, state_dir, "rollback", "--run", run_id, "--yes", str(setup))
    assert undo.exit_code == 0, undo.output
    after = directory(state_dir)
    assert after["users"]["cia.lund@politiker.example-region.se"] == \
        before["users"]["cia.lund@politiker.example-region.se"], undo.output
    assert after == before


def test_an_unmanaged_account_with_the_same_name_is_never_touched(
        runner: CliRunner, state_dir: Path, setup: Path, tmp_path: Path) -> None:
    t = reopen(state_dir)
    employee = t.create_user({"accountEnabled": True, "displayName": "Cia Lund", "givenName": "Cia",
                              "surname": "Lund", "mailNickname": "cia.lund",
                              "userPrincipalName": "cia.lund@example-region.se",
                              "passwordProfile": {"password": "Xy!12345abcd"}})
    t.store.close()
    cli(runner, state_dir, "apply", "--yes", str(setup))
    roster(tmp_path, {k: v for k, v in PEOPLE.items() if k != "P3"})
    cli(runner, state_dir, "apply", "--yes", str(setup), now=(dt.datetime.now(dt.UTC)
                                                               + dt.timedelta(days=100)).isoformat())
    cli(runner, state_dir, "apply", "--yes", str(setup), now=(dt.datetime.now(dt.UTC)
                                                               + dt.timedelta(days=200)).isoformat())
    still = user(state_dir, "cia.lund@example-region.se")["user"]
    assert still is not None and still["accountEnabled"] is True and still["id"] == employee["id"]


@pytest.mark.slow
def test_a_truncated_roster_trips_the_guard(runner: CliRunner, state_dir: Path,
                                            make_sandbox: Callable[..., Tenant],
                                            write_playbook: Callable[..., Path], tmp_path: Path) -> None:
    make_sandbox()
    playbook = write_playbook(25, wait=0)
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    (tmp_path / "roster.csv").write_text(roster_csv(officials(2, 2026)), encoding="utf-8")
    refused = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert refused.exit_code == 6
    assert ("this apply would disable, unlicense or delete 23 people, more than the threshold of 20"
            in refused.output)
    assert "P00003 (leila.haddad@politiker.example-region.se)" in refused.output
    assert "--allow-mass-change 23" in refused.output
    assert reopen(state_dir).users  # nothing was changed
    wrong = cli(runner, state_dir, "apply", "--yes", "--allow-mass-change", "5", str(playbook))
    assert wrong.exit_code == 6 and "--allow-mass-change 5 does not match" in wrong.output
    meant = cli(runner, state_dir, "apply", "--yes", "--allow-mass-change", "23", str(playbook))
    assert meant.exit_code == 0, meant.output


def test_a_dual_role_leaver_keeps_the_employee_account(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant], tmp_path: Path) -> None:
    make_sandbox()
    (tmp_path / "roster.csv").write_text(
        "person_id,given_name,surname,body,employee_id\nP1,Karin,Lindqvist,Kulturnämnden,E10001\n"
        "P2,Bo,Ek,Kulturnämnden,\n", encoding="utf-8")
    playbook = tmp_path / "pb.yaml"
    playbook.write_text("name: adopt\nroster: roster.csv\ndomain: politiker.example-region.se\n"
                        "naming: {mail_nickname: 'pol.{upn_local}'}\n"
                        "groups: [Förtroendevalda, 'Politiker {body}']\nsteps: [account, groups]\n"
                        "dual_role: {policy: use_existing}\n", encoding="utf-8")
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    karin = user(state_dir, "karin.lindqvist@example-region.se")
    assert "Förtroendevalda" in karin["groups"]
    (tmp_path / "roster.csv").write_text("person_id,given_name,surname,body,employee_id\n"
                                         "P2,Bo,Ek,Kulturnämnden,\n", encoding="utf-8")
    for days in (0, 100, 200):
        cli(runner, state_dir, "apply", "--yes", str(playbook),
            now=(dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat())
    after = user(state_dir, "karin.lindqvist@example-region.se")
    assert after["user"]["accountEnabled"] is True
    assert after["user"]["assignedLicenses"] == karin["user"]["assignedLicenses"]
    assert after["groups"] == ["Alla anställda"]  # only what the official role added is gone
    assert after["user"][ADOPTION_PROP] is None
