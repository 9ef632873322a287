"""Thin Click layer: parse, call one function in operations, render, exit."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import InputError, ProvisionerError

if TYPE_CHECKING:
    from . import operations as ops
else:
    class _Operations:
        """`provisioner --help` stays fast: the operations (and all they import) load on use."""

        def __getattr__(self, name: str) -> Any:
            from .heap import collector_off

            with collector_off():  # importing makes a few hundred thousand objects to keep, no garbage
                from . import operations
            return getattr(operations, name)

    ops = _Operations()

# Exit codes that are results, not errors (errors carry theirs: errors.py). The README's
# "Exit codes" table lists them all; a pipeline relies on each.
EXIT_CHANGES = 2  # plan --detailed-exitcode, as terraform plan
EXIT_HELD = 3     # plan --detailed-exitcode: people are held for a dual-role decision
EXIT_HALTED = 4   # a cohort failed its gates: the rollout is halted
EXIT_WAITING = 8  # apply stopped at a gate that waits (sign-ins, approval, soak, feedback)
EXIT_USAGE = 64   # a usage error (unknown option, missing argument): EX_USAGE of sysexits.h,
                  # since click's 2 would read as "changes" to plan --detailed-exitcode


class Command(click.Command):
    def invoke(self, ctx: click.Context) -> Any:
        ctx.meta["command"] = ctx.command_path.partition(" ")[2]  # "audit verify"
        return super().invoke(ctx)


class Group(click.Group):
    """Maps every ProvisionerError to a message on stderr and its class's exit code, and
    writes one audit record per operator command: who, what (secrets redacted), exit status."""

    command_class = Command
    group_class = type  # sub-groups are Groups too

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Click's main, except that a usage error exits 64, not 2 (see EXIT_USAGE)."""
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            exc.show()
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        argv = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta.setdefault("argv", argv)  # the root's: the whole command line
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        status = 0
        try:
            return super().invoke(ctx)
        except ProvisionerError as exc:
            _error(ctx, exc)
            status = exc.exit_code
            sys.exit(status)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
            raise
        except BaseException:
            status = 1
            raise
        finally:
            if ctx.parent is None:
                _audit_command(ctx, status)
                _forward_audit(ctx)
                if hasattr(ctx.obj, "close"):
                    ctx.obj.close()


def _error(ctx: click.Context, exc: ProvisionerError) -> None:
    """One clear error on stderr: a line of text, or with --log-format json one JSON event."""
    if ctx.find_root().params.get("log_format") == "json":
        import structlog

        problems = getattr(exc, "problems", None)
        structlog.get_logger("provisioner").error(
            "error", kind=type(exc).__name__, message=str(exc), exit_code=exc.exit_code,
            **({"problems": problems} if problems else {}))
        return
    click.echo(f"error: {exc}", err=True)


def _forward_audit(ctx: click.Context) -> None:
    """Send what the collector has not confirmed yet; say so when records must wait."""
    session = ctx.obj
    forwarder = getattr(session, "forwarder", None)
    if forwarder is None:
        return
    waiting = forwarder.close()
    if waiting:
        click.echo(f"warning: {waiting} audit records wait for {forwarder.destination}"
                   f" ({forwarder.error or 'not confirmed'}); the next command, or `provisioner audit"
                   " forward`, sends them", err=True)


def _audit_command(ctx: click.Context, status: int) -> None:
    from . import operations
    from .audit import redact_argv

    session = ctx.obj
    if not isinstance(session, operations.Session) or not ctx.invoked_subcommand:
        return
    try:
        session.audit.event("command", command=ctx.meta.get("command", ctx.invoked_subcommand),
                            argv=redact_argv(ctx.meta.get("argv", [])),
                            graph_identity=session.graph_identity, run_ids=session.run_ids,
                            exit_status=status)
    except (OSError, ProvisionerError) as exc:  # the command's own result matters more; say it
        click.echo(f"warning: could not write the audit log {session.audit_path}: {exc}", err=True)


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
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path),
              envvar="PROVISIONER_AUDIT_LOG", help="Audit log path [default: STATE_DIR/audit.jsonl].")
@click.option("--state", "state_url", envvar="PROVISIONER_STATE", metavar="URL",
              help="A shared state for a team: postgresql://user@host/db (the password from PGPASSWORD"
                   " or ~/.pgpass). Default: SQLite in the state dir.")
@click.option("--audit-forward", metavar="URL", envvar="PROVISIONER_AUDIT_FORWARD",
              help="Also send every audit record to a SIEM's collector: syslog+tls://HOST:6514"
                   "[?ca=FILE] (RFC 5424 over TLS); records wait in the log while it is down.")
