"""The sample pipelines in examples/ci/ are valid YAML of their CI systems' shapes, and every
provisioner command in them parses against the CLI as it is: they cannot drift from the tool."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from provisioner.cli import main

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
    assert {c[c.index("--log-format") + 2] for c in found} == {"validate", "plan", "apply"}
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
