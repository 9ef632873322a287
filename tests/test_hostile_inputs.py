"""Inputs are data: hostile or broken files get one clear line naming where, never a
traceback, and nothing a spreadsheet would run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.csvout import cell, to_csv
from provisioner.errors import InputError, PlaybookError, RosterError
from provisioner.playbook import load_playbook
from provisioner.roster import load_roster, parse_roster
from provisioner.sandbox import Tenant

HEADER = "person_id,given_name,surname,body\n"


@pytest.mark.parametrize(("name", "shown"), [
    ("Ann\u202eakiM", "U+202E"),      # right-to-left override: shows as "Mika" + "nnA"
    ("Bo\u200bEk", "U+200B"),         # zero-width space
    ("Eva\x00", "U+0000"),            # NUL
    ("Li\u200dsa", "U+200D"),         # zero-width joiner
])
def test_invisible_characters_in_a_name_are_refused_with_file_and_line(name: str, shown: str) -> None:
    with pytest.raises(RosterError) as err:
        parse_roster(f"{HEADER}P1,{name},Berg,KN\n".encode(), "r.csv")
    assert err.value.problems == [f"r.csv:2: given_name: contains the invisible or control character"
                                  f" {shown}; retype the value"]


def test_person_ids_that_differ_only_in_case_are_one_person() -> None:
    with pytest.raises(RosterError) as err:
        parse_roster(f"{HEADER}P00004,Bo,Ek,KN\np00004,Bo,Ek,KN\n".encode(), "r.csv")
    assert err.value.problems == ["r.csv:3: person_id: 'p00004' already used on line 2"]


def test_a_field_over_csvs_limit_is_a_located_error() -> None:
    with pytest.raises(RosterError) as err:
        parse_roster(f"{HEADER}P1,Bo,Ek,{'x' * 200_000}\n".encode(), "r.csv")
    assert err.value.problems[0].startswith("r.csv:2: -: cannot be read as CSV (field larger than")


def test_a_device_is_not_a_roster(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="/dev/zero: not a regular file"):
        load_roster(Path("/dev/zero"))


def test_a_duplicate_playbook_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "pb.yaml"
    path.write_text("name: x\nroster: r.csv\ndomain: d.se\nsteps: [account]\n"
                    "dual_role:\n  policy: review\n  policy: use_existing\n", encoding="utf-8")
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert err.value.problems == [
        f"{path}:7: not valid YAML: the key 'policy' is given twice (first on line 6)"]


@pytest.mark.slow
def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "pb.yaml"
    path.write_text("name: " + "[" * 20_000 + "]" * 20_000 + "\n", encoding="utf-8")
    with pytest.raises(PlaybookError, match="nested too deeply"):
        load_playbook(path)


def test_one_account_cannot_be_adopted_by_two_people(
        runner: CliRunner, state_dir: Path, tmp_path: Path, make_sandbox: Callable[..., Tenant]) -> None:
    tenant = make_sandbox()
    uid = next(u["id"] for u in tenant.users.values() if u.get("employeeId") == "E10001")
    (tmp_path / "roster.csv").write_text(HEADER + "P1,Karin,Lindqvist,KN\nP2,Karin,Lind,KN\n",
                                         encoding="utf-8")
    (tmp_path / "decisions.csv").write_text("person_id,decision,user_id,decided_by,note\n"
                                            f"P1,use_existing,{uid},Eva,\nP2,use_existing,{uid},Eva,\n",
                                            encoding="utf-8")
    playbook = tmp_path / "pb.yaml"
    playbook.write_text("name: adopt\nroster: roster.csv\ndomain: example-region.se\nsteps: [account]\n"
                        "dual_role: {policy: review, decisions: decisions.csv}\n", encoding="utf-8")
    result = runner.invoke(main, ["--state-dir", str(state_dir), "plan", str(playbook)])
    assert result.exit_code == 1
    assert f"decisions.csv:3: user_id: {uid} is already given to P1 (" in result.output
    assert "decisions.csv:2); one account cannot be two people's" in result.output


def test_a_latin1_decisions_file_is_a_located_error(tmp_path: Path) -> None:
    from provisioner.dualrole import load_decisions

    path = tmp_path / "decisions.csv"
    path.write_bytes("person_id,decision,user_id,decided_by,note\nP1,new,,Åsa,\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"decisions.csv:2: not UTF-8"):
        load_decisions(path, {"P1"}, {})


@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://x\")", "+46 70", "-1+1", "@SUM(A1)", "\tx", "\rx"])
def test_a_csv_cell_is_never_a_formula(value: str) -> None:
    """OWASP CSV Injection: a leading = + - @ tab or CR gets a quote in front."""
    assert cell(value) == "'" + value
    assert cell("Åsa O'Brien") == "Åsa O'Brien"


def test_excel_csv_is_bom_semicolons_and_crlf() -> None:
    assert to_csv(["a", "b"], [["=1", "x;y"]], excel=True) == '\ufeffa;b\r\n\'=1;"x;y"\r\n'


def test_a_template_cannot_reach_python(tmp_path: Path) -> None:
    """Jinja2's sandbox: the classic escape through ''.__class__ to os.system is refused."""
    from jinja2.exceptions import SecurityError

    from provisioner.steps.guide import render

    marker = tmp_path / "ran"
    (tmp_path / "guide.sv.html.j2").write_text(
        "{{ ''.__class__.__mro__[1].__subclasses__() }}{{ cycler.__init__.__globals__.os.system('touch "
        + str(marker) + "') }}", encoding="utf-8")
    with pytest.raises(SecurityError):
        render({"language": "sv", "given": "Bo", "templates": str(tmp_path), "device": ""}, {})
    assert not marker.exists()