@click.version_option(package_name="provisioner")
@click.pass_context
def main(ctx: click.Context, state_dir: Path, log_format: str, verbose: int,
         graph_url: str | None, auth: str, audit_log: Path | None, state_url: str | None,
         audit_forward: str | None) -> None:
    """Plan and apply Microsoft 365 provisioning playbooks, cohort by cohort."""
    from .logs import configure

    configure(log_format, verbose)
    destination = None
    if audit_forward:
        from .forward import Destination

        destination = Destination.parse(audit_forward)
    ctx.obj = ops.Session(ops.Settings(state_dir, graph_url, auth == "device-code", audit_log, state_url,
                                       destination))


playbook_arg = click.argument("playbook", type=click.Path(dir_okay=False, path_type=Path))


@main.command()
@playbook_arg
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON document.")
def validate(playbook: Path, as_json: bool) -> None:
    """Check a playbook and its roster without touching any tenant."""
    from .cohorts import assign

    loaded = ops.load(playbook)
    pb = loaded.playbook
    assign(pb, loaded.roster)  # every person in exactly one cohort, no cohort selecting nobody
    tenant = "sandbox" if pb.tenant == "sandbox" else "Microsoft Entra"
    if as_json:
        _json({"valid": True, "playbook": str(playbook), "name": pb.name, "roster": str(pb.roster_path),
               "people": len(loaded.roster), "steps": list(pb.steps), "tenant": tenant,
               "cohorts": [c.name for c in pb.cohorts]})
        return
    click.echo(f"{playbook}: valid. {len(loaded.roster)} people in {pb.roster_path};"
               f" steps: {', '.join(pb.steps)}; tenant: {tenant}")


@main.command()
@click.option("--organisation", metavar="NAME", help="The organisation, e.g. 'Solbacka kommun'.")
@click.option("--domain", metavar="DOMAIN", help="The officials' addresses, e.g. politiker.solbacka.se.")
@click.option("--sku", metavar="SKU", help="Their licence: EXCHANGESTANDARD, 'Office 365 E3', ...")
@click.option("--bodies", metavar="'A,B,...'", help="The committees, in the order they go.")
@click.option("--delivery", type=click.Choice(["print", "email"]), help="How guides reach people.")
@click.option("--sender", metavar="ADDRESS", help="With --delivery email: the mailbox that sends them.")
@click.option("--support", metavar="TEXT", help="Where the guides send people for help.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write the files.")
@click.option("--yes", is_flag=True, help="Ask nothing: what the flags do not give takes its default.")
def init(organisation: str | None, domain: str | None, sku: str | None, bodies: str | None,
         delivery: str | None, sender: str | None, support: str | None, folder: Path, yes: bool) -> None:
    """Write a playbook, an empty roster (and an Excel-ready copy) and a decisions file for
    your organisation, asking for what the flags do not give."""
    from dataclasses import replace

    from .scaffold import Answers, write

    def ask(value: str | None, question: str, default: str | None = None) -> str:
        if value:
            return value.strip()
        if yes or not sys.stdin.isatty():
            if default is None:
                raise InputError(f"init: {question.lower()} is needed (give it as a flag)")
            return default
        return str(click.prompt(question, default=default)).strip()

    org = ask(organisation, "The organisation's name (e.g. Solbacka kommun)")
    dom = ask(domain, "The officials' e-mail domain (e.g. politiker.solbacka.se)").lower()
    lic = ask(sku, "Their licence (skuPartNumber or product name)", "EXCHANGESTANDARD")
    listed = ask(bodies, "The committees, comma-separated, in the order they go (empty: all at once)", "")
    how = ask(delivery, "Guides by print or email", "print")
    if how not in ("print", "email"):
        raise InputError("init: guides go by print or email")
    answers = Answers(org, dom, lic, tuple(b.strip() for b in listed.split(",") if b.strip()), how,
                      None, support)
    if how == "email":
        answers = replace(answers, sender=ask(sender, "The mailbox that e-mails the guides",
                                              answers.default_sender))
    for path in write(answers, folder):
        click.echo(f"wrote {path}")
    click.echo(f"Next: fill in {answers.slug}-roster.csv, then `provisioner validate"
               f" {folder / (answers.slug + '-epost.yaml')}`.")


@main.command()
@playbook_arg
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True, help="json: the plan document; markdown: a summary for a pull"
              " request comment or a pipeline's job summary.")
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the plan for `apply FILE`.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0: nothing to do; 2: changes; 3: people held for a decision; 5: preflight"
              " would stop the apply; 6: the mass-change or re-issue guard would refuse it; 1: an error.")
