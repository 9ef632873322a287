"""First sign-in without a password in the open, and personal guides before each cohort."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.sandbox import Tenant
from provisioner.steps.guide import render

from .conftest import cli, reopen

ROSTER = """\
person_id,given_name,surname,role,body,private_email,device_model,employee_id
P1,Åsa,O'Brien,ledamot,Kulturnämnden,asa@example.org,iPhone 12,
P2,Karin,Lindqvist,ledamot,Regionstyrelsen,,iPad,E10001
P3,Bo,Ek,ersättare,Kulturnämnden,,,
"""
PLAYBOOK = """\
name: guides
roster: roster.csv
domain: politiker.example-region.se
naming: {{mail_nickname: "pol.{{upn_local}}"}}
license: {{sku: ENTERPRISEPACK}}
dual_role: {{policy: separate_account}}
access_pass: {{method: {method}, lifetime_minutes: 480}}
guide: {{language: {language}, delivery: {delivery}, sender: lathundar@example-region.se, lead_days: 3,
        organisation: Region Exempel, help: "IT-supporten: 010-123 45 67, support@example-region.se"}}
steps: [account, license, access_pass, guide]
{cohorts}
"""




@pytest.fixture
def setup(tmp_path: Path, make_sandbox: Callable[..., Tenant]) -> Callable[..., Path]:
    make_sandbox(employees=20)

    def write(method: str = "temporary_access_pass", language: str = "sv",
              delivery: str = "print", cohorts: str = "") -> Path:
        (tmp_path / "roster.csv").write_text(ROSTER, encoding="utf-8")
        path = tmp_path / "pb.yaml"
        path.write_text(PLAYBOOK.format(method=method, language=language, delivery=delivery,
                                        cohorts=cohorts), encoding="utf-8")
        return path
    return write


def guide_file(state_dir: Path, pid: str, cohort: str = "all") -> Path:
    return state_dir / "guides" / "guides" / cohort / f"{pid}.html"


def secret_in(path: Path) -> str:
    match = re.search(r'class="secret">([^<]+)<', path.read_text(encoding="utf-8"))
    assert match, path
    return match.group(1)


def test_a_pass_is_issued_and_appears_once_in_the_guide_and_nowhere_else(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup()
    result = runner.invoke(main, ["--state-dir", str(state_dir), "-vv", "--log-format", "json",
                                  "apply", "--yes", str(playbook)])
    assert result.exit_code == 0, result.output
    passes = {pid: secret_in(guide_file(state_dir, pid)) for pid in ("P1", "P2", "P3")}
    for pid, secret in passes.items():
        assert guide_file(state_dir, pid).read_text(encoding="utf-8").count(secret) == 1
        assert guide_file(state_dir, pid).stat().st_mode & 0o077 == 0  # owner-only
        assert secret not in result.output
        for path in state_dir.rglob("*"):
            if path.is_file() and path != guide_file(state_dir, pid):
                assert secret.encode() not in path.read_bytes(), (pid, path)
    users = {u["userPrincipalName"]: u for u in reopen(state_dir).users.values()}
    assert users["asa.obrien@politiker.example-region.se"]["_tap"]["isUsableOnce"] is True


def test_a_second_apply_issues_no_new_pass(runner: CliRunner, state_dir: Path,
                                           setup: Callable[..., Path]) -> None:
    playbook = setup()
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    before = secret_in(guide_file(state_dir, "P1"))
    again = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert "No changes" in again.output
    assert secret_in(guide_file(state_dir, "P1")) == before


def test_rolling_back_a_cohort_removes_its_printed_guides(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(cohorts="cohorts: [{name: a, select: {person_id: [P3]}},"
                             " {name: b, select: {rest: true}}]")
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    path = guide_file(state_dir, "P3", "a")
    assert path.exists()
    result = cli(runner, state_dir, "rollback", "--cohort", "a", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    assert not path.exists()
    assert json.loads((path.parent / "index.json").read_text()) == []


def test_rollback_revokes_a_pass_on_an_account_that_stays(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup()
    text = playbook.read_text(encoding="utf-8")
    playbook.write_text(text.replace("steps: [account, license, access_pass, guide]",
                                     "steps: [account, license]"), encoding="utf-8")
    cli(runner, state_dir, "apply", "--yes", str(playbook))  # the accounts exist first
    playbook.write_text(text, encoding="utf-8")
    second = cli(runner, state_dir, "apply", "--yes", str(playbook))
    run_id = re.search(r"Run (\S+) is in the journal", second.output).group(1)  # type: ignore[union-attr]
    undo = cli(runner, state_dir, "rollback", "--run", run_id, "--yes", str(playbook))
    assert undo.exit_code == 0, undo.output
    assert "- delete access-pass:asa.obrien@politiker.example-region.se  [P1]" in undo.output
    users = {u["userPrincipalName"]: u for u in reopen(state_dir).users.values()}
    assert "_tap" not in users["asa.obrien@politiker.example-region.se"]
    assert not guide_file(state_dir, "P1").exists()


def test_email_delivery_is_one_way_and_sends_through_graph(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(delivery="email")
    doc = json.loads(cli(runner, state_dir, "plan", "--json", str(playbook)).output)
    guides = {c["target"]: c["reversibility"] for c in doc["changes"] if c["step"] == "guide"}
    assert guides["guide:P1"] == "one-way" and guides["guide:P3"] == "reversible"  # no private e-mail
    plan = cli(runner, state_dir, "plan", str(playbook))
    assert "Note: 1 one-way changes cannot be undone by rollback (guide)." in plan.output
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    sent = list(reopen(state_dir).store.values("sentMail"))
    assert [m["to"] for m in sent] == [["asa@example.org"]]
    assert "content" not in json.dumps(sent)  # the sandbox keeps the envelope only


def _mailed_and_printed(state_dir: Path) -> tuple[str, str]:
    import hashlib

    (sent,) = reopen(state_dir).store.values("sentMail")
    printed = guide_file(state_dir, "P1").read_text(encoding="utf-8")
    return sent["bodySha256"], hashlib.sha256(printed.encode()).hexdigest()


def test_an_e_mailed_guide_does_not_carry_the_pass(runner: CliRunner, state_dir: Path,
                                                  setup: Callable[..., Path]) -> None:
    """A pass is a credential: by default only the printed guide holds it; the e-mail says it
    comes on paper or by SMS."""
    playbook = setup(delivery="email")
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    mailed, printed = _mailed_and_printed(state_dir)
    assert mailed != printed
    from provisioner.steps.guide import render

    data = {"language": "sv", "upn": "a@b", "given": "Åsa", "name": "Åsa O'Brien", "delivery": "email"}
    assert "på papper eller via SMS" in render(data, {}, elsewhere=True)
    assert "på papper eller via SMS" not in render(data, {"access_pass": "X"})


def test_mailing_the_pass_is_explicit_and_warned_about(runner: CliRunner, state_dir: Path,
                                                      setup: Callable[..., Path]) -> None:
    playbook = setup(delivery="email")
    playbook.write_text(playbook.read_text(encoding="utf-8").replace(
        "lead_days: 3,", "lead_days: 3, email_access_pass: true,"), encoding="utf-8")
    plan = cli(runner, state_dir, "plan", str(playbook))
    assert "guide.email_access_pass: Temporary Access Passes are e-mailed to private addresses" in plan.output
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    mailed, printed = _mailed_and_printed(state_dir)
    assert mailed == printed


def test_the_password_fallback_is_shown_in_the_guide_and_is_one_way(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(method="password")
    plan = cli(runner, state_dir, "plan", str(playbook))
    assert "access-pass:asa.obrien@politiker.example-region.se  [P1]  (one-way)" in plan.output
    cli(runner, state_dir, "apply", "--yes", str(playbook))
    text = guide_file(state_dir, "P1").read_text(encoding="utf-8")
    assert "Tillfälligt lösenord" in text and "Temporary Access Pass" not in text


def test_a_cohort_without_guides_delivered_in_time_is_held(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    soon = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    playbook = setup(cohorts=f"cohorts: [{{name: all-at-once, select: {{rest: true}}, starts: {soon}}}]")
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 4, result.output
    assert "Cohort all-at-once: held" in result.output
    assert "guides             fail  3 people have no guide delivered 3 days before the cohort starts" \
        in result.output
    assert "P1: guide: not delivered by" in result.output
    assert not any(u["userPrincipalName"].endswith("@politiker.example-region.se")
                   for u in reopen(state_dir).users.values())


def test_a_cohort_with_time_to_spare_delivers_its_guides(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    later = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    playbook = setup(cohorts=f"cohorts: [{{name: later, select: {{rest: true}}, starts: {later}}}]")
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    assert "guides             pass  3 of 3 people have their guide" in result.output
    assert later in guide_file(state_dir, "P1", "later").read_text(encoding="utf-8")


@pytest.mark.parametrize("language", ["sv", "en"])
@pytest.mark.parametrize(("device", "expected"), [
    ("iPhone 12", "App Store"), ("iPad mini", "App Store"), ("iPad", "App Store"),
    ("Samsung XCover 5", "Play"), ("", "outlook.office.com"),
])
def test_guides_render_for_every_device_and_language(language: str, device: str, expected: str) -> None:
    data = {"language": language, "upn": "asa.obrien@p.se", "name": "Åsa O'Brien", "given": "Åsa",
            "role": "ledamot", "body": "Kulturnämnden", "device": device, "employee_upn": None,
            "help": "Ring 010-123", "organisation": "Region Exempel", "templates": None,
            "starts": None, "lifetimeInMinutes": 60, "usableOnce": True}
    html = render(data, {"access_pass": "Abc123!x"})
    assert expected in html and "Abc123!x" in html and "Ring 010-123" in html
    assert "O&#39;Brien" in html and "O'Brien" not in html  # escaped
    assert ('lang="sv"' if language == "sv" else 'lang="en"') in html


@pytest.mark.parametrize(("language", "heading"), [("sv", "Du har två konton"),
                                                   ("en", "You have two accounts")])
def test_a_dual_role_guide_explains_the_two_accounts(language: str, heading: str) -> None:
    data = {"language": language, "upn": "karin@politiker.se", "name": "Karin L", "given": "Karin",
            "role": "", "body": "", "device": "", "employee_upn": "karin@region.se", "help": "",
            "organisation": "Region", "templates": None, "starts": None,
            "lifetimeInMinutes": 60, "usableOnce": True}
    html = render(data, {})
    assert heading in html and "karin@region.se" in html


def test_a_regions_own_template_overrides_the_default(tmp_path: Path) -> None:
    (tmp_path / "guide.sv.html.j2").write_text("<p>Hej {{ given }}, {{ access_pass }}</p>", encoding="utf-8")
    data = {"language": "sv", "given": "Bo", "templates": str(tmp_path), "device": ""}
    assert render(data, {"access_pass": "XYZ"}) == "<p>Hej Bo, XYZ</p>"


def test_a_pass_whose_answer_is_lost_waits_for_a_human(runner: CliRunner, state_dir: Path,
                                                       setup: Callable[..., Path]) -> None:
    """The sandbox makes the pass but the answer is lost (504): the tool does not issue another
    on its own; the plan says to settle, and `settle --again` lets the next apply issue one."""
    playbook = setup()
    text = playbook.read_text(encoding="utf-8")
    playbook.write_text(text.replace("steps: [account, license, access_pass, guide]",
                                     "steps: [account, license]"), encoding="utf-8")
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    playbook.write_text(text, encoding="utf-8")
    t = reopen(state_dir)
    t.store.set_config({"lost_reply_rate": 1.0})  # every write is made, its answer lost
    t.store.close()
    first = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert first.exit_code == 4 and "AmbiguousOutcome" in first.output, first.output  # the gate halts
    t = reopen(state_dir)
    made = sum(1 for u in t.users.values() if u.get("_tap"))
    t.store.set_config({"lost_reply_rate": 0.0})
    t.store.close()
    assert made == 3  # each pass was made once and not asked for again
    plan = json.loads(cli(runner, state_dir, "plan", "--json", str(playbook)).output)
    assert plan["changes"] == []  # nobody gets another pass or guide unasked
    assert [n["person_id"] for n in plan["notes"]] == ["P1", "P2", "P3"]
    assert all(f"provisioner settle PLAYBOOK --person {n['person_id']} --happened` or `--again`"
               in n["note"] for n in plan["notes"])
    assert cli(runner, state_dir, "settle", str(playbook), "--person", "P1", "--again").exit_code == 0
    again = json.loads(cli(runner, state_dir, "plan", "--json", str(playbook)).output)
    assert {(c["action"], c["target"]) for c in again["changes"]} == {
        ("create", "access-pass:asa.obrien@politiker.example-region.se"), ("create", "guide:P1")}
    assert cli(runner, state_dir, "settle", str(playbook), "--person", "P1", "--again").exit_code == 1


def test_a_complete_rollback_with_e_mailed_guides_exits_0(runner: CliRunner, state_dir: Path,
                                                          setup: Callable[..., Path]) -> None:
    """An e-mail that went out cannot be taken back; plan said so. Rollback reports it and
    succeeds: exit 1 is for what could have been undone and was not."""
    playbook = setup(delivery="email")
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    rolled = cli(runner, state_dir, "rollback", "--yes", str(playbook))
    assert rolled.exit_code == 0, rolled.output
    assert "guide:P1: one-way, stays as it is" in rolled.output
    again = cli(runner, state_dir, "rollback", "--yes", str(playbook))
    assert again.exit_code == 0 and "Rollback: nothing to undo." in again.output


def test_a_lost_journal_does_not_resend_guides_without_being_asked(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup(delivery="email")
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        (state_dir / name).unlink(missing_ok=True)  # a new laptop, a wiped state dir
    again = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert again.exit_code == 6
    assert "the journal in this state dir knows nothing of guides, but 3 accounts" in again.output
    assert "send guides again to 3 people who have theirs (P1, P2, P3)" in again.output
    assert len(list(reopen(state_dir).store.values("sentMail"))) == 1
    meant = cli(runner, state_dir, "apply", "--yes", "--reissue", str(playbook))
    assert meant.exit_code == 0, meant.output
    assert len(list(reopen(state_dir).store.values("sentMail"))) == 2


def test_the_journal_knows_which_pass_went_out_with_each_guide(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    import sqlite3

    playbook = setup(delivery="email")
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    db = sqlite3.connect(state_dir / "journal.sqlite")
    rows = dict(db.execute("SELECT person_id, json_extract(before_image, '$.accessPassMethodId')"
                           " FROM changes WHERE step = 'guide' AND state = 'applied'"))
    db.close()
    taps = {u["userPrincipalName"].split("@")[0]: u["_tap"]["id"] for u in reopen(state_dir).users.values()
            if u.get("_tap")}
    assert sorted(rows.values()) == sorted(taps.values()) and len(rows) == 3


# -- guides that say what the sign-in screens say, and what the tenant will let through ----


def test_a_guide_uses_the_sign_in_screens_words_and_never_says_sign_in_as_above(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup()
    playbook.write_text(playbook.read_text(encoding="utf-8").replace(
        "lifetime_minutes: 480}", "lifetime_minutes: 480, usable_once: true}"), encoding="utf-8")
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    text = guide_file(state_dir, "P1").read_text(encoding="utf-8")
    assert "Tillfälligt åtkomstpass" in text and "inloggningskort" not in text
    assert "som ovan" not in text  # a one-time pass does not work twice
    assert "fungerar bara en gång: nästa gång loggar du in med metoden du just lade till" in text
    assert "Har åtkomstpasset gått ut" in text and "kontakta supporten" in text
    # The default tenant offers Microsoft Authenticator to all users: passwordless is true.
    assert "utan lösenord framöver" in text


def test_a_guide_promises_no_passwordless_sign_in_the_tenant_does_not_offer(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup()
    t = reopen(state_dir)  # Authenticator for push only: a second factor, not passwordless
    config = t.method_configuration("MicrosoftAuthenticator")
    config["includeTargets"][0]["authenticationMode"] = "push"
    t.store.put("authenticationMethodConfigurations", config)
    t.store.close()
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    text = guide_file(state_dir, "P1").read_text(encoding="utf-8")
    assert "utan lösenord" not in text
    assert "Lägg till den inloggningsmetod som sidan ber om" in text


def test_no_method_to_register_after_the_pass_fails_preflight(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    playbook = setup()
    cli(runner, state_dir, "sandbox", "break", "authenticator", "disabled")
    result = cli(runner, state_dir, "preflight", "--json", str(playbook))
    assert result.exit_code == 5
    [methods] = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "methods"]
    assert methods["status"] == "FAIL" and "enable Microsoft Authenticator for them" in methods["detail"]


def test_the_guide_names_the_client_conditional_access_will_let_in(
        runner: CliRunner, state_dir: Path, setup: Callable[..., Path]) -> None:
    from provisioner.sandbox.conditional_access import add_policy, policy

    playbook = setup()
    t = reopen(state_dir)
    add_policy(t, policy("Appar kräver hanterad enhet", client_app_types=["mobileAppsAndDesktopClients"],
                         platforms={"includePlatforms": ["iOS", "android"], "excludePlatforms": []},
                         controls=["compliantDevice"]))
    t.store.close()
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    iphone = guide_file(state_dir, "P1").read_text(encoding="utf-8")
    assert "https://outlook.office.com</strong> i webbläsaren på din iPhone 12" in iphone
    assert "App Store" not in iphone
    computer = guide_file(state_dir, "P3").read_text(encoding="utf-8")  # no device: the web anyway
    assert "https://outlook.office.com" in computer


def test_without_such_a_policy_phones_get_outlook(runner: CliRunner, state_dir: Path,
                                                 setup: Callable[..., Path]) -> None:
    playbook = setup()
    assert cli(runner, state_dir, "apply", "--yes", str(playbook)).exit_code == 0
    assert "App Store" in guide_file(state_dir, "P1").read_text(encoding="utf-8")
