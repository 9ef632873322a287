"""Approvals that mean something: only for an applied cohort, only by its approvers, and with
four eyes not by whoever applied it; on a real tenant as the signed-in Entra user."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.cohort_state import CohortState
from provisioner.journal import Journal

from .conftest import ENTRA_CLIENT, ENTRA_TENANT, LOGIN, cli

RULE = "gates: {max_failure_ratio: 0, approval: {approvers: [ann, eva], distinct_from_applier: true}}"


@pytest.fixture
def gated(make_sandbox: Callable[..., Any], write_playbook: Callable[..., Path]) -> Path:
    make_sandbox()
    path = write_playbook(3)
    cohorts = f"cohorts:\n  - name: pilot\n    select: {{rest: true}}\n    {RULE}\n"
    path.write_text(path.read_text(encoding="utf-8") + cohorts, encoding="utf-8")
    return path


def as_user(runner: CliRunner, state_dir: Path, user: str, *args: str) -> Any:
    return cli(runner, state_dir, *args, LOGNAME=user, USER=user)


def test_a_cohort_not_applied_has_nothing_to_approve(runner: CliRunner, state_dir: Path, gated: Path) -> None:
    result = as_user(runner, state_dir, "ann", "approve", str(gated), "--cohort", "pilot")
    assert result.exit_code == 1 and "cohort pilot has not been applied" in result.output


def test_only_an_approver_who_did_not_apply_it_may_approve(runner: CliRunner, state_dir: Path,
                                                           gated: Path) -> None:
    applied = as_user(runner, state_dir, "ann", "apply", "--yes", str(gated))
    assert applied.exit_code == 8, applied.output  # awaiting approval
    stranger = as_user(runner, state_dir, "bo", "approve", str(gated), "--cohort", "pilot")
    assert stranger.exit_code == 1 and "bo may not approve cohort pilot: its approvers are ann, eva" \
        in stranger.output
    herself = as_user(runner, state_dir, "ann", "approve", str(gated), "--cohort", "pilot")
    assert herself.exit_code == 1 and "ann applied cohort pilot and may not approve it too" in herself.output
    assert as_user(runner, state_dir, "eva", "approve", str(gated), "--cohort", "pilot").exit_code == 0
    done = as_user(runner, state_dir, "ann", "apply", "--yes", str(gated))
    assert done.exit_code == 0 and "approval           pass  approved by eva" in done.output
    records = [json.loads(x) for x in (state_dir / "audit.jsonl").read_text().splitlines()]
    [approval] = [r for r in records if r["event"] == "approval"]
    assert (approval["approved_by"], approval["identity"]) == ("eva", "os-user")


def test_the_gate_does_not_count_an_approval_written_past_the_command(
        runner: CliRunner, state_dir: Path, gated: Path) -> None:
    as_user(runner, state_dir, "ann", "apply", "--yes", str(gated))
    with Journal(state_dir) as journal:  # someone with write access to the state dir
        journal.approve("test-officials", "pilot", "ann", "by hand")
    again = as_user(runner, state_dir, "ann", "apply", "--yes", str(gated))
    assert again.exit_code == 8
    assert "not counted: ann applied the cohort and may not approve it too" in again.output


TENANT, CLIENT = ENTRA_TENANT, ENTRA_CLIENT


def real_tenant_playbook(folder: Path) -> Path:
    """A playbook on a real tenant whose one cohort has the approval rule above."""
    (folder / "r.csv").write_text("person_id,given_name,surname\np1,Anna,Berg\n", encoding="utf-8")
    playbook = folder / "real.yaml"
    playbook.write_text(
        f"name: real\nroster: r.csv\ndomain: p.se\nsteps: [account]\ntenant: {{tenant_id: {TENANT},"
        f" client_id: {CLIENT}, client_secret_env: X}}\ncohorts:\n  - name: pilot\n"
        f"    select: {{rest: true}}\n    {RULE}\n", encoding="utf-8")
    return playbook


def id_token(**claims: Any) -> str:
    """An id token as Entra returns it (MSAL reads its claims; the signature is Entra's)."""
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    now = int(time.time())
    body = {"aud": CLIENT, "iss": f"{LOGIN}/v2.0", "tid": TENANT, "iat": now, "nbf": now, "exp": now + 3600,
            "oid": "00000000-0000-0000-0000-0000000000aa", "sub": "s", "ver": "2.0", **claims}
    return f"{part({'typ': 'JWT', 'alg': 'RS256', 'kid': 'k'})}.{part(body)}.c2lnbmF0dXJl"


def test_on_a_real_tenant_the_approver_is_the_signed_in_entra_user(
        runner: CliRunner, state_dir: Path, tmp_path: Path, entra: Any) -> None:
    """learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code: the device code
    answer, then the token answer with the id token whose preferred_username is recorded."""
    playbook = real_tenant_playbook(tmp_path)
    with Journal(state_dir) as journal:
        journal.set_cohort_state("real", "pilot", CohortState.APPLYING, applied=True)
    entra.post(f"{LOGIN}/oauth2/v2.0/devicecode").respond(json={
        "device_code": "dc", "user_code": "ABCD-EFGH", "verification_uri": "https://microsoft.com/devicelogin",
        "expires_in": 900, "interval": 1,
        "message": "To sign in, open https://microsoft.com/devicelogin and enter ABCD-EFGH."})
    entra.token.respond(json={
        "token_type": "Bearer", "scope": "User.Read", "expires_in": 3599, "access_token": "a",
        "refresh_token": "r", "id_token": id_token(preferred_username="eva@region.se", name="Eva"),
        "client_info": base64.urlsafe_b64encode(json.dumps(
            {"uid": "u", "utid": TENANT}).encode()).decode().rstrip("=")})
    wrong = cli(runner, state_dir, "--auth", "device-code", "approve", str(playbook), "--cohort", "pilot")
    assert wrong.exit_code == 1 and "eva@region.se may not approve cohort pilot" in wrong.output
    text = playbook.read_text(encoding="utf-8")
    playbook.write_text(text.replace("[ann, eva]", "[Eva@Region.se]"), encoding="utf-8")
    result = cli(runner, state_dir, "--auth", "device-code", "approve", str(playbook),
                 "--cohort", "pilot")
    assert result.exit_code == 0, result.output
    assert "enter ABCD-EFGH" in result.output and "approved by eva@region.se" in result.output
    records = [json.loads(x) for x in (state_dir / "audit.jsonl").read_text().splitlines()]
    [approval] = [r for r in records if r["event"] == "approval"]
    assert (approval["approved_by"], approval["identity"]) == ("eva@region.se", "entra")


def test_on_a_real_tenant_named_approvers_need_a_sign_in(runner: CliRunner, state_dir: Path,
                                                         tmp_path: Path) -> None:
    playbook = real_tenant_playbook(tmp_path)
    result = as_user(runner, state_dir, "eva", "approve", str(playbook), "--cohort", "pilot")
    assert result.exit_code == 1 and "--auth device-code approve" in result.output
