"""The sample pipelines in examples/ci/ are valid YAML of their CI systems' shapes, and every
provisioner command in them parses against the CLI as it is: they cannot drift from the tool."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from provisioner.audit import read_records
from provisioner.cli import main

from .conftest import cli

EXAMPLES = Path(__file__).parent.parent / "examples" / "ci"


def scripts(node: Any) -> list[str]:
    """Every shell script in a pipeline (GitHub's `run`, Azure DevOps' `script`)."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("run", "script") and isinstance(v, str)]
        return found + [s for v in node.values() for s in scripts(v)]
    if isinstance(node, list):
        return [s for v in node for s in scripts(v)]
    return []


def commands(script: str) -> list[list[str]]:
    """The provisioner command lines of a script, continuation lines joined, without redirections."""
    joined = re.sub(r"\\\n\s*", " ", script)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("provisioner "):
            words = shlex.split(line.split(">", 1)[0])
            out.append(words[1:])
    return out


def parse(args: list[str]) -> click.Context:
    """Parse a command line as the CLI would, without running it (unknown options, bad
    choices and missing arguments raise click's usage errors)."""
    ctx = main.make_context("provisioner", list(args))
    name, command, rest = main.resolve_command(ctx, [*getattr(ctx, "_protected_args", []), *ctx.args])
    assert command is not None, name
    return command.make_context(name or "", rest, parent=ctx)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yml")), ids=lambda p: p.name)
def test_every_provisioner_command_in_a_sample_pipeline_parses(path: Path) -> None:
    found = [c for s in scripts(yaml.safe_load(path.read_text(encoding="utf-8"))) for c in commands(s)]
    assert {c[c.index("--log-format") + 2] for c in found if "--log-format" in c} == {
        "validate", "plan", "apply"}
    assert ["audit", "forward", "--timeout", "60"] in found
    for args in found:
        parse(args)


def test_the_parser_above_refuses_what_the_cli_refuses() -> None:
    with pytest.raises(click.UsageError):
        parse(["plan", "p.yaml", "--format", "yaml"])
    with pytest.raises(click.UsageError):
        parse(["apply", "p.yaml", "--no-such-option"])


def test_the_github_workflow_plans_on_pull_requests_and_applies_behind_an_environment() -> None:
    flow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text(encoding="utf-8"))
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"pull_request", "workflow_dispatch"}
    plan, apply = flow["jobs"]["plan"], flow["jobs"]["apply"]
    assert "pull_request" in plan["if"] and "workflow_dispatch" in apply["if"]
    assert apply["environment"] == "m365-production"
    uses = [s.get("uses", "") for s in plan["steps"]]
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    fetched = [s.get("uses", "") for s in apply["steps"]]
    assert any(u.startswith("actions/download-artifact@") for u in fetched)
    plan_script = next(s["run"] for s in plan["steps"] if s.get("id") == "plan")
    assert "--out plan.json" in plan_script and "GITHUB_STEP_SUMMARY" in plan_script
    apply_script = next(s["run"] for s in apply["steps"] if "apply plan.json" in s.get("run", ""))
    assert "0|8) exit 0" in apply_script  # waiting at a gate is not a failed job


def test_the_azure_pipeline_applies_the_same_runs_plan_in_a_deployment_job() -> None:
    pipeline = yaml.safe_load((EXAMPLES / "azure-pipelines.yml").read_text(encoding="utf-8"))
    plan, apply = pipeline["stages"]
    assert plan["stage"] == "Plan" and apply["stage"] == "Apply" and apply["dependsOn"] == "Plan"
    deployment = apply["jobs"][0]
    assert deployment["deployment"] == "apply" and deployment["environment"] == "m365-production"
    steps = deployment["strategy"]["runOnce"]["deploy"]["steps"]
    assert {"download": "current", "artifact": "plan"} in steps
    assert any(s.get("publish", "").endswith("plan.json") for s in plan["jobs"][0]["steps"])


