"""``guide``: a personal quick guide (lathund) per person, ready before their cohort starts.

Rendered from Jinja2 templates (the tool's defaults, or a region's own beside the playbook):
the new address, the first sign-in (with this run's Temporary Access Pass or password, the
only place the secret is ever written), mail on *their* device model, help, and for a dual-role
person how their two accounts relate. Written as printable HTML with owner-only permissions,
with an index per cohort; optionally e-mailed through Graph from a service mailbox to the
person's private address (a one-way change: a sent e-mail cannot be taken back).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..errors import ConfigurationError, StepFailure
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..schema import Strict
from .access_pass import AccessPassStep
from .base import ONE_WAY, REVERSIBLE, BaseStep, PersonRun, PersonView, PlanContext, Reversibility, StepPlan

if TYPE_CHECKING:
    from ..playbook import Playbook
    from ..snapshot import Snapshot

class Guide(Strict):
    language: Literal["sv", "en"] = "sv"
    templates: Path | None = Field(None, description="folder of Jinja2 templates overriding the defaults")
    delivery: Literal["print", "email"] = "print"
    sender: str | None = Field(None, description="service mailbox that sends guides by e-mail")
    lead_days: Annotated[float, Field(ge=0)] = 0
    # Where people get help, and whose guide it is: in every guide, from the playbook only.
    help: str = Field(min_length=1, description="who helps, e.g. 'IT-supporten: 010-123 45 67'")
    # A Temporary Access Pass is a credential: by default an e-mailed guide says the code comes
    # on paper or by SMS from the secretariat, and only the printable guide carries it.
    email_access_pass: bool = False
    organisation: str = Field(min_length=1, description="the organisation's name, e.g. Solbacka kommun")

    @model_validator(mode="after")
    def _sender(self) -> Guide:
        if self.delivery == "email" and not self.sender:
            raise ValueError("guide.sender: e-mail delivery needs the service mailbox to send from")
        return self


TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FAMILY = {"iphone": "ios", "ipad": "ios", "samsung": "android", "galaxy": "android", "sm-": "android"}


def device_family(model: str) -> str:
    low = model.casefold()
    return next((family for key, family in FAMILY.items() if low.startswith(key)), "web")


def _pass_terms(ctx: PlanContext, starts: str | None) -> Json:
    spec = ctx.playbook.section(AccessPassStep.section or "")
    return {"lifetimeInMinutes": spec.lifetime_minutes if spec else None,
            "usableOnce": spec.usable_once if spec else None,
            "passValidFrom": f"{starts} {spec.valid_from}" if spec and starts else None}


def _sign_in_advice(ctx: PlanContext, view: PersonView) -> Json:
    """``passwordless``: the tenant offers them a passwordless method, so the guide may say
    they will sign in without a password; ``mailClient``: "app" (Outlook for iOS or Android)
    unless Conditional Access would stop the app and let the browser in, then "web"."""
    from ..signin import offered, predict_planned
    from . import enrolled_device, group_ids

    read = ctx.snapshot.extra.get("guide") or {}
    access = ctx.snapshot.conditional_access
    person = view.person
    groups = group_ids(ctx.playbook, person, ctx.snapshot)
    methods = read.get("methods") or {}
    passwordless = any(offered(methods.get(m), groups, passwordless=True)
                       for m in ("MicrosoftAuthenticator", "Fido2"))
    # Without the policies (not readable: preflight says so) the guide keeps Outlook's app.
    web = access is not None and bool(access.policies) and device_family(person.device_model or "") != "web" \
        and predict_planned(person, "", access.policies, access.locations, groups,
                            managed_device=enrolled_device(ctx.playbook, person)).web_mail
    return {"passwordless": passwordless, "mailClient": "web" if web else "app"}


def _employee_upn(view: PersonView) -> str | None:
    """For a dual-role person: the employee account theirs belongs with."""
    if view.link is not None:
        return view.link.upn
    return None


def _uncertain(pid: str) -> str:
    """A guide or pass of this person got no clear answer: it is not sent again on its own."""
    return ("a guide e-mail or pass got no clear answer from Graph (it may have gone out):"
            f" ask the person, then `provisioner settle PLAYBOOK --person {pid} --happened`"
            " or `--again`")


class GuideStep(BaseStep):
    name: ClassVar[str] = "guide"
    section: ClassVar[str | None] = "guide"
    schema: ClassVar[type[Strict] | None] = Guide
    goes_with_user: ClassVar[bool] = False  # a file on disk does not go with a deleted account
    hands_over: ClassVar[bool] = True
    guide: ClassVar[bool] = True
    undo_rank: ClassVar[int] = 10

    def check(self, playbook: Playbook) -> list[str]:
        if playbook.steps[-1] != self.name:
            return ["steps: `guide` must come last (it describes what the other steps made)"]
        return super().check(playbook)

    def operations(self, playbook: Playbook) -> dict[str, str]:
        ops = {"method_configuration": "the guide promises passwordless sign-in only where the"
                                       " authentication methods policy offers it"}
        if playbook.section("guide").delivery == "email":
            ops["send_mail"] = "send each person their guide from the service mailbox"
        return ops

    async def read(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> dict[str, Any]:
        """What the guide must match: the methods a person can register after the pass
        (Microsoft Authenticator, FIDO2 keys). The Conditional Access policies that decide which
        mail client will let them in are in the snapshot already."""
        from ..errors import GraphError

        methods: dict[str, Json] = {}
        for method in ("MicrosoftAuthenticator", "Fido2"):
            try:
                methods[method] = await graph.method_configuration(method)
            except GraphError as exc:
                if exc.status not in (403, 404):
                    raise
        return {"extra": {**snapshot.extra, self.name: {"methods": methods}}}

    def warnings(self, ctx: PlanContext, changes: Sequence[Change]) -> list[str]:
        mailed = [c for c in changes if c.step == self.name and (c.after or {}).get("delivery") == "email"]
        if ctx.playbook.section("guide").email_access_pass and any(
                (c.after or {}).get("needs_secret") for c in mailed):
            return ["guide.email_access_pass: Temporary Access Passes are e-mailed to private"
                    " addresses; whoever reads such a mailbox can sign in as the person"]
        return []

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        p = view.person
        if p.person_id in ctx.snapshot.guides:
            return StepPlan()
        if p.person_id in ctx.snapshot.uncertain:
            return StepPlan(notes=[_uncertain(p.person_id)])
        return StepPlan([self._change(ctx, view)])

    def _change(self, ctx: PlanContext, view: PersonView) -> Change:
        spec = ctx.playbook.section("guide")
        p = view.person
        email = spec.delivery == "email" and bool(p.private_email)
        templates = ctx.playbook.resolve(spec.templates) if spec.templates else None
        after = {
            "language": spec.language, "delivery": "email" if email else "print",
            "to": p.private_email if email else None, "sender": spec.sender if email else None,
            "upn": view.user.upn if view.user else view.names.upn, "name": f"{p.given_name} {p.surname}",
            "given": p.given_name, "role": p.role, "body": p.body, "device": p.device_model,
            "employee_upn": _employee_upn(view),
            "help": spec.help, "organisation": spec.organisation,
            "templates": str(templates) if templates else None,
            # A saved plan is stale once a template changes: what apply renders is what was planned.
            "templatesDigest": template_digest(templates) if templates else None,
            "needs_secret": AccessPassStep.name in ctx.playbook.steps and not view.adopted,
            "cohort": ctx.cohort_of.get(p.person_id, "all"), "playbook": ctx.playbook.name,
            "starts": ctx.starts.get(p.person_id),
            "emailSecret": bool(email and spec.email_access_pass),
            **_pass_terms(ctx, ctx.starts.get(p.person_id)),
            **_sign_in_advice(ctx, view),
        }
        return Change(self.name, p.person_id, Action.CREATE, f"guide:{p.person_id}", None, after)

    def reversibility(self, change: Change) -> Reversibility:
        return ONE_WAY if (change.after or {}).get("delivery") == "email" else REVERSIBLE

    def undo(self, change: Change, before_image: Json | None) -> Change | None:
        if self.reversibility(change) == ONE_WAY:
            return None
        return Change(self.name, change.person_id, Action.DELETE, change.target, change.after, None)

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None:
        wanted = change.before if change.action is Action.DELETE else change.after
        assert wanted is not None
        if wanted.get("delivery") == "email":
            return None  # a sent e-mail cannot be read back from here
        return dict(wanted) if _path(run, wanted).exists() else None

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        if change.action is Action.DELETE:
            assert change.before is not None
            path = _path(run, change.before)
            if not path.exists():
                return Outcome.UNCHANGED
            path.unlink()
            _write_index(path.parent, change.before, remove=change.person_id)
            return Outcome.APPLIED
        data = change.after
        assert data is not None
        secret = {k: v for k, v in run.secrets.items() if k in ("access_pass", "password")}
        if data.get("needs_secret") and not secret:
            raise StepFailure("NoFirstSignInSecret", "no Temporary Access Pass was issued in this run;"
                              " the guide is not delivered without one (apply again)")
        html = render(data, secret)
        path = _path(run, data)
        _write_private(path, html)
        _write_index(path.parent, data, add={"person_id": change.person_id, "name": data["name"],
                                             "upn": data["upn"], "delivery": data["delivery"],
                                             "file": path.name})
        if data["delivery"] == "email":
            subject = ("Din lathund: så loggar du in" if data["language"] == "sv"
                       else "Your quick guide: signing in")
            # The pass is a credential: it goes to a private mailbox only if the playbook says so.
            mailed = html if data.get("emailSecret") or not secret else render(data, {}, elsewhere=True)
            await graph.send_mail(data["sender"], data["to"], subject, mailed)
        if run.pass_id:  # the journal knows which pass went out with this guide (its id only)
            run.observed[change.id] = {"accessPassMethodId": run.pass_id}
        run.secrets.clear()  # delivered: the secret has no other place to be
        return Outcome.APPLIED


def template_digest(folder: Path) -> str:
    """sha256 over a region's templates, after checking that nobody else can change them: a
    template runs inside the process that holds the app's Graph credentials."""
    import hashlib

    if not folder.is_dir():
        raise ConfigurationError(f"guide.templates: {folder} is not a folder")
    digest = hashlib.sha256()
    for path in [folder, *sorted(folder.glob("*.j2"))]:
        mode = path.stat().st_mode
        if os.name == "posix" and mode & 0o022:
            raise ConfigurationError(
                f"guide.templates: {path} can be changed by other users (mode {mode & 0o777:o}); a"
                " template runs while the tool holds the app's credentials: `chmod go-w` it")
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def render(data: Json, secret: dict[str, str], elsewhere: bool = False) -> str:
    """The guide; ``elsewhere``: the first sign-in code is handed over on paper or by SMS.
    Templates run in Jinja2's sandbox: a region's template can lay out text, never reach
    Python (``''.__class__``, ``os.system``)."""
    from jinja2 import FileSystemLoader, select_autoescape
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    search = [data["templates"], str(TEMPLATES)] if data.get("templates") else [str(TEMPLATES)]
    env = ImmutableSandboxedEnvironment(loader=FileSystemLoader(search),
                                        autoescape=select_autoescape(["html", "j2"]))
    template = env.get_template(f"guide.{data['language']}.html.j2")
    minutes = data.get("lifetimeInMinutes") or 7 * 24 * 60
    return template.render(
        **{k: v for k, v in data.items() if k not in ("templates",)},
        device_family=device_family(data.get("device") or ""),
        access_pass=secret.get("access_pass"), password=secret.get("password"),
        lifetime_text=_lifetime(minutes, data["language"]), usable_once=bool(data.get("usableOnce")),
        secret_elsewhere=elsewhere)