@click.option("--cohort", metavar="NAME", help="Only this cohort's changes.")
@click.pass_obj
def plan(session: ops.Session, playbook: Path, fmt: str, as_json: bool, out: Path | None,
         detailed_exitcode: bool, cohort: str | None) -> None:
    """Show every change the playbook would make, cohort by cohort. Writes nothing."""
    fmt = "json" if as_json else fmt
    loaded = ops.load(playbook)
    result, ready = _run(ops.plan(session, loaded))
    if cohort is not None:
        if cohort not in result.cohort_order:
            raise InputError(f"no cohort named {cohort!r} (cohorts: {', '.join(result.cohort_order)})")
        result = result.only(cohort)
    if fmt == "json":
        _json(result.to_json())
    elif fmt == "markdown":
        from .render import plan_markdown

        click.echo(plan_markdown(result, ready, playbook=str(playbook)))
    else:
        from .render import plan_lines

        for line in plan_lines(result, detailed=settings_verbose(), color=_color()):
            click.echo(line)
        click.echo("")
        click.echo("Preflight" + (f" for cohort {ready.cohort}" if ready.cohort else "") + ":"
                   + (" ready." if ready.ok else " NOT READY (apply will refuse):"))
        for check in ready.checks:
            if check.status != "ok":
                click.echo(check.line())
        if ready.refusal:
            click.echo(f"Apply would refuse: {ready.refusal}")
    if out is not None:
        ops.save_plan(result, out)
        click.echo(f"Saved the plan to {out}; `provisioner apply {out}` carries it out.", err=fmt != "text")
    if detailed_exitcode:
        sys.exit(_plan_exit(result, ready))


def _plan_exit(result: Any, ready: Any) -> int:
    """The first that holds: preflight fails (5), a guard refuses (6), people are held (3),
    there are changes (2), nothing to do (0)."""
    from .errors import MassChangeError, PreflightError

    if not ready.ok:
        return PreflightError.exit_code
    if ready.refusal:
        return MassChangeError.exit_code
    if result.held:
        return EXIT_HELD
    return EXIT_CHANGES if result.changes else 0


class _Box:
    """A coroutine's result with a short repr."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<result>"


def _run(coro: Any) -> Any:
    """asyncio.run, without the repr of the result: Python 3.11's asyncio.run, restoring its
    SIGINT handler, formats the main task (and so its result) for an error it then drops; for
    a plan of 10,000 people that took 0.65 s (https://github.com/python/cpython/issues/112559)."""
    async def boxed() -> _Box:
        return _Box(await coro)

    return asyncio.run(boxed()).value


def _json(document: Any) -> None:
    """Indented for a person at a terminal, one line for a pipe or a file. At a terminal handed
    to click as text: a Windows console gets å, ä and ö through its own API (JSON escapes every
    control character, so click need not look through it for colour codes to strip). To a pipe
    or a file the UTF-8 bytes as they are (a plan of 50,000 changes: 26 MB, not decoded and
    encoded again)."""
    import orjson

    if sys.stdout.isatty():
        click.echo(orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2).decode(),
                   color=True)
    else:
        click.echo(orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS))


@main.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path), metavar="PLAYBOOK|PLAN")
@click.option("--cohort", metavar="NAME", help="Apply this cohort (its predecessors must have passed).")
@click.option("--all", "all_cohorts", is_flag=True,
              help="Go on to the next cohort while gates pass without a human.")
@click.option("--allow-mass-change", type=click.IntRange(0), metavar="COUNT",
              help="Allow disabling, unlicensing or deleting this many people at once.")
@click.option("--reissue", is_flag=True,
              help="Issue passes and send guides again to managed people this journal has no record of.")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document of the result (needs --yes); nothing else on stdout.")
