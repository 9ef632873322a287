"""Device settings through Intune, and the device pilot playbook end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from provisioner.sandbox import Sandbox, reset_tenant

from .conftest import ADOPTION_PROP, cli, reopen

PLAYBOOKS = Path(__file__).parent.parent / "playbooks"




def device_groups(state_dir: Path) -> dict[str, set[str]]:
    """Intune group name → serial numbers of the devices in it."""
    t = reopen(state_dir)
    serial_of = {d["id"]: m["serialNumber"] for d in t.store.values("devices")
                 for m in t.store.values("managedDevices") if m["azureADDeviceId"] == d["deviceId"]}
    out = {g["displayName"]: {serial_of[m] for m in g["_members"] if m in serial_of}
           for g in t.store.values("groups") if g["displayName"].startswith("Intune - ")}
    t.store.close()
    return out


def test_each_model_gets_its_profiles_group_and_category(runner: CliRunner, state_dir: Path,
                                                         pilot: Path) -> None:
    result = cli(runner, state_dir, "apply", "--yes", str(pilot))
    assert result.exit_code == 0, result.output
    assert "Cohort pilot: passed" in result.output
    assert "feedback           pass  88% report benefit ≥ 4" in result.output
    groups = device_groups(state_dir)
    assert groups["Intune - iPhone 12"] == {"DX07000", "DX07016"}
    assert groups["Intune - Samsung XCover 5"] == {"R507001", "R507005"}
    assert groups["Intune - iPad mini"] == {"DX07006", "DX07010"}
    assert groups["Intune - iPad"] == {"DX07011", "DX07015"}
    t = reopen(state_dir)
    categories = {c["id"]: c["displayName"] for c in t.store.values("deviceCategories")}
    by_serial = {m["serialNumber"]: m for m in t.store.values("managedDevices")}
    assert categories[by_serial["DX07000"]["_categoryId"]] == "Tjänstemobil"
    assert categories[by_serial["DX07006"]["_categoryId"]] == "Surfplatta"
    assert by_serial["DX07000"].get("_syncRequestedAt")  # asked to sync after the change
    t.store.close()


@pytest.mark.slow
def test_a_device_not_enrolled_yet_waits_and_is_picked_up_later(
        runner: CliRunner, state_dir: Path, pilot: Path) -> None:
    cli(runner, state_dir, "apply", "--yes", str(pilot))
    wide = cli(runner, state_dir, "apply", "--yes", str(pilot))
    assert wide.exit_code == 8, wide.output  # waiting for the devices to enrol
    assert "… S0005: iPhone 12, serial DX07004: awaiting enrolment" in wide.output
    assert "Cohort wide is verifying: 8 of 12 people pass account_enabled, groups, device;" \
           " 4 devices are awaiting enrolment" in wide.output
    assert "DX07004" not in device_groups(state_dir)["Intune - iPhone 12"]
    cli(runner, state_dir, "sandbox", "simulate-checkins")
    later = cli(runner, state_dir, "apply", "--yes", str(pilot))
    assert "Cohort wide: passed" in later.output
    assert "DX07004" in device_groups(state_dir)["Intune - iPhone 12"]
    report = json.loads(cli(runner, state_dir, "devices", "--format", "json", str(pilot)).output)
    assert report["totals"]["state"] == {"ready": 20}
    assert report["totals"]["model"] == {"iPhone 12": 5, "Samsung XCover 5": 5, "iPad mini": 5,
                                         "iPad": 5}


@pytest.mark.slow
def test_rollback_removes_the_device_memberships(runner: CliRunner, state_dir: Path,
                                                 pilot: Path) -> None:
    before = device_groups(state_dir)
    cli(runner, state_dir, "apply", "--yes", str(pilot))
    result = cli(runner, state_dir, "rollback", "--cohort", "pilot", "--yes", str(pilot))
    assert result.exit_code == 0, result.output
    assert "- delete device-group:Intune - iPhone 12:DX07000  [S0001]" in result.output
    assert device_groups(state_dir) == before
    t = reopen(state_dir)
    staff = {u["employeeId"]: u for u in t.users.values()}
    assert staff["E30001"]["accountEnabled"]  # the staff member's account is untouched
    assert staff["E30001"][ADOPTION_PROP] is None
    t.store.close()


@pytest.mark.slow
def test_the_device_gate_fails_when_a_device_never_checks_in(
        runner: CliRunner, state_dir: Path, pilot: Path) -> None:
    cli(runner, state_dir, "sandbox", "simulate-checkins", "--offline", "DX07000")
    result = cli(runner, state_dir, "apply", "--yes", str(pilot))
    assert result.exit_code == 4
    assert "S0001: device: DX07000 has not checked in since the change" in result.output
    assert "Cohort pilot: failed" in result.output


@pytest.mark.slow
def test_a_noncompliant_device_fails_the_gate(runner: CliRunner, state_dir: Path,
                                              pilot: Path) -> None:
    cli(runner, state_dir, "sandbox", "simulate-checkins", "--serial", "R507001",
        "--compliance-rate", "0")
    result = cli(runner, state_dir, "apply", "--yes", str(pilot))
    assert "S0002: device: R507001 is noncompliant" in result.output


@pytest.mark.slow
def test_the_pilot_runs_end_to_end(runner: CliRunner, state_dir: Path, pilot: Path) -> None:
    first = cli(runner, state_dir, "apply", "--yes", "--all", str(pilot))
    assert "Cohort pilot: passed" in first.output and "Cohort wide is verifying" in first.output
    cli(runner, state_dir, "sandbox", "simulate-checkins")
    done = cli(runner, state_dir, "apply", "--yes", "--all", str(pilot))
    assert "Every cohort has passed its gates. The rollout is complete." in done.output
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(pilot)).exit_code == 0
    users = [u for u in reopen(state_dir).users.values()
             if u["userPrincipalName"].endswith("@politiker.example-region.se")]
    assert users == []  # staff keep their accounts: the pilot creates none
    table = cli(runner, state_dir, "devices", str(pilot)).output
    assert "per state: ready 20" in table
    csv_out = cli(runner, state_dir, "devices", "--format", "csv", str(pilot)).output
    assert csv_out.splitlines()[0].startswith("person_id,name,category,cohort,model,serial")


def test_a_feedback_below_the_threshold_stops_the_wide_rollout(
        runner: CliRunner, state_dir: Path, pilot: Path) -> None:
    feedback = pilot.parent / "tjanstemobil-pilot-feedback.csv"
    feedback.write_text(feedback.read_text(encoding="utf-8").replace(";2;5;nej", ";2;2;ja"),
                        encoding="utf-8")
    result = cli(runner, state_dir, "apply", "--yes", "--all", str(pilot))
    assert "Cohort pilot: failed" in result.output and "feedback           fail" in result.output
    assert "Cohort wide" not in result.output


def test_intune_ignores_filters_it_does_not_support() -> None:
    import asyncio

    app = Sandbox(reset_tenant(None, employees=40, seed=1))
    total = len(app.tenant.store.all("managedDevices"))

    async def count(query: dict[str, Any]) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="https://g") as c:
            r = await c.get("/v1.0/deviceManagement/managedDevices", params=query,
                            headers={"Authorization": "Bearer t"})
            return len(r.json()["value"])

    assert asyncio.run(count({"$filter": "userPrincipalName eq ''"})) == total
    assert asyncio.run(count({"$filter": "model eq 'iPhone 12'"})) == total  # unsupported: ignored
    assert asyncio.run(count({"$filter": "serialNumber eq 'DX07000'"})) == 1