def _lifetime(minutes: int, language: str) -> str:
    days, hours = divmod(minutes // 60, 24)
    if language == "sv":
        return f"{days} dagar" if days else f"{hours} timmar"
    return f"{days} days" if days else f"{hours} hours"


def guide_dir(state_dir: Path, data: Json) -> Path:
    return state_dir / "guides" / str(data["playbook"]) / str(data.get("cohort") or "all")


def _path(run: PersonRun, data: Json) -> Path:
    if run.state_dir is None:
        raise StepFailure("NoStateDir", "guides need a state dir to be written to")
    return guide_dir(run.state_dir, data) / f"{run.person_id}.html"


def _write_private(path: Path, text: str) -> None:
    """Owner-only: the file may hold a Temporary Access Pass."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _write_index(folder: Path, data: Json, add: dict[str, Any] | None = None,
                 remove: str | None = None) -> None:
    """The cohort's printable index (and its JSON manifest): who has a guide and how it went
    out. Names and addresses only, never a secret."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    manifest = folder / "index.json"
    known = json.loads(manifest.read_text(encoding="utf-8")) if manifest.exists() else []
    entries = {e["person_id"]: e for e in known}
    if add is not None:
        entries[add["person_id"]] = add
    if remove is not None:
        entries.pop(remove, None)
    ordered = [entries[k] for k in sorted(entries)]
    _write_private(manifest, json.dumps(ordered, ensure_ascii=False, indent=1))
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["j2"]))
    language = data.get("language", "sv")
    title = f"Lathundar, {data.get('cohort')}" if language == "sv" else f"Guides, {data.get('cohort')}"
    _write_private(folder / "index.html", env.get_template("index.html.j2").render(
        guides=ordered, language=language, title=title))
