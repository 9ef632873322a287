from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import main

EXAMPLE = Path(__file__).parent.parent / "playbooks" / "fritidspolitiker-epost.yaml"


def test_validate_the_example(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "valid. 200 people" in result.output


def test_validate_reports_every_roster_problem_with_file_and_line(runner: CliRunner,
                                                                   tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("person_id;given_name;surname;mobile\nP1;;Ek;\nP2;Bo;Ek;123\n",
                                    encoding="utf-8")
    pb = tmp_path / "pb.yaml"
    pb.write_text("name: t\nroster: r.csv\ndomain: p.se\nsteps: [account]\n", encoding="utf-8")
    result = runner.invoke(main, ["validate", str(pb)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'r.csv'}:2: given_name: required value is empty" in result.output
    assert f"{tmp_path / 'r.csv'}:3: mobile: not a phone number: '123'" in result.output


def test_a_missing_playbook_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read playbook: No such file or directory" in result.output


def test_sandbox_reset_and_show(runner: CliRunner, tmp_path: Path) -> None:
    state = str(tmp_path / "s")
    result = runner.invoke(main, ["--state-dir", state, "sandbox", "reset", "--employees", "25",
                                  "--seed", "3", "--time-scale", "0.5"])
    assert result.exit_code == 0
    assert "25 employees and the guide mailbox lathundar@ (seed 3)" in result.output
    shown = json.loads(runner.invoke(main, ["--state-dir", state, "sandbox", "show", "--json"]).output)
    assert shown["objects"]["users"] == 26  # and the guide mailbox
    assert shown["settings"]["time_scale"] == 0.5
    assert shown["requests"]["mutating"] == 0


def test_state_dir_comes_from_the_environment(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["sandbox", "reset", "--employees", "2"],
                           env={"PROVISIONER_STATE_DIR": str(tmp_path / "env-state")})
    assert result.exit_code == 0
    assert (tmp_path / "env-state" / "sandbox.sqlite").exists()


def test_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    for command in ("validate", "plan", "apply", "sandbox"):
        assert command in result.output


def real_tenant_playbook(tmp_path: Path) -> Path:
    (tmp_path / "r.csv").write_text("person_id,given_name,surname\nP1,Bo,Ek\n", encoding="utf-8")
    pb = tmp_path / "pb.yaml"
    pb.write_text("name: t\nroster: r.csv\ndomain: p.se\nsteps: [account]\ntenant:\n"
                  "  tenant_id: 11111111-2222-3333-4444-555555555555\n"
                  "  client_id: 66666666-7777-8888-9999-000000000000\n"
                  "  client_secret_env: TEST_PROVISIONER_SECRET\n", encoding="utf-8")
    return pb


def test_a_missing_secret_variable_is_named(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["--state-dir", str(tmp_path / "s"), "plan",
                                  str(real_tenant_playbook(tmp_path))],
                           env={"TEST_PROVISIONER_SECRET": ""})
    assert result.exit_code == 1
    assert ("error: tenant.client_secret_env: environment variable TEST_PROVISIONER_SECRET is not"
            " set") in result.output


def test_an_unreachable_entra_is_a_clear_error_without_the_secret(runner: CliRunner,
                                                                   tmp_path: Path) -> None:
    # No machine here reaches Microsoft: sign-in fails at once, and must say so plainly.
    result = runner.invoke(main, ["--state-dir", str(tmp_path / "s"), "plan",
                                  str(real_tenant_playbook(tmp_path))],
                           env={"TEST_PROVISIONER_SECRET": "s3cr3t-value"})
    assert result.exit_code == 1
    assert "error:" in result.output and "Microsoft Entra" in result.output
    assert "s3cr3t-value" not in result.output


@pytest.mark.slow
def test_commands_that_do_not_talk_to_graph_never_import_the_sdk() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from provisioner.cli import main\n"
        f"r = CliRunner().invoke(main, ['validate', {str(EXAMPLE)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "CliRunner().invoke(main, ['--help'])\n"
        "sdk = ('msgraph', 'kiota', 'msal')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(sdk)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_json_is_indented_at_a_terminal_and_one_line_in_a_pipe(tmp_path: Path) -> None:
    """A pipeline reads one line (orjson writes it in C); a person gets it indented."""
    import os
    import subprocess
    import sys

    state = str(tmp_path / "s")
    command = [sys.executable, "-m", "provisioner", "--state-dir", state]
    subprocess.run([*command, "sandbox", "reset", "--employees", "5"], check=True, capture_output=True)
    piped = subprocess.run([*command, "sandbox", "show", "--json"], check=True, capture_output=True,
                           text=True).stdout
    assert piped.count("\n") == 1 and json.loads(piped)
    main_fd, terminal = os.openpty()
    try:
        subprocess.run([*command, "sandbox", "show", "--json"], check=True, stdout=terminal,
                       stderr=subprocess.DEVNULL)
        shown = os.read(main_fd, 1 << 20).decode()
    finally:
        os.close(main_fd)
        os.close(terminal)
    assert shown.count("\n") > 3 and json.loads(shown) == json.loads(piped)