def test_a_template_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    from provisioner.errors import ConfigurationError
    from provisioner.steps.guide import template_digest

    (tmp_path / "guide.sv.html.j2").write_text("<p>{{ given }}</p>", encoding="utf-8")
    tmp_path.chmod(0o700)
    (tmp_path / "guide.sv.html.j2").chmod(0o600)
    before = template_digest(tmp_path)
    (tmp_path / "guide.sv.html.j2").write_text("<p>Hej {{ given }}</p>", encoding="utf-8")
    assert template_digest(tmp_path) != before  # a saved plan notices the change
    (tmp_path / "guide.sv.html.j2").chmod(0o666)
    with pytest.raises(ConfigurationError, match="can be changed by other users"):
        template_digest(tmp_path)


def test_state_and_saved_plans_are_private_whatever_the_umask(
        runner: CliRunner, state_dir: Path, tmp_path: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    import os

    make_sandbox()
    playbook = write_playbook(2)
    old = os.umask(0o022)
    try:
        base = ["--state-dir", str(state_dir)]
        assert runner.invoke(main, [*base, "apply", "--yes", str(playbook)]).exit_code == 0
        saved = runner.invoke(main, [*base, "plan", "--out", str(tmp_path / "p.json"), str(playbook)])
        assert saved.exit_code == 0
    finally:
        os.umask(old)
    assert state_dir.stat().st_mode & 0o777 == 0o700
    for path in (state_dir / "journal.sqlite", state_dir / "audit.jsonl",
                 state_dir / "sandbox.sqlite", tmp_path / "p.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_a_url_password_never_reaches_the_audit_log() -> None:
    from provisioner.audit import redact_argv

    assert redact_argv(["--graph-url", "http://admin:s3cret@127.0.0.1:8765", "plan"]) == [
        "--graph-url", "http://[redacted]@127.0.0.1:8765", "plan"]


@pytest.mark.parametrize(("line", "said"), [
    ("cohorts:\n  - {name: a, starts: 2026-02-30, select: {rest: true}}\n",
     "a value cannot be read: day is out"),
    ("concurrency: " + "9" * 5000 + "\n", "a value cannot be read: Exceeds the limit"),
])
def test_unreadable_values_are_errors_not_tracebacks(tmp_path: Path, line: str, said: str) -> None:
    path = tmp_path / "pb.yaml"
    path.write_text("name: x\nroster: r.csv\ndomain: d.se\nsteps: [account]\n" + line, encoding="utf-8")
    with pytest.raises(PlaybookError, match=said):
        load_playbook(path)


def test_a_damaged_journal_is_one_clear_error(runner: CliRunner, state_dir: Path,
                                              make_sandbox: Callable[..., Tenant],
                                              write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    playbook = write_playbook(2)
    (state_dir / "journal.sqlite").write_bytes(b"this is not SQLite" * 100)
    result = runner.invoke(main, ["--state-dir", str(state_dir), "plan", str(playbook)])
    assert result.exit_code == 1
    assert "journal.sqlite: not a readable journal (file is not a database)" in result.output
    assert "Traceback" not in result.output


def test_a_name_without_latin_letters_is_said_not_silently_dropped(
        runner: CliRunner, state_dir: Path, tmp_path: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    playbook = write_playbook(roster="person_id,given_name,surname,body\nP1,محمد,Berg,Kulturnämnden\n"
                                     "P2,محمد,Berg,Kulturnämnden\n")
    plan = runner.invoke(main, ["--state-dir", str(state_dir), "plan", str(playbook)])
    assert plan.exit_code == 0, plan.output
    assert ("the given name 'محمد' has no Latin letters and is left out of the address"
            " berg@politiker.example-region.se; an upn_local column in the roster chooses it") in plan.output
    (tmp_path / "roster.csv").write_text("person_id,given_name,surname,body,upn_local\n"
                                         "P1,محمد,Berg,Kulturnämnden,mohammed.berg\n", encoding="utf-8")
    chosen = runner.invoke(main, ["--state-dir", str(state_dir), "plan", str(playbook)])
    assert "user:mohammed.berg@politiker.example-region.se" in chosen.output
    assert "no Latin letters" not in chosen.output
