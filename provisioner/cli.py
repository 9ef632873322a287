"""Thin Click layer: parse, call one function in operations, render, exit."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from . import operations as ops
from .errors import InputError, ProvisionerError
from .logs import configure

EXIT_CHANGES = 2  # plan --detailed-exitcode, as terraform plan


class Group(click.Group):
    """Maps every ProvisionerError to a message on stderr and its class's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ProvisionerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="PROVISIONER_STATE_DIR", default=".provisioner", show_default=True,
              help="Where the sandbox tenant, journal and audit log live.")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console",
              show_default=True)
@click.option("-v", "--verbose", count=True, help="-v for info, -vv for debug logs.")
@click.option("--graph-url", metavar="URL", help="A served sandbox, e.g. http://127.0.0.1:8765.")
@click.option("--auth", type=click.Choice(["app", "device-code"]), default="app", show_default=True,
              help="Real tenant: app credentials from the playbook, or device code at a terminal.")
@click.version_option(package_name="provisioner")
@click.pass_context
def main(ctx: click.Context, state_dir: Path, log_format: str, verbose: int,
         graph_url: str | None, auth: str) -> None:
    """Plan and apply Microsoft 365 provisioning playbooks, cohort by cohort."""
    configure(log_format, verbose)
    ctx.obj = ops.Settings(state_dir, graph_url, auth == "device-code")


playbook_arg = click.argument("playbook", type=click.Path(dir_okay=False, path_type=Path))


@main.command()
@playbook_arg
def validate(playbook: Path) -> None:
    """Check a playbook and its roster without touching any tenant."""
    loaded = ops.load(playbook)
    pb = loaded.playbook
    click.echo(f"{playbook}: valid. {len(loaded.roster)} people in {pb.roster_path};"
               f" steps: {', '.join(pb.steps)}; tenant: "
               f"{'sandbox' if pb.tenant == 'sandbox' else 'Microsoft Entra'}")


@main.command()
@playbook_arg
@click.option("--json", "as_json", is_flag=True, help="Print the plan as a JSON document.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the plan for `apply FILE`.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when there is nothing to do, 2 when there are changes, 1 on error.")
@click.pass_obj
def plan(settings: ops.Settings, playbook: Path, as_json: bool, out: Path | None,
         detailed_exitcode: bool) -> None:
    """Show every change the playbook would make. Writes nothing to the tenant."""
    loaded = ops.load(playbook)
    result = asyncio.run(ops.plan(settings, loaded))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        from .render import plan_lines

        for line in plan_lines(result, detailed=settings_verbose(), color=_color()):
            click.echo(line)
    if out is not None:
        ops.save_plan(result, out)
        click.echo(f"Saved the plan to {out}; `provisioner apply {out}` carries it out.", err=as_json)
    if detailed_exitcode and result.changes:
        sys.exit(EXIT_CHANGES)


@main.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path), metavar="PLAYBOOK|PLAN")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.pass_obj
def apply(settings: ops.Settings, source: Path, yes: bool) -> None:
    """Apply a playbook (planned afresh), or exactly a plan saved with `plan --out`."""
    from .render import BarProgress, LineProgress, plan_lines, report_lines

    saved = ops.read_saved_plan(source)
    loaded = ops.load(Path(saved.playbook_path) if saved else source)

    progress = BarProgress() if sys.stdout.isatty() else LineProgress()

    def confirm(plan: Any) -> bool:
        for line in plan_lines(plan, color=_color()):
            click.echo(line)
        if not yes:
            if not sys.stdin.isatty():
                raise InputError("apply asks for confirmation; in a pipeline give --yes")
            if not click.confirm("Apply these changes?", default=False):
                return False
        progress.begin(len(plan.changes))
        return True

    try:
        plan_done, report = asyncio.run(
            ops.apply(settings, loaded, [progress], saved=saved, confirm=confirm))
    finally:
        progress.close()
    if report is None:
        if not plan_done.changes:
            click.echo("No changes. The tenant matches the playbook.")
        else:
            click.echo("Nothing applied.")
        return
    for line in report_lines(report):
        click.echo(line)
    if not report.ok:
        sys.exit(1)


def settings_verbose() -> bool:
    ctx = click.get_current_context()
    return bool(ctx.find_root().params.get("verbose"))


def _color() -> bool:
    return sys.stdout.isatty()


# -- sandbox -------------------------------------------------------------------------------
@main.group()
def sandbox() -> None:
    """The Graph-compatible sandbox tenant in the state dir."""


@sandbox.command("reset")
@click.option("--employees", type=click.IntRange(0, 200_000), default=300, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--time-scale", type=click.FloatRange(0.0001, 1000), default=1.0, show_default=True,
              help="Multiply every delay, Retry-After and quota window by this.")
@click.option("--latency-ms", type=click.FloatRange(0), default=0, show_default=True)
@click.option("--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of requests answered 503.")
@click.option("--mailbox-delay", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Seconds from an Exchange licence to a usable mailbox.")
@click.option("--ru-limit", type=click.IntRange(0), default=0,
              help="Resource units per 10 s (0: Graph's limit for the tenant's size).")
@click.option("--write-limit", type=click.IntRange(0), default=0,
              help="Writes per 150 s (0: Graph's 3,000).")
@click.pass_obj
def sandbox_reset(settings: ops.Settings, employees: int, seed: int, **config: Any) -> None:
    """Create a fresh fictional region: employees, licences, groups."""
    from .sandbox import reset_tenant

    tenant = reset_tenant(settings.state_dir, employees=employees, seed=seed, **config)
    n_users = len(tenant.users)
    tenant.store.close()
    click.echo(f"Sandbox tenant reset in {settings.state_dir}: {n_users} employees (seed {seed}).")


@sandbox.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def sandbox_show(settings: ops.Settings, as_json: bool) -> None:
    """Counts of objects and of requests served, by method."""
    from .sandbox.report import describe

    with ops.open_sandbox(settings.state_dir) as app:
        facts = describe(app.tenant)
    if as_json:
        click.echo(json.dumps(facts, indent=2, ensure_ascii=False))
        return
    for section, values in facts.items():
        click.echo(f"{section}:")
        for key, value in values.items():
            click.echo(f"  {key}: {value}")


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.pass_obj
def sandbox_serve(settings: ops.Settings, host: str, port: int) -> None:
    """Serve the sandbox over HTTP (then use --graph-url http://HOST:PORT)."""
    import uvicorn

    with ops.open_sandbox(settings.state_dir) as app:
        click.echo(f"Sandbox Graph at http://{host}:{port}/v1.0 (state in {settings.state_dir})")
        uvicorn.run(app, host=host, port=port, log_level="warning")