@click.pass_obj
def apply(session: ops.Session, source: Path, cohort: str | None, all_cohorts: bool,
          allow_mass_change: int | None, reissue: bool, yes: bool, as_json: bool) -> None:
    """Apply the next cohort of a playbook (planned afresh), or exactly a plan saved with
    `plan --out`, then check its gates. Exits 0 when the rollout (or the cohort asked for) is
    done, 8 when it stopped at a gate that waits, 4 when a cohort failed or is held."""
    from .render import BarProgress, LineProgress, NoProgress, cohort_lines, plan_lines, report_lines

    if as_json and not yes:
        raise InputError("apply --json needs --yes: a JSON document has no room for a question")
    saved = ops.read_saved_plan(source)
    loaded = ops.load(Path(saved.playbook_path) if saved else source)
    progress = NoProgress() if as_json else BarProgress() if sys.stdout.isatty() else LineProgress()

    def confirm(plan: Any) -> bool:
        if as_json:
            progress.begin(len(plan.changes))
            return True
        for line in plan_lines(plan, color=_color()):
            click.echo(line)
        if not _confirmed(yes, "Apply these changes?"):
            return False
        progress.begin(len(plan.changes))
        return True

    def show(outcome: Any) -> None:
        progress.close()
        if as_json:
            return
        for pid, why in sorted(outcome.plan.held.items()):
            click.echo(f"held: {pid} is skipped until decided ({why})")
        if outcome.report is not None:
            for line in report_lines(outcome.report):
                click.echo(line)
            for run_id in outcome.run_ids:
                click.echo(f"Run {run_id} is in the journal; `provisioner rollback --run {run_id}"
                           f" {loaded.playbook.source}` undoes it.")  # the playbook, not a plan file
        if loaded.playbook.cohorts:
            for line in cohort_lines(outcome):
                click.echo(line)

    try:
        done = _run(ops.apply(session, loaded, [progress], saved=saved, cohort=cohort,
                                     all_cohorts=all_cohorts, allow_mass_change=allow_mass_change,
                                     reissue=reissue, confirm=confirm, on_cohort=show))
    finally:
        progress.close()
    code = _apply_exit(done)
    if as_json:
        _json({**done.to_json(), "exit_code": code})
        sys.exit(code)
    if done.reconciled.made or done.reconciled.not_made:
        click.echo(f"Resumed after an interrupted run: {done.reconciled.made} unfinished writes had"
                   f" been made, {done.reconciled.not_made} had not (read from Graph).")
    if done.report is None and not any(c.gates for c in done.cohorts):
        click.echo("No changes. The tenant matches the playbook." if not done.plan.changes
                   else "Nothing applied.")
    if done.next_step:
        click.echo(done.next_step)
    sys.exit(code)


def _apply_exit(done: Any) -> int:
    """4: a cohort failed its gates or is held; 1: a change failed; 8: stopped at a gate that
    waits; 0: done."""
    if done.halted:
        return EXIT_HALTED
    if done.report is not None and not done.report.ok:
        return 1
    return EXIT_WAITING if done.waiting else 0


@main.command()
@playbook_arg
@click.option("--json", "as_json", is_flag=True, help="Print the checks as a JSON document.")
@click.pass_obj
def preflight(session: ops.Session, playbook: Path, as_json: bool) -> None:
    """Is the tenant ready for the next cohort? Each failure says what to fix."""
    from .errors import PreflightError

    result = _run(ops.preflight(session, ops.load(playbook)))
    if as_json:
        _json(result.to_json())
        sys.exit(0 if result.ok else PreflightError.exit_code)
    which = f" (next cohort: {result.cohort})" if result.cohort else ""
    click.echo(f"Preflight for {playbook}{which}")
    for check in result.checks:
        click.echo(check.line())
    if not result.ok:
        click.echo("Not ready: apply will not start until the failures above are fixed.")
        sys.exit(PreflightError.exit_code)
    click.echo("Ready.")


@main.command("signin-check")
@playbook_arg
@click.option("--cohort", metavar="NAME", help="One cohort [default: everyone].")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def signin_check(session: ops.Session, playbook: Path, cohort: str | None, fmt: str) -> None:
    """Will Conditional Access let each person sign in the ways the guide tells them (the first
    sign-in in a browser, then mail)? What If for accounts that exist, the policies for the
    rest. Exit 5 when someone would be blocked."""
    from .errors import PreflightError
    from .render import signin_lines

    result = _run(ops.signin_check_report(session, ops.load(playbook), cohort))
    if fmt == "json":
        _json(result.to_json())
    else:
        for line in signin_lines(result):
            click.echo(line)
    if not result.ok:
        sys.exit(PreflightError.exit_code)


@main.command()
@playbook_arg
def permissions(playbook: Path) -> None:
    """The least-privilege Graph application permissions (and directory roles) this playbook
    needs, each from the permission table of the Graph API reference page of the request."""
    from .permissions import required, roles

    pb = ops.load(playbook).playbook
    for name, why in required(pb).items():
        click.echo(f"{name:<56} {why}")
    for role, why in roles(pb).items():
        click.echo(f"{'role: ' + role:<56} {why}")


@main.command("dual-roles")
@playbook_arg
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--excel", is_flag=True,
              help="With --format csv: for Excel in a Swedish locale (UTF-8 with BOM, ';').")
@click.pass_obj
def dual_roles(session: ops.Session, playbook: Path, fmt: str, excel: bool) -> None:
    """Roster people who may already have an account, with candidates, scores and evidence."""
    from .render import dual_role_csv, dual_role_lines

    rows = _run(ops.dual_roles(session, ops.load(playbook)))
    if fmt == "json":
        _json([r.to_json() for r in rows])
    elif fmt == "csv":
        click.echo(dual_role_csv(rows, excel=excel), nl=False)
    else:
        for line in dual_role_lines(rows):
            click.echo(line)


