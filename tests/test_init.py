"""`provisioner init`: a municipality's first day. The files it writes pass `validate`, and with
only the roster filled in they take a sandbox from nothing to a completed staged rollout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.playbook import load_playbook

from .conftest import cli, reopen

FLAGS = ("init", "--organisation", "Solbacka kommun", "--domain", "politiker.solbacka.se",
         "--sku", "EXCHANGESTANDARD", "--bodies", "Kommunstyrelsen, Barn- och utbildningsnämnden", "--yes")
ROSTER = """\
S001;Annika;Sjöberg;ordförande;Kommunstyrelsen;+46701230001;;;
S002;Björn;Åkesson;ledamot;Kommunstyrelsen;+46701230002;;;
S003;Cecilia;Nordin;ersättare;Barn- och utbildningsnämnden;+46701230003;cecilia@example.com;;
S004;David;Lindgren;ordförande;Barn- och utbildningsnämnden;+46701230004;;;
S005;Elin;Östlund;ledamot;Kommunfullmäktige;+46701230005;;;
"""


def _init(runner: CliRunner, state_dir: Path, folder: Path, *extra: str) -> Path:
    result = cli(runner, state_dir, *FLAGS, "--dir", str(folder), *extra)
    assert result.exit_code == 0, result.output
    return folder / "solbacka-kommun-epost.yaml"


def test_init_writes_files_validate_accepts_and_no_example_names(runner: CliRunner, state_dir: Path,
                                                                   tmp_path: Path) -> None:
    playbook = _init(runner, state_dir, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names == ["solbacka-kommun-dual-role-decisions.csv", "solbacka-kommun-epost.yaml",
                     "solbacka-kommun-roster-excel.csv", "solbacka-kommun-roster.csv"]
    assert (tmp_path / "solbacka-kommun-roster-excel.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    valid = cli(runner, state_dir, "validate", "--json", str(playbook))
    assert valid.exit_code == 0 and json.loads(valid.output)["people"] == 0
    pb = load_playbook(playbook)
    assert pb.groups.create and pb.section("guide").organisation == "Solbacka kommun"
    assert [c.name for c in pb.cohorts] == ["kommunstyrelsen", "barn-och-utbildningsnamnden", "ovriga"]
    for path in tmp_path.iterdir():
        if path.is_file():
            assert "Exempel" not in path.read_text(encoding="utf-8-sig")
            assert "example-region" not in path.read_text(encoding="utf-8-sig")


def test_init_overwrites_nothing_and_without_a_terminal_says_what_is_missing(
        runner: CliRunner, state_dir: Path, tmp_path: Path) -> None:
    playbook = _init(runner, state_dir, tmp_path)
    before = playbook.read_text(encoding="utf-8")
    again = cli(runner, state_dir, *FLAGS, "--dir", str(tmp_path))
    assert again.exit_code == 1 and "init writes nothing over existing files" in again.output
    assert playbook.read_text(encoding="utf-8") == before
    missing = cli(runner, state_dir, "init", "--yes", "--dir", str(tmp_path / "new"))
    assert missing.exit_code == 1 and "the organisation's name" in missing.output


@pytest.mark.slow
def test_from_nothing_to_a_completed_staged_rollout_with_only_the_roster_filled_in(
        runner: CliRunner, state_dir: Path, tmp_path: Path) -> None:
    playbook = _init(runner, state_dir, tmp_path)
    roster = tmp_path / "solbacka-kommun-roster.csv"
    roster.write_text(roster.read_text(encoding="utf-8") + ROSTER, encoding="utf-8")
    env = {"PROVISIONER_PNR_KEY": "a-key"}
    for command in (("sandbox", "reset", "--employees", "40", "--mailbox-delay", "0"),
                    ("sandbox", "add-domain", "politiker.solbacka.se"),
                    ("sandbox", "grant", "Group.ReadWrite.All")):
        assert cli(runner, state_dir, *command).exit_code == 0
    first = cli(runner, state_dir, "apply", "--yes", "--json", str(playbook), **env)
    assert first.exit_code == 8, first.output  # the first committee waits for its approval
    doc = json.loads(first.output)
    assert [c["cohort"] for c in doc["cohorts"]] == ["(groups)", "kommunstyrelsen"]
    assert cli(runner, state_dir, "approve", str(playbook), "--cohort", "kommunstyrelsen").exit_code == 0
    rest = cli(runner, state_dir, "apply", "--yes", "--all", "--json", str(playbook), **env)
    assert rest.exit_code == 0, rest.output
    assert json.loads(rest.output)["next_step"] == ("Every cohort has passed its gates."
                                                    " The rollout is complete.")
    tenant = reopen(state_dir)
    groups = {g["displayName"]: g for g in tenant.store.values("groups")}
    assert len(groups["Förtroendevalda Solbacka kommun"]["_members"]) == 6  # five and a canary
    licensed = groups["Licens förtroendevalda Solbacka kommun"]
    assert licensed["assignedLicenses"] and len(licensed["_members"]) == 6
    officials = [u for u in tenant.users.values()
                 if u["userPrincipalName"].endswith("@politiker.solbacka.se")]
    assert len(officials) == 6 and all(u["assignedLicenses"] for u in officials)
