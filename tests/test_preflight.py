"""Preflight: each way the tenant can be unready is found, named, and blocks apply."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner

from provisioner.checks import Check, CheckStatus
from provisioner.cli import main
from provisioner.graph.client import Target
from provisioner.graph.gateway import Graph
from provisioner.model import Action, Change, PersonTarget, Plan
from provisioner.permissions import GRAPH_APP_ID
from provisioner.preflight import FAIL, tenant_checks
from provisioner.sandbox import Tenant
from provisioner.snapshot import DirectoryUser, Snapshot, read_snapshot
from provisioner.steps import used
from provisioner.steps.account import _naming

from . import builders
from .conftest import cli, reopen


@pytest.fixture
def ready(make_sandbox: Callable[..., Tenant], write_playbook: Callable[..., Path]) -> Path:
    make_sandbox()
    return write_playbook(4)


@pytest.mark.parametrize(("kind", "target", "named"), [
    ("domain", "politiker.example-region.se",
     "FAIL  domain          politiker.example-region.se is not verified"),
    ("permission", "GroupMember.ReadWrite.All",
     "FAIL  permissions     not granted: GroupMember.ReadWrite.All (to add and remove group members)"),
    ("permission", "MailboxSettings.ReadWrite", "not granted: MailboxSettings.ReadWrite"),
    ("group", "Förtroendevalda", "FAIL  groups          missing: Förtroendevalda"),
    ("seats", "ENTERPRISEPACK",
     "FAIL  licence         ENTERPRISEPACK: the plan needs 4 licences, 0 are free"),
])
def test_each_break_is_named_and_blocks_apply(runner: CliRunner, state_dir: Path, ready: Path,
                                              kind: str, target: str, named: str) -> None:
    assert cli(runner, state_dir, "preflight", str(ready)).exit_code == 0
    assert cli(runner, state_dir, "sandbox", "break", kind, target).exit_code == 0
    result = cli(runner, state_dir, "preflight", str(ready))
    assert result.exit_code == 5
    assert named in result.output
    applied = cli(runner, state_dir, "apply", "--yes", str(ready))
    assert applied.exit_code == 5
    assert "preflight failed; apply does not start until this is fixed" in applied.output
    assert reopen(state_dir).store.counters["mutating"] == 0
    plan = cli(runner, state_dir, "plan", str(ready))
    if target == "GroupMember.ReadWrite.All":
        # Without it the directory cannot even be read (GET /groups answers 403): plan says why.
        assert plan.exit_code == 5 and named.split("FAIL  ")[1] in plan.output
    elif kind != "group":  # a missing group is already an error for the planner itself
        assert "NOT READY (apply will refuse)" in plan.output


def test_an_existing_account_without_usage_location_is_named(
        runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Tenant],
        tmp_path: Path) -> None:
    make_sandbox()
    (tmp_path / "roster.csv").write_text(
        "person_id,given_name,surname,body,employee_id\nP1,Karin,Lindqvist,Kulturnämnden,E10001\n",
        encoding="utf-8")
    playbook = tmp_path / "pb.yaml"
    playbook.write_text(
        "name: adopt\nroster: roster.csv\ndomain: example-region.se\n"
        "license: {sku: EXCHANGESTANDARD}\nsteps: [account, license]\n"
        "dual_role: {policy: use_existing}\n", encoding="utf-8")
    cli(runner, state_dir, "sandbox", "break", "usage-location", "karin.lindqvist@example-region.se")
    result = cli(runner, state_dir, "preflight", str(playbook))
    assert result.exit_code == 5
    assert ("FAIL  usage location  1 accounts that get a licence have no usageLocation:"
            " karin.lindqvist@example-region.se") in result.output


def test_a_naming_collision_is_named() -> None:
    after = {"userPrincipalName": "bo.ek@p.se", "mailNickname": "bo.ek"}
    plan = Plan("pb", "", "", "", {"P1": PersonTarget("bo.ek@p.se", None)},
                (Change("account", "P1", Action.CREATE, "user:bo.ek@p.se", None, after),))
    taken = DirectoryUser("u1", "bo.ek@p.se", "x", {}, None)
    check = _naming(plan, Snapshot({"u1": taken}))
    assert check.status == FAIL and "bo.ek@p.se" in check.detail


def test_permissions_lists_exactly_what_the_steps_need(runner: CliRunner, ready: Path) -> None:
    out = runner.invoke(main, ["permissions", str(ready)]).output
    names = [line.split()[0] for line in out.splitlines()]
    assert names == sorted(["Application.Read.All", "Domain.Read.All", "GroupMember.ReadWrite.All",
                            "MailboxSettings.ReadWrite", "Organization.Read.All", "User.ReadWrite.All",
                            "Policy.Read.ConditionalAccess"])


def test_passes_and_e_mailed_guides_need_their_permissions(runner: CliRunner, state_dir: Path,
                                                           make_sandbox: Callable[..., Tenant]) -> None:
    make_sandbox()
    example = Path(__file__).parent.parent / "playbooks" / "fritidspolitiker-epost.yaml"
    out = runner.invoke(main, ["permissions", str(example)]).output
    assert "UserAuthMethod-TAP.ReadWrite.All" in out and "Mail.Send" in out
    cli(runner, state_dir, "sandbox", "break", "permission", "Mail.Send")
    result = runner.invoke(main, ["--state-dir", str(state_dir), "preflight", str(example)],
                           env={"PROVISIONER_PNR_KEY": "sandbox-personnummer-key"})
    assert result.exit_code == 5
    assert "not granted: Mail.Send (to send each person their guide from the service mailbox)" \
        in result.output


@pytest.mark.parametrize("synced", [True, False])
def test_a_plan_that_writes_ad_mastered_attributes_of_a_synced_account_fails_preflight(synced: bool) -> None:
    """Graph refuses writes to what Entra Connect syncs from AD (department on a synced
    user: 400, learn.microsoft.com/graph/api/resources/user, onPremisesSyncEnabled); preflight
    names the account before apply tries. A cloud-only account takes the same change."""
    from provisioner.planner import make_plan
    from provisioner.preflight import OK, plan_checks

    from .builders import group, managed, person, playbook, roster, snapshot

    groups = (group("Förtroendevalda", "id-p1"), group("Politiker Regionfullmäktige", "id-p1"),
              group("Politiker Kulturnämnden"))
    account = managed("p1", onPremisesSyncEnabled=synced)
    snap = snapshot(account, groups=groups)
    pb = playbook()
    plan = make_plan(pb, roster(person("p1", body="Kulturnämnden")), snap)
    assert [(c.action, c.after) for c in plan.changes if c.step == "account"] == [
        (Action.UPDATE, {"department": "Kulturnämnden"})]
    check = next(c for c in plan_checks(pb, plan, snap, None) if c.name == "synced accounts")
    assert check.status is (FAIL if synced else OK)
    assert (account.upn in check.detail) is synced


def _held_until(arrived: dict[str, asyncio.Event], mine: str, others: tuple[str, ...],
                body: dict[str, Any]) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """A reply that Graph sends only once the ``others`` have been asked too: reads made one
    after another never get it (each is a round trip against Graph: 0.1–0.3 s)."""
    async def answer(request: httpx.Request) -> httpx.Response:
        arrived[mine].set()
        await asyncio.wait_for(asyncio.gather(*(arrived[o].wait() for o in others)), 5)
        return httpx.Response(200, json=body)
    return answer


def test_the_tenants_independent_reads_go_together() -> None:
    """The snapshot asks for the app's extensions, the groups and Conditional Access at once
    (the users follow the extensions); preflight asks for the domains and the service
    principals of the app and of Graph at once. Each reply below waits for the others of its
    round to be asked."""
    arrived: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
    router = respx.MockRouter(assert_all_called=False)
    route = router.get
    first_round = ("extensions", "groups", "policies", "locations")
    route(url__regex=r"/applications\(appId=.*\)/extensionProperties").mock(
        side_effect=_held_until(arrived, "extensions", first_round, {"value": []}))
    route(url__regex=r"/groups\?").mock(
        side_effect=_held_until(arrived, "groups", first_round, {"value": []}))
    route(url__regex=r"/identity/conditionalAccess/policies").mock(
        side_effect=_held_until(arrived, "policies", first_round, {"value": []}))
    route(url__regex=r"/identity/conditionalAccess/namedLocations").mock(
        side_effect=_held_until(arrived, "locations", first_round, {"value": []}))
    route(url__regex=r"/users\?").respond(200, json={"value": []})
    route(url__regex=r"/subscribedSkus").respond(200, json={"value": []})
    checks = ("domains", "graph", "app")
    route(url__regex=r"/domains").mock(side_effect=_held_until(
        arrived, "domains", checks, {"value": [{"id": builders.DOMAIN, "isVerified": True}]}))
    principal = {"value": [{"id": "sp", "appId": "app", "appRoles": []}]}
    route(url__regex=rf"/servicePrincipals\?.*{GRAPH_APP_ID}").mock(
        side_effect=_held_until(arrived, "graph", checks, principal))
    route(url__regex=r"/servicePrincipals\?").mock(side_effect=_held_until(arrived, "app", checks, principal))
    route(url__regex=r"/servicePrincipals/sp/").respond(200, json={"value": []})
    pb = builders.playbook()
    people = [builders.person("P1")]

    async def both() -> list[Check]:
        async with Graph(Target(transport=httpx.MockTransport(router.async_handler))) as graph:
            snapshot = await read_snapshot(graph, pb, builders.roster(*people), {"Förtroendevalda"}, used(pb))
            return await tenant_checks(graph, pb, people, snapshot)

    checks_found = {c.name: c for c in asyncio.run(both())}
    assert checks_found["domain"].status is CheckStatus.OK
    assert checks_found["permissions"].status is CheckStatus.FAIL  # nothing granted: asked, not skipped