@main.command()
@playbook_arg
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--excel", is_flag=True,
              help="With --format csv: for Excel in a Swedish locale (UTF-8 with BOM, ';').")
@click.pass_obj
def devices(session: ops.Session, playbook: Path, fmt: str, excel: bool) -> None:
    """Per person: device, profile, group and state; totals per model, category and state."""
    from .render import device_csv, device_lines

    report = _run(ops.devices_report(session, ops.load(playbook)))
    if fmt == "json":
        _json(report.to_json())
    elif fmt == "csv":
        click.echo(device_csv(report.people, excel=excel), nl=False)
    else:
        for line in device_lines(report):
            click.echo(line)


@main.command()
@playbook_arg
@click.option("--cohort", metavar="NAME", required=True)
@click.option("--note", help="Why, for the audit log.")
@click.pass_obj
def approve(session: ops.Session, playbook: Path, cohort: str, note: str | None) -> None:
    """Record your approval of a cohort's gate (journal and audit log)."""
    who = ops.approve(session, ops.load(playbook), cohort, note)
    click.echo(f"Cohort {cohort} approved by {who}. `provisioner apply {playbook}` goes on.")


@main.command()
@playbook_arg
@click.option("--person", "person_id", metavar="ID", required=True)
@click.option("--happened/--again", required=True,
              help="The e-mail arrived (or the pass works): record it as done; or send and issue again.")
@click.pass_obj
def settle(session: ops.Session, playbook: Path, person_id: str, happened: bool) -> None:
    """Settle a person's e-mailed guide or pass that got no clear answer from Graph."""
    n = ops.settle(session, ops.load(playbook), person_id, happened)
    click.echo(f"{person_id}: {n} uncertain changes settled ("
               f"{'done' if happened else 'the next apply does them again'}).")


def _confirmed(yes: bool, question: str) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InputError("this command asks for confirmation; in a pipeline give --yes")
    return click.confirm(question, default=False)


@main.command()
@playbook_arg
@click.option("--run", "run_id", metavar="ID", help="Only the changes of this apply run.")
@click.option("--cohort", metavar="NAME", help="Only the changes made for this cohort.")
@click.option("--person", metavar="ID", help="Only the changes made for this person_id.")
@click.option("--dry-run", is_flag=True, help="Show the rollback plan; change nothing.")
@click.option("--force", is_flag=True, help="Undo objects that changed since the tool changed them.")
@click.option("--yes", "-y", is_flag=True, help="Roll back without asking.")
@click.pass_obj
def rollback(session: ops.Session, playbook: Path, run_id: str | None, cohort: str | None,
             person: str | None, dry_run: bool, force: bool, yes: bool) -> None:
    """Undo applied changes from the journal, newest first (created users are soft-deleted)."""
    from .render import LineProgress, report_lines, rollback_lines

    loaded = ops.load(playbook)

    def confirm(planned: Any) -> bool:
        for line in rollback_lines(planned, color=_color()):
            click.echo(line)
        return _confirmed(yes, "Roll back these changes?")

    done = _run(ops.rollback(session, loaded, [LineProgress()], run_id=run_id, cohort=cohort,
                                    person=person, force=force, dry_run=dry_run, confirm=confirm))
    if done.report is None:
        if dry_run or not (done.rollback.plan.changes or done.rollback.already):
            for line in rollback_lines(done.rollback, color=_color()):
                click.echo(line)
        if done.rollback.blocked and not dry_run:
            sys.exit(1)
        return
    for line in report_lines(done.report):
        click.echo(line.replace("Apply complete", "Rollback complete"))
    if done.rollback.blocked:
        click.echo(f"Not undone ({len(done.rollback.blocked)}):")
        for why in done.rollback.blocked:
            click.echo(f"  {why}")
    if not done.report.ok or done.rollback.blocked:
        sys.exit(1)


@main.command()
@playbook_arg
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(session: ops.Session, playbook: Path, as_json: bool) -> None:
    """Runs, their outcomes, unfinished writes, and what a rollback would touch."""
    from .render import status_lines

    result = ops.status(session, ops.load(playbook))
    if as_json:
        _json(result.to_json())
        return
    for line in status_lines(result):
        click.echo(line)


def settings_verbose() -> bool:
    ctx = click.get_current_context()
    return bool(ctx.find_root().params.get("verbose"))


def _color() -> bool:
    return sys.stdout.isatty()


# -- state ---------------------------------------------------------------------------------
@main.group()
def state() -> None:
    """The state: SQLite in the state dir, or a shared PostgreSQL (--state URL)."""