# -- the GitHub workflow's steps, run by hand in order ------------------------------------

ACCEPTED = {"validate": {0}, "plan": {0, 2, 3}, "apply": {0, 8}, "audit": {0}}  # as the scripts' `case`


def job(flow: dict[str, Any], name: str) -> list[list[str]]:
    return [c for s in scripts(flow["jobs"][name]) for c in commands(s)]


@pytest.mark.slow
def test_the_github_workflow_run_by_hand_plans_then_applies_after_an_approval(
        runner: CliRunner, tmp_path: Path, tenant: str, shared_state: str, collector: Any,
        write_playbook: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runners with nothing in common but the shared state (and the tenant): the plan
    job on one, the apply job on the other with the plan as its artifact, an approver at a
    third machine, and the audit records of all of them in the SIEM once each."""
    playbook = write_playbook(3)
    playbook.write_text(playbook.read_text(encoding="utf-8") + (
        "cohorts:\n  - name: pilot\n    select: {rest: true}\n"
        "    gates: {approval: {approvers: [eva], distinct_from_applier: true}}\n"), encoding="utf-8")
    flow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text(encoding="utf-8"))
    env = {"PROVISIONER_STATE": shared_state, "LOGNAME": "runner", "USER": "runner",
           "PROVISIONER_AUDIT_FORWARD": f"syslog+tls://127.0.0.1:{collector.port}?ca={collector.tls['ca']}"}
    machines = {name: tmp_path / name for name in ("plan-runner", "apply-runner", "eva", "admin")}
    for where in machines.values():
        where.mkdir()

    def run(where: Path, args: list[str], **more: str) -> Any:
        monkeypatch.chdir(where)  # plan.json and result.json land in the job's workspace
        args = [a.replace("$PLAYBOOK", str(playbook)) for a in args]
        return cli(runner, where / ".provisioner", "--graph-url", tenant, *args, **{**env, **more})

    printed: dict[str, str] = {}  # what each command printed (the scripts redirect it to a file)

    def run_job(name: str, where: Path) -> dict[str, int]:
        codes = {}
        for args in job(flow, name):
            result = run(where, args)
            verb = next(a for a in args if a in ACCEPTED)
            assert result.exit_code in ACCEPTED[verb], (args, result.output)
            codes[verb], printed[verb] = result.exit_code, result.stdout
        return codes

    assert run_job("plan", machines["plan-runner"]) == {"validate": 0, "plan": 2, "audit": 0}
    shutil.copy(machines["plan-runner"] / "plan.json", machines["apply-runner"])  # the artifact
    assert run_job("apply", machines["apply-runner"]) == {"apply": 8, "audit": 0}  # awaits eva
    assert json.loads(printed["apply"])["cohorts"][0]["state"] == "awaiting approval"
    approved = run(machines["eva"], ["approve", str(playbook), "--cohort", "pilot"],
                   LOGNAME="eva", USER="eva")
    assert approved.exit_code == 0, approved.output
    assert run_job("plan", machines["plan-runner"]) == {"validate": 0, "plan": 0, "audit": 0}
    shutil.copy(machines["plan-runner"] / "plan.json", machines["apply-runner"])
    assert run_job("apply", machines["apply-runner"]) == {"apply": 0, "audit": 0}
    status = json.loads(run(machines["admin"], ["status", "--json", str(playbook)]).stdout)
    assert status["cohorts"][0]["state"] == "passed"
    assert not any((m / ".provisioner" / "journal.sqlite").exists() for m in machines.values())
    # Every machine's audit records reached the SIEM once each.
    logs = [m / ".provisioner" / "audit.jsonl" for m in machines.values()]
    sent = sorted(r["hash"] for log in logs for r in read_records(log))
    got = sorted(f[6].split(' hash="', 1)[1].split('"', 1)[0] for f in collector.received())
    assert got == sent
