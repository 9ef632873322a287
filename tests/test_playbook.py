from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import PlaybookError
from provisioner.playbook import load_playbook

EXAMPLE = Path(__file__).parent.parent / "playbooks" / "fritidspolitiker-epost.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pb.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = "name: t\nroster: r.csv\ndomain: politiker.example.se\nsteps: [account]\n"


def test_the_example_playbook_is_valid() -> None:
    playbook = load_playbook(EXAMPLE)
    assert playbook.steps == ("account", "license", "groups", "mailbox_settings", "access_pass",
                              "guide")
    assert playbook.naming_policy.domain == "politiker.example-region.se"
    assert playbook.roster_path == EXAMPLE.parent / "fritidspolitiker-roster.csv"


def test_unknown_keys_are_errors_naming_their_path(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "license: {sku: E3, disabled_plan: []}\nmailbox: {}\n")
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert err.value.problems == [
        f"{path}:5:20: license.disabled_plan: unknown key; did you mean 'disabled_plans'?",
        f"{path}:6:1: mailbox: unknown key; did you mean 'mailbox_settings'?"]


def test_a_playbook_error_names_its_line_and_column_and_says_what_is_wanted_in_words(
        tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "licence: {sku: E3}\naccount:\n  usage_location: se\n"
                 "cohorts:\n  - name: Presidium\n    select: {rest: true}\n")
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert err.value.problems == [
        f"{path}:5:1: licence: unknown key; did you mean 'license'?",
        f"{path}:7:19: account.usage_location must be two capital letters, like SE (not 'se')",
        f"{path}:9:11: cohorts.0.name must be lower-case letters, digits, - and _ (at most 63),"
        " like presidium (not 'Presidium')"]


def test_a_guide_without_the_organisations_name_and_help_is_refused(tmp_path: Path) -> None:
    """No default speaks for an organisation: the guides' name and help come from the playbook."""
    path = write(tmp_path, BASE.replace("steps: [account]", "steps: [account, access_pass, guide]")
                 + "guide: {delivery: print}\n")
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert [p.split(": ", 1)[1] for p in err.value.problems] == [
        "guide.help: required key is missing (every guide says where to get help: e.g. help:"
        ' "Servicedesk: 0660-88 000")',
        "guide.organisation: required key is missing (the guides speak for it: e.g. organisation:"
        " Solbacka kommun)"]


def test_an_unknown_key_far_from_any_known_one_gets_no_guess(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "colour: blue\n")
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert err.value.problems == [f"{path}:5:1: colour: unknown key"]


def test_a_secret_in_the_file_is_refused_with_the_way_to_do_it(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("steps", "tenant: {tenant_id: t, client_id: c,"
                                               " client_secret: hunter2}\nsteps"))
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert "tenant.client_secret: unknown key (secrets are never read from the playbook:" \
           " use client_secret_env)" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_a_listed_step_needs_its_section(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("[account]", "[account, license]"))
    with pytest.raises(PlaybookError, match="`license` is listed but the `license` section is missing"):
        load_playbook(path)


def test_account_must_come_first(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("[account]", "[groups, account]") + "groups: [G]\n")
    with pytest.raises(PlaybookError, match="`account` must come first"):
        load_playbook(path)


def test_an_unknown_placeholder_in_a_template_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'naming: {upn: "{given}.{lastname}"}\n')
    with pytest.raises(PlaybookError, match=r"naming.upn: unknown placeholder \{lastname\}"):
        load_playbook(path)


def test_a_upn_domain_that_differs_from_domain_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'naming: {upn: "{given}@other.se"}\n')
    with pytest.raises(PlaybookError, match="its domain differs from `domain`"):
        load_playbook(path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "groups: [a, b\n")
    with pytest.raises(PlaybookError, match=rf"{path}:\d+: not valid YAML"):
        load_playbook(path)


def test_a_real_tenant_needs_exactly_one_credential(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("steps", "tenant: {tenant_id: t, client_id: c}\nsteps"))
    with pytest.raises(PlaybookError, match="give exactly one of certificate, client_secret_env, federated"):
        load_playbook(path)


@pytest.mark.parametrize(("setting", "said"), [
    ("language: sv_SE", "mailbox_settings.language: 'sv_SE' is not a language Exchange sets a mailbox"
                        " to (a culture name like sv-SE); did you mean 'sv-SE'?"),
    ("time_zone: Europe/Stokholm", "mailbox_settings.time_zone: 'Europe/Stokholm' is not a time zone"
                                   " Exchange knows (a Windows name like 'W. Europe Standard Time' or an"
                                   " IANA name like Europe/Stockholm)"),
    ("time_zone: W Europe Standard Time", "did you mean 'W. Europe Standard Time'?"),
])
def test_mailbox_settings_graph_would_refuse_are_refused_by_validate(tmp_path: Path, setting: str,
                                                                     said: str) -> None:
    path = write(tmp_path, BASE.replace("steps: [account]", "steps: [account, license, mailbox_settings]")
                 + "license: {sku: E3}\n" + f"mailbox_settings: {{{setting}}}\n")
    with pytest.raises(PlaybookError) as err:
        load_playbook(path)
    assert len(err.value.problems) == 1 and said in err.value.problems[0]


def test_iana_and_windows_time_zones_and_swedish_finnish_are_accepted(tmp_path: Path) -> None:
    for setting in ("time_zone: Europe/Stockholm", "language: sv-FI", "time_zone: UTC"):
        path = write(tmp_path, BASE.replace("steps: [account]", "steps: [account, license, mailbox_settings]")
                     + "license: {sku: E3}\n" + f"mailbox_settings: {{{setting}}}\n")
        load_playbook(path)
