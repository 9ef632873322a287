"""Adding a step is one module and one registry line: a step defined here, registered for the
test only, gets its own playbook section, reads what it needs into the snapshot, plans,
applies through the real SDK against the sandbox, and is asked for its permissions, without
any other module of the tool knowing its name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from provisioner.graph.gateway import Graph
from provisioner.model import Action, Change, Json, Outcome
from provisioner.schema import Strict
from provisioner.snapshot import Snapshot
from provisioner.steps import STEPS
from provisioner.steps.base import BaseStep, PersonRun, PersonView, PlanContext, StepPlan

from .conftest import cli, reopen


class Office(Strict):
    location: str


class OfficeStep(BaseStep):
    """Sets every official's officeLocation (the building their secretariat is in)."""

    name: ClassVar[str] = "office"
    section: ClassVar[str | None] = "office"
    schema: ClassVar[type[Strict] | None] = Office

    async def read(self, graph: Graph, playbook: Any, snapshot: Snapshot) -> dict[str, Any]:
        users = await graph.list_users(("id", "officeLocation"))
        return {"extra": {**snapshot.extra, self.name: {u["id"]: u.get("officeLocation") for u in users}}}

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        wanted = ctx.playbook.section("office").location
        have = ctx.snapshot.extra[self.name].get(view.user.id) if view.user else None
        if have == wanted:
            return StepPlan()
        upn = view.user.upn if view.user else view.names.upn
        return StepPlan([Change(self.name, view.person.person_id, Action.UPDATE, f"office:{upn}",
                                {"officeLocation": have}, {"officeLocation": wanted})])

    def operations(self, playbook: Any) -> dict[str, str]:
        return {"update_user": "set the office", "list_users": "read offices"}

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None:
        user = await graph.get_user(run.user_id or run.upn, ("id", "officeLocation"))
        return None if user is None else {"officeLocation": user.get("officeLocation")}

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        assert run.user_id is not None and change.after is not None
        await graph.update_user(run.user_id, change.after)
        return Outcome.APPLIED


@pytest.fixture
def office(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(STEPS, OfficeStep.name, OfficeStep())  # the one registry line
    yield


def test_a_test_only_step_plans_applies_and_reads_back_through_the_registry(
        office: None, runner: CliRunner, state_dir: Path, make_sandbox: Callable[..., Any],
        write_playbook: Callable[..., Path]) -> None:
    make_sandbox()
    path = write_playbook(3, steps="account, office")
    path.write_text(path.read_text(encoding="utf-8") + "office: {location: 'Regionens hus, Växjö'}\n",
                    encoding="utf-8")
    plan = cli(runner, state_dir, "plan", "--json", str(path))
    assert plan.exit_code == 0, plan.output
    changes = [c for c in json.loads(plan.output)["changes"] if c["step"] == "office"]
    assert len(changes) == 3 and {c["after"]["officeLocation"] for c in changes} == {"Regionens hus, Växjö"}
    assert cli(runner, state_dir, "apply", "--yes", str(path)).exit_code == 0
    tenant = reopen(state_dir)
    offices = [u.get("officeLocation") for u in tenant.store.all("users").values()
               if (u.get("onPremisesExtensionAttributes") or {}).get("extensionAttribute15")]
    tenant.store.close()
    assert offices == ["Regionens hus, Växjö"] * 3
    again = cli(runner, state_dir, "plan", "--json", str(path))
    assert json.loads(again.output)["changes"] == []  # its read sees what it wrote


def test_a_test_only_step_owns_its_section(office: None, tmp_path: Path, runner: CliRunner,
                                           state_dir: Path) -> None:
    (tmp_path / "r.csv").write_text("person_id,given_name,surname\np1,Anna,Berg\n", encoding="utf-8")
    path = tmp_path / "p.yaml"
    base = "name: t\nroster: r.csv\ndomain: p.se\nsteps: [account, office]\n"
    path.write_text(base, encoding="utf-8")
    missing = cli(runner, state_dir, "validate", str(path))
    assert missing.exit_code == 1
    assert "`office` is listed but the `office` section is missing" in missing.output
    path.write_text(base + "office: {location: Växjö, floor: 3}\n", encoding="utf-8")
    unknown = cli(runner, state_dir, "validate", str(path))
    assert unknown.exit_code == 1 and "office.floor: unknown key" in unknown.output


def test_without_its_registry_line_the_step_is_unknown(tmp_path: Path, runner: CliRunner,
                                                       state_dir: Path) -> None:
    (tmp_path / "r.csv").write_text("person_id,given_name,surname\np1,Anna,Berg\n", encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text("name: t\nroster: r.csv\ndomain: p.se\nsteps: [account, office]\n", encoding="utf-8")
    result = cli(runner, state_dir, "validate", str(path))
    assert result.exit_code == 1 and "steps: unknown step 'office'" in result.output
    path.write_text(path.read_text(encoding="utf-8") + "office: {location: Växjö}\n", encoding="utf-8")
    result = cli(runner, state_dir, "validate", str(path))
    assert result.exit_code == 1 and "office: unknown key" in result.output
