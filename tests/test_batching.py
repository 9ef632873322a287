"""Fewer Entra writes per person: memberships 20 to a write, licences through a group."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner import operations as ops
from provisioner.graph.gateway import Graph
from provisioner.model import Plan
from provisioner.rollout import Report, apply_plan
from provisioner.sandbox import Tenant, open_tenant
from provisioner.sandbox.region import officials

from .conftest import reopen
from .test_plan_apply import cli


def journal_rows(state_dir: Path, step: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(state_dir / "journal.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(
            "SELECT * FROM changes WHERE step = ? AND state != 'intent' ORDER BY seq", (step,))]
    finally:
        db.close()


def via_group(playbook: Path, group: str = "Licens E3 förtroendevalda") -> Path:
    text = playbook.read_text(encoding="utf-8").replace(
        "  sku: ENTERPRISEPACK\n", f"  sku: ENTERPRISEPACK\n  via_group: {group}\n")
    playbook.write_text(text, encoding="utf-8")
    return playbook


def group_members(state_dir: Path, name: str) -> set[str]:
    tenant = open_tenant(state_dir)
    try:
        group = next(g for g in tenant.store.values("groups") if g["displayName"] == name)
        return set(group["_members"])
    finally:
        tenant.store.close()


Script = Callable[[Graph, Callable[[], Awaitable[Plan]], Callable[[Plan], Awaitable[Report]]],
                  Awaitable[Report]]


def apply_directly(state_dir: Path, playbook: Path, script: Script | None = None) -> Report:
    """The apply loop itself, without the CLI's journal and audit: plan, then apply; or run
    ``script(graph, plan, apply)`` to do something between the two."""
    session = ops.Session(ops.Settings(state_dir))
    loaded = ops.load(playbook)

    async def go() -> Report:
        async with ops.connect(session, loaded.playbook) as graph:
            async def plan() -> Plan:
                return (await ops.plan(session, loaded))[0]

            async def apply(planned: Plan) -> Report:
                return await apply_plan(graph, planned, [], mailbox_wait=0)

            return await (script or (lambda _, p, a: _plan_then_apply(p, a)))(graph, plan, apply)

    return asyncio.run(go())


async def _plan_then_apply(plan: Callable[[], Awaitable[Plan]],
                           apply: Callable[[Plan], Awaitable[Report]]) -> Report:
    return await apply(await plan())


@pytest.mark.slow
def test_memberships_of_one_group_share_a_write_of_at_most_20(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    people = officials(45, 2026)
    playbook = write_playbook(45)
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    rows = journal_rows(state_dir, "groups")
    assert len(rows) == 90 and all(r["state"] == "applied" and r["request_id"] for r in rows)
    per_write = Counter(r["request_id"] for r in rows)
    assert max(per_write.values()) == 20
    bodies = Counter(p.body for p in people)
    expected = math.ceil(45 / 20) + sum(math.ceil(n / 20) for n in bodies.values())
    assert len(per_write) == expected  # one write per 20 members of a group, no more
    # Every membership is there, and the next plan has nothing to do.
    assert len(group_members(state_dir, "Förtroendevalda")) == 45
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(playbook)).exit_code == 0


def test_a_refused_batch_is_tried_one_by_one_so_each_gets_its_own_answer(
        state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    """Graph adds all members of a write or none: one already in the group (added by hand
    after the plan) must not cost the others their membership."""
    make_sandbox()
    playbook = write_playbook(8, steps="account, groups")
    async def meanwhile(graph: Graph, plan: Callable[[], Awaitable[Plan]],
                        apply: Callable[[Plan], Awaitable[Report]]) -> Report:
        accounts = await plan()
        await apply(replace(accounts, changes=[c for c in accounts.changes if c.step == "account"]))
        planned = await plan()
        joins = [c for c in planned.changes if c.target.startswith("group:Förtroendevalda:")]
        assert len(joins) == 8
        user = await graph.get_user(joins[0].after["member"], ("id",))  # type: ignore[index]
        assert user is not None
        await graph.add_member(joins[0].after["groupId"], user["id"])  # type: ignore[index]
        return await apply(planned)

    report = apply_directly(state_dir, playbook, meanwhile)
    outcomes = {r.change.target: r.outcome for r in report.results
                if r.change.target.startswith("group:Förtroendevalda:")}
    assert sorted(o.value for o in outcomes.values()) == ["applied"] * 7 + ["unchanged"]
    assert len(group_members(state_dir, "Förtroendevalda")) == 8


@pytest.mark.slow
def test_licence_through_a_group_is_one_membership_and_rolls_back(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    playbook = via_group(write_playbook(25))
    planned = json.loads(cli(runner, state_dir, "plan", "--json", str(playbook)).output)
    licences = [c for c in planned["changes"] if c["step"] == "license"]
    assert len(licences) == 25
    assert all(c["after"]["viaGroup"] == "Licens E3 förtroendevalda" for c in licences)
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    rows = journal_rows(state_dir, "license")
    assert len({r["request_id"] for r in rows}) == 2  # 25 people: writes of 20 and 5
    tenant = reopen(state_dir)
    try:
        ours = [u for u in tenant.users.values()
                if u["userPrincipalName"].endswith("@politiker.example-region.se")]
        assert len(ours) == 25
        assert all(tenant.view_user(u)["assignedLicenses"] for u in ours)  # inherited from the group
        assert tenant.store.counters["POST"] == 25  # the accounts; no assignLicense, no $ref
    finally:
        tenant.store.close()
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(playbook)).exit_code == 0
    back = cli(runner, state_dir, "rollback", "--yes", "--person", "P00001", str(playbook))
    assert back.exit_code == 0, back.output
    assert len(group_members(state_dir, "Licens E3 förtroendevalda")) == 24


def test_a_licensing_group_that_does_not_give_the_sku_is_named(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    playbook = via_group(write_playbook(3), "Tjänstemobil pilot")
    result = cli(runner, state_dir, "plan", str(playbook))
    assert result.exit_code == 1
    assert "license.via_group: the group 'Tjänstemobil pilot' does not assign ENTERPRISEPACK" in result.output


def test_the_licensing_group_cannot_also_be_in_groups(
        runner: CliRunner, state_dir: Path, write_playbook: Callable[..., Path]) -> None:
    playbook = via_group(write_playbook(3), "Förtroendevalda")
    result = cli(runner, state_dir, "validate", str(playbook))
    assert result.exit_code == 1
    assert "license.via_group: 'Förtroendevalda' is also in `groups`" in result.output


@pytest.mark.parametrize("status", [403, 503])
def test_a_batch_graph_will_not_take_fails_each_of_its_changes(
        status: int, state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioner.errors import GraphError, ThrottledError

    async def refuses(self: Graph, group_id: str, member_ids: Any) -> None:
        cls = ThrottledError if status == 503 else GraphError
        raise cls(status, "Authorization_RequestDenied", "Insufficient privileges.",
                  request_id="r-1", method="PATCH", path="/groups")

    make_sandbox()
    monkeypatch.setattr(Graph, "bind_members", refuses)
    playbook = write_playbook(5, steps="account, groups")
    report = apply_directly(state_dir, playbook)
    joins = [r for r in report.results if r.change.target.startswith("group:Förtroendevalda:")]
    assert len(joins) == 5
    assert all(r.outcome.value == "failed" and r.request_id == "r-1" for r in joins)


def test_with_no_seat_left_the_membership_stands_and_the_user_shows_the_licence_error(
        memory_sandbox: Any) -> None:
    """Entra's group-based licensing: the membership is made; the licence is not, and the user's
    licenseAssignmentStates says why (CountViolation). The verify gate turns that into words."""
    from provisioner.sandbox.breaks import apply_break
    from provisioner.steps.license import licence_problem

    from .test_sandbox import call

    tenant = memory_sandbox.tenant
    group = next(g for g in tenant.store.values("groups") if g["displayName"] == "Licens E3 förtroendevalda")
    sku = group["assignedLicenses"][0]["skuId"]
    unlicensed = [call(memory_sandbox, "POST", "/users", json={
        "accountEnabled": True, "displayName": f"Ny {i}", "mailNickname": f"pol.ny{i}",
        "userPrincipalName": f"ny{i}@politiker.example-region.se", "usageLocation": "SE",
        "passwordProfile": {"password": "Xy7!kLmN9#pQ2$rS"}}).json()["id"] for i in (1, 2)]
    apply_break(tenant, "seats", "ENTERPRISEPACK")
    r = call(memory_sandbox, "PATCH", f"/groups/{group['id']}", json={"members@odata.bind": [
        f"https://graph.microsoft.com/v1.0/directoryObjects/{u}" for u in unlicensed]})
    assert r.status_code == 204
    user = call(memory_sandbox, "GET", f"/users/{unlicensed[0]}",
                params={"$select": "assignedLicenses,licenseAssignmentStates"}).json()
    assert user["assignedLicenses"] == []
    assert user["licenseAssignmentStates"] == [{"skuId": sku, "disabledPlans": [],
                                                "assignedByGroup": group["id"], "state": "Error",
                                                "error": "CountViolation"}]
    assert licence_problem(user, sku, "ENTERPRISEPACK") == (
        "license: ENTERPRISEPACK is not assigned: the licensing group reports CountViolation"
        " (no licence left to give: buy more or free some, and Entra assigns it)")


def test_a_rounds_accounts_and_mailbox_settings_go_20_to_a_batch(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    """Creates and mailbox settings started together go to Graph 20 to a $batch
    (https://learn.microsoft.com/graph/json-batching: up to 20 requests in one, each answered
    and throttled as itself); each change keeps its own outcome and the batch's request-id."""
    make_sandbox(mailbox_delay=0)
    playbook = write_playbook(45)
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    for step in ("account", "mailbox_settings"):
        rows = journal_rows(state_dir, step)
        assert len(rows) == 45 and all(r["state"] == "applied" and r["request_id"] for r in rows)
        per_request = Counter(r["request_id"] for r in rows)
        assert max(per_request.values()) == 20 and len(per_request) <= 5, (step, per_request)
    tenant = reopen(state_dir)
    assert tenant.store.counters["BATCH"] >= 6
    assert cli(runner, state_dir, "plan", "--detailed-exitcode", str(playbook)).exit_code == 0