@state.command("migrate")
@click.pass_obj
def state_migrate(session: ops.Session) -> None:
    """Bring the state's schema up to date (apply and the rest do it on first use)."""
    with session.journal() as journal:  # opening it runs what it lacks
        done = journal.backend.migrated
    where = "the shared state" if session.state_url else f"the journal in {session.settings.state_dir}"
    click.echo(f"{where}: " + (f"migrated to version {max(done)}" if done else "up to date"))


@state.command("push")
@click.option("--to", "to", metavar="URL", help="The shared state to fill [default: --state].")
@click.pass_obj
def state_push(session: ops.Session, to: str | None) -> None:
    """Move this state dir's journal into an empty shared state (PostgreSQL), every run with it.
    Afterwards use --state URL (or PROVISIONER_STATE) everywhere."""
    import socket

    from .backends import PostgresBackend, push, redact_url
    from .journal import Journal

    url = to or session.state_url
    if not url:
        raise InputError("state push needs the shared state: --to URL, or --state URL")
    source = Journal(session.settings.state_dir)
    target = PostgresBackend(url)
    try:
        with session.lock("state push"):
            counts = push(source.backend, target, socket.gethostname())
    finally:
        source.close()
        target.close()
    session.audit.event("state_push", to=redact_url(url), **{f"{k}_rows": n for k, n in counts.items()})
    click.echo(f"Pushed {counts['runs']} runs and {counts['changes']} changes to {redact_url(url)}."
               " From now on: --state URL (or PROVISIONER_STATE) on every machine.")


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
@click.option("--lost-reply-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of writes made but answered 504, as if the answer was lost.")
@click.option("--mailbox-delay", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Seconds from an Exchange licence to a usable mailbox.")
@click.option("--ru-limit", type=click.IntRange(0), default=0,
              help="Resource units per 10 s (0: Graph's limit for the tenant's size).")
@click.option("--write-limit", type=click.IntRange(0), default=0,
              help="Writes per 150 s (0: Graph's 3,000).")
@click.option("--quota-primed", is_flag=True,
              help="Start with the write window full, as if the app had been writing at its"
                   " ceiling: the steady state of 20 writes/s instead of a fresh burst.")
@click.option("--replication-delay", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds a new user stays unknown (404) to other requests, as Entra's replicas"
                   " catch up.")
@click.option("--cloud-only", is_flag=True,
              help="Employees are cloud accounts; by default they are synced from on-premises AD"
                   " (onPremisesSyncEnabled), as in most regions, and read-only through Graph.")
@click.option("--fault-new-accounts-disabled", "new_accounts_disabled", is_flag=True,
              help="A wrong setting: every account created from now on comes out disabled.")
@click.option("--fault-conditional-access-after", "conditional_access_after", metavar="N:NAME",
              default="", help="After N writes an admin enables policy NAME, requiring a compliant"
                               " device of all users (between preflight and the first real person).")
@click.pass_obj
def sandbox_reset(session: ops.Session, employees: int, seed: int, **config: Any) -> None:
    """Create a fresh fictional region: employees, licences, groups."""
    from .sandbox import reset_tenant

    state_dir = session.settings.state_dir
    tenant = reset_tenant(state_dir, employees=employees, seed=seed, **config)
    tenant.store.close()
    click.echo(f"Sandbox tenant reset in {state_dir}: {employees} employees and the guide"
               f" mailbox lathundar@ (seed {seed}).")


@sandbox.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def sandbox_show(session: ops.Session, as_json: bool) -> None:
    """Counts of objects and of requests served, by method."""
    from .sandbox.report import describe

    with ops.open_sandbox(session.settings.state_dir) as app:
        facts = describe(app.tenant)
    if as_json:
        _json(facts)
        return
    for section, values in facts.items():
        click.echo(f"{section}:")
        for key, value in values.items():
            click.echo(f"  {key}: {value}")


@sandbox.command("simulate-signins")
@playbook_arg
@click.option("--cohort", metavar="NAME", required=True)
@click.option("--success-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Of the sign-ins the tenant lets through, the share people get right.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def sandbox_simulate_signins(session: ops.Session, playbook: Path, cohort: str,
                             success_rate: float, seed: int) -> None:
    """Record the sign-ins of a cohort's people, each way the guide tells them (the first
    sign-in in a browser on their device, then mail), as the tenant would answer them: a
    disabled account fails, Conditional Access policies block what they block."""
    from .cohorts import assign, is_canary
    from .sandbox.signins import Attempt, simulate
    from .signin import ways
    from .snapshot import ADOPTED, adoption_property, owner_prefix

    loaded = ops.load(playbook)
    members = assign(loaded.playbook, loaded.roster).members
    if cohort not in members:
        raise InputError(f"no cohort named {cohort!r} (cohorts: {', '.join(members)})")
    prefix = owner_prefix(loaded.playbook)
    attr, prop = loaded.playbook.account.ownership_attribute, adoption_property(loaded.playbook)
    people = {f"{prefix}{p.person_id}": p for p in members[cohort] if not is_canary(p.person_id)}
    people |= {f"{tag}{ADOPTED}": p for tag, p in people.items()}
    with ops.open_sandbox(session.settings.state_dir) as app:
        attempts = []
        for u in app.tenant.users.values():
            tag = (u.get("onPremisesExtensionAttributes") or {}).get(attr)
            person = people.get(tag) or people.get(u.get(prop))
            if person is not None:
                attempts += [Attempt(u["userPrincipalName"], way.client_app_type, way.platform)
                             for way in ways(person)]
        counts = simulate(app.tenant, attempts, success_rate, seed)
    click.echo(f"Sign-ins for cohort {cohort}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


@sandbox.command("simulate-checkins")
@click.option("--compliance-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Share of devices that come out compliant.")
@click.option("--serial", "serials", multiple=True, help="Only these devices (repeatable).")
@click.option("--offline", "offline", multiple=True, metavar="SERIAL",
              help="This device stops checking in (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def sandbox_simulate_checkins(session: ops.Session, compliance_rate: float,
                              serials: tuple[str, ...], offline: tuple[str, ...], seed: int) -> None:
    """Devices check in: waiting ones enrol, all sync and report compliance."""
    from .sandbox.devices import set_offline, simulate_checkins

    with ops.open_sandbox(session.settings.state_dir) as app:
        if offline:
            set_offline(app.tenant, offline)
        counts = simulate_checkins(app.tenant, serials or None, compliance_rate, seed)
    click.echo("Devices: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


@sandbox.command("break")
@click.argument("kind", type=click.Choice(["domain", "permission", "role", "extension", "access-pass-policy",
                                           "group", "seats", "usage-location", "conditional-access",
                                           "authenticator"]))
@click.argument("target")
@click.pass_obj
def sandbox_break(session: ops.Session, kind: str, target: str) -> None:
    """Make the tenant not ready in one way (a preflight check fails): domain NAME,
    permission NAME, role NAME (the app's directory role), extension NAME (the directory
    extension adoption marks live in), access-pass-policy disabled|GROUP, group NAME, seats SKU,
    usage-location UPN, conditional-access NAME (an enabled policy named NAME that requires a
    compliant device of all users: officials on their own devices are locked out), authenticator
    disabled (Microsoft Authenticator off: no passwordless method after the pass)."""
    from .sandbox.breaks import apply_break

    with ops.open_sandbox(session.settings.state_dir) as app:
        try:
            what = apply_break(app.tenant, kind, target)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    click.echo(f"Sandbox broken on purpose: {what}.")


@sandbox.command("add-domain")
@click.argument("name")
@click.pass_obj
def sandbox_add_domain(session: ops.Session, name: str) -> None:
    """Add NAME as a verified domain (the officials' addresses, e.g. politiker.solbacka.se)."""
    from .sandbox.prepare import add_domain

    _prepare(session, lambda tenant: add_domain(tenant, name))


@sandbox.command("add-group")
@click.argument("name")
@click.option("--sku", metavar="SKU", help="Its members get this licence (group-based licensing).")
@click.pass_obj
def sandbox_add_group(session: ops.Session, name: str, sku: str | None) -> None:
    """Add a security group named NAME, as an admin would in the portal."""
    from .sandbox.prepare import add_group

    _prepare(session, lambda tenant: add_group(tenant, name, sku))


@sandbox.command("grant")
@click.argument("permission")
@click.pass_obj
def sandbox_grant(session: ops.Session, permission: str) -> None:
    """Grant the tool's app an application permission with admin consent (e.g.
    Group.ReadWrite.All for a playbook with groups.create)."""
    from .sandbox.prepare import grant

    _prepare(session, lambda tenant: grant(tenant, permission))


def _prepare(session: ops.Session, change: Callable[[Any], str]) -> None:
    with ops.open_sandbox(session.settings.state_dir) as app:
        try:
            what = change(app.tenant)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    click.echo(f"Sandbox: {what}.")


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.pass_obj
def sandbox_serve(session: ops.Session, host: str, port: int) -> None:
    """Serve the sandbox over HTTP (then use --graph-url http://HOST:PORT)."""
    import uvicorn

    state_dir = session.settings.state_dir
    with ops.open_sandbox(state_dir) as app:
        click.echo(f"Sandbox Graph at http://{host}:{port}/v1.0 (state in {state_dir})", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")


# -- audit -------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--expect-head", metavar="SEQ:HASH",
              help="A head kept outside the state dir (a SIEM, a ticket): the log must still hold it.")
@click.pass_obj
def audit_verify(session: ops.Session, path: Path | None, expect_head: str | None) -> None:
    """Check the hash chain and the recorded head; name the first broken record and exit 1."""
    from .audit import audit_key, verify

    target = path or session.audit_path
    if not target.exists():
        raise InputError(f"{target}: no audit log there")
    heads = []
    if expect_head is not None:
        seq, _, digest = expect_head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise InputError(f"--expect-head {expect_head!r}: give SEQ:HASH as `audit verify` prints it")
        heads.append((int(seq), digest))
    if path is None or target.resolve() == session.audit_path.resolve():
        with session.journal() as journal:
            held = journal.audit_head(ops.anchor_key(target, session.settings.state_dir,
                                                     shared=bool(session.state_url)))
        heads += [held] if held else []
    verdict = verify(target, audit_key()) if not heads else None
    for head in heads:  # each pass checks the chain too
        if verdict is None or verdict.ok:
            verdict = verify(target, audit_key(), head)
    assert verdict is not None
    click.echo(f"{target}: {verdict}")
    if not verdict.ok:
        sys.exit(1)


@audit.command("show")
@click.option("--upn", help="An account: everything done to it (and to its person under an earlier address).")
@click.option("--person", "person", metavar="PERSON_ID", help="A person of the roster, by person_id.")
@click.option("--run", "run", metavar="RUN_ID", help="A run: its writes, its gates and the command.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_obj
def audit_show(session: ops.Session, upn: str | None, person: str | None, run: str | None,
               as_json: bool) -> None:
    """Who created, changed or removed what, and when: from the audit log, for one account,
    person or run. Exits 1 when the log holds nothing about it."""
    from .audit import history
    from .render import history_lines

    if sum(x is not None for x in (upn, person, run)) != 1:
        raise click.UsageError("give one of --upn, --person or --run")
    if not session.audit_path.exists():
        raise InputError(f"{session.audit_path}: no audit log there")

    def damaged(line: int) -> None:
        click.echo(f"{session.audit_path}:{line}: not an audit record (damaged); skipped", err=True)

    records = history(session.audit_path, upn=upn, person=person, run=run, damaged=damaged)
    query = {k: v for k, v in (("upn", upn), ("person_id", person), ("run_id", run)) if v}
    if as_json:
        _json({"query": query, "log": str(session.audit_path), "records": records})
    else:
        for line in history_lines(records, query):
            click.echo(line)
    if not records:
        sys.exit(1)


@audit.command("forward")
@click.option("--timeout", type=click.FloatRange(0.1), default=30, show_default=True,
              help="Seconds to keep trying before giving up (records keep waiting).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_obj
def audit_forward(session: ops.Session, timeout: float, as_json: bool) -> None:
    """Send the records the collector (--audit-forward) has not confirmed; exit 1 if some wait."""
    import time

    forwarder = session.forwarder
    if forwarder is None:
        raise click.UsageError("no collector: give --audit-forward syslog+tls://HOST:6514"
                               " or set PROVISIONER_AUDIT_FORWARD")
    deadline = time.monotonic() + timeout
    while not forwarder.drain(deadline) and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    waiting = forwarder.waiting()
    result = {"destination": str(forwarder.destination), "sent": forwarder.sent, "waiting": waiting,
              "error": forwarder.error}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{forwarder.destination}: {forwarder.sent} records sent, {waiting} waiting"
                   + (f" ({forwarder.error})" if waiting and forwarder.error else ""))
    if waiting:
        sys.exit(1)


@audit.command("export")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only records from this date (UTC).")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("--excel", is_flag=True,
              help="With --format csv: for Excel in a Swedish locale (UTF-8 with BOM, ';').")
@click.pass_obj
def audit_export(session: ops.Session, since: Any, fmt: str, excel: bool) -> None:
    """Records for information security, as JSON lines or CSV."""
    import datetime as dt

    from .audit import EXPORT_FIELDS, export
    from .csvout import to_csv

    if not session.audit_path.exists():
        raise InputError(f"{session.audit_path}: no audit log there")
    since_utc = since.replace(tzinfo=dt.UTC) if since else None

    def damaged(line: int) -> None:
        click.echo(f"{session.audit_path}:{line}: not an audit record (damaged); skipped", err=True)

    records = export(session.audit_path, since_utc, damaged)
    if fmt == "json":
        for record in records:
            click.echo(json.dumps(record, ensure_ascii=False, sort_keys=True))
        return
    click.echo(to_csv(EXPORT_FIELDS, ([r.get(f) for f in EXPORT_FIELDS] for r in records),
                      excel=excel), nl=False)