def test_a_batched_create_whose_account_exists_is_ours_only_by_its_mark(
        state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    """In a $batch each create is answered alone: one whose address another account took since
    the plan fails with Graph's ObjectConflict, named; the others are made. (Graph answers a
    duplicate userPrincipalName 400 with an ObjectConflict detail: user-post-users.)"""
    make_sandbox()
    playbook = write_playbook(6, steps="account")

    async def meanwhile(graph: Graph, plan: Callable[[], Awaitable[Plan]],
                        apply: Callable[[Plan], Awaitable[Report]]) -> Report:
        planned = await plan()
        taken = planned.changes[2].after or {}
        await graph.create_user({"accountEnabled": False, "displayName": "Någon annan",
                                 "mailNickname": "annan", "userPrincipalName": taken["userPrincipalName"],
                                 "passwordProfile": {"password": "Xy9!" * 6}})
        return await apply(planned)

    report = apply_directly(state_dir, playbook, meanwhile)
    outcomes = sorted((r.outcome.value, r.code or "") for r in report.results)
    assert outcomes == [("applied", "")] * 5 + [("failed", "Request_BadRequest")]


def test_while_no_mailbox_has_come_a_poll_asks_about_20_not_everyone(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    """Exchange makes a mailbox minutes after its licence: until one of the 20 asked about is
    there, the others are not asked (45 people, at most six asks in 3 s: 20 reads each, not
    45). Those still waiting stay pending for the next apply."""
    make_sandbox(mailbox_delay=3600)
    playbook = write_playbook(45, wait=3)
    result = cli(runner, state_dir, "apply", "--yes", str(playbook))
    assert result.exit_code == 0, result.output
    assert "45 pending" in result.output
    asked = reopen(state_dir).store.counters["404 MailboxNotEnabledForRESTAPI"]
    assert asked % 20 == 0 and 20 <= asked <= 120


def test_a_rounds_changes_are_all_announced_together(
        state_dir: Path, make_sandbox: Callable[..., Tenant],
        write_playbook: Callable[..., Path]) -> None:
    """Hooks see a round's ``started`` inside one ``starting()`` (the journal commits the
    intents of 25 accounts once, not 25 times), before any of its results."""
    import contextlib

    from provisioner.rollout import Hook

    class Watch(Hook):
        def __init__(self) -> None:
            self.rounds: list[list[str]] = []
            self.open = False

        @contextlib.contextmanager
        def starting(self) -> Any:
            self.open = True
            self.rounds.append([])
            yield
            self.open = False

        def started(self, change: Any, run: Any) -> None:
            assert self.open
            self.rounds[-1].append(change.step)

        def attempted(self, result: Any, run: Any) -> None:
            assert result.change.step in self.rounds[-1]

    make_sandbox()
    playbook = write_playbook(25, steps="account, groups")
    watch = Watch()

    async def script(graph: Graph, plan: Callable[[], Awaitable[Plan]],
                     apply: Callable[[Plan], Awaitable[Report]]) -> Report:
        return await apply_plan(graph, await plan(), [watch], mailbox_wait=0)

    report = apply_directly(state_dir, playbook, script)
    assert report.ok
    assert [Counter(steps) for steps in watch.rounds] == [Counter(account=25), Counter(groups=25),
                                                          Counter(groups=25)]
