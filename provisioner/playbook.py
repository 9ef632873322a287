"""Playbook: YAML, validated by a strict schema. An unknown key is an error naming its path.

The core sections (tenant, naming, account, cohorts, leavers, ...) are here; each step's own
section (``license``, ``guide``, ...) is declared by its step module, and ``load_playbook``
validates against the core plus the sections of the registered steps (``steps/__init__.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .errors import PlaybookError
from .naming import DISPLAY_FIELDS, NAME_FIELDS, NamingPolicy, template_fields
from .schema import Duration, ExtAttr, Ratio, Share, Strict, Values

if TYPE_CHECKING:
    from .steps.base import Step

GROUP_FIELDS = ("body", "role", "category")
_Strict = Strict


class Certificate(_Strict):
    path: Path
    thumbprint: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the PFX passphrase")


class Federated(_Strict):
    """Workload identity federation: the runner's own OIDC token is the app's credential, so
    no secret lives on the runner. The app has a federated credential for this issuer and
    subject in Entra (App registrations, Certificates & secrets, Federated credentials)."""

    source: Literal["github", "azure-devops", "file"]
    audience: str = "api://AzureADTokenExchange"
    # azure-devops: the environment variable holding the workload identity service
    # connection's id (the token is asked for that connection)
    service_connection_env: str = "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID"
    # file: the environment variable naming a file the platform keeps a fresh token in
    token_file_env: str = "AZURE_FEDERATED_TOKEN_FILE"


class EntraTenant(_Strict):
    tenant_id: str
    # The app's client id (appId); with managed_identity: user, the identity's client id.
    client_id: str
    certificate: Certificate | None = None
    client_secret_env: str | None = Field(
        None, description="environment variable holding the client secret (never the secret)"
    )
    federated: Federated | None = None
    # A VM or container runner's managed identity: the system-assigned one, or a
    # user-assigned one (its client id in client_id).
    managed_identity: Literal["system", "user"] | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> EntraTenant:
        given = [self.certificate, self.client_secret_env, self.federated, self.managed_identity]
        if sum(x is not None for x in given) != 1:
            raise ValueError("give exactly one of certificate, client_secret_env, federated or"
                             " managed_identity")
        return self


class Naming(_Strict):
    upn: str = "{given}.{surname}"
    display_name: str = "{given} {surname}"
    mail_nickname: str = "{upn_local}"

    @field_validator("upn")
    @classmethod
    def _upn_fields(cls, v: str) -> str:
        _check_fields(v.split("@")[0], NAME_FIELDS)
        return v

    @field_validator("display_name")
    @classmethod
    def _display_fields(cls, v: str) -> str:
        return _check_fields(v, DISPLAY_FIELDS)

    @field_validator("mail_nickname")
    @classmethod
    def _nick_fields(cls, v: str) -> str:
        return _check_fields(v, ("upn_local", "given", "surname", "person_id"))


class Account(_Strict):
    usage_location: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "SE"
    department_from: Literal["body", "category", "none"] = "body"
    job_title_from: Literal["role", "category", "none"] = "role"
    # Where the tool marks accounts it manages, so that a re-run (or another machine)
    # recognises them: an onPremisesExtensionAttributes slot, writable on cloud-only users.
    ownership_attribute: Annotated[str, Field(pattern=r"^extensionAttribute([1-9]|1[0-5])$")] = (
        "extensionAttribute15"
    )
    # Where the tool marks an existing account it adopts (use_existing): most employees are
    # synced from on-premises AD, where onPremisesExtensionAttributes are read-only, so the mark
    # goes into a directory extension registered on the tool's app
    # (extension_{appId}_{name}, cloud-mastered and writable on synced users too).
    adoption_extension: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,79}$")] = "provisionerOwner"
    # False: this playbook only works on accounts that exist (staff): a person without one is
    # held, never given a new account.
    create: bool = True




class Selector(_Strict):
    """Roster fields a person must match (all given fields, any of each field's values)."""

    body: Values = ()
    role: Values = ()
    category: Values = ()
    device_model: Values = ()
    person_id: Values = ()
    rest: bool = False

    @model_validator(mode="after")
    def _something(self) -> Selector:
        given = [f for f in ("body", "role", "category", "device_model", "person_id") if getattr(self, f)]
        if self.rest and given:
            raise ValueError("`rest` takes everyone not in another cohort: give no other field")
        if not self.rest and not given:
            raise ValueError("give at least one of body, role, category, device_model, person_id, or rest")
        return self


class VerifyGate(_Strict):
    # Each step owns its checks (account_enabled, license, mailbox, groups, device); none
    # given: every check of the playbook's steps.
    checks: tuple[str, ...] = ()
    timeout: Duration = 300
    interval: Duration = 10


class SigninGate(_Strict):
    min_success: Ratio = Field(description="share of the cohort with a successful sign-in")
    window: Duration = 7 * 86400


class FeedbackGate(_Strict):
    file: Path
    min_responses: Ratio = 0.5
    benefit_at_least: Annotated[int, Field(ge=1, le=5)] = 4
    min_benefit_share: Ratio = 0.7
    max_stressed_share: Ratio = 0.1


class ApprovalGate(_Strict):
    """A human says the cohort is good. ``approvers``: only these may (UPNs, signed in with
    --auth device-code on a real tenant; OS user names on the sandbox); ``distinct_from_applier``:
    not whoever applied the cohort (four eyes)."""

    approvers: tuple[str, ...] = ()
    distinct_from_applier: bool = False

    def allows(self, who: str) -> bool:
        return not self.approvers or who.casefold() in {a.casefold() for a in self.approvers}


def _approval(value: Any) -> Any:
    """``approval: true`` is an approval anyone may give; ``false`` none."""
    if value is True:
        return {}
    return None if value is False else value


class Gates(_Strict):
    max_failure_ratio: Ratio | None = 0.0
    verify: VerifyGate | None = None
    signin: SigninGate | None = None
    feedback: FeedbackGate | None = None
    soak: Duration | None = None
    approval: Annotated[ApprovalGate | None, BeforeValidator(_approval)] = None


class Cohort(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    # The day the cohort starts using the new accounts: guides must be delivered
    # `guide.lead_days` before it, or the cohort is held.
    starts: dt.date | None = None
    select: Selector
    share: Share = None
    limit: Annotated[int | None, Field(ge=1)] = None
    canary: bool = False
    gates: Gates = Gates()
    on_failure: Literal["halt", "rollback"] = "halt"


class Weights(_Strict):
    """How much each piece of evidence says that a directory account is this person."""

    employee_id: Ratio = 0.95
    personal_number: Ratio = 0.99
    mobile: Ratio = 0.6
    private_email: Ratio = 0.6
    name: Ratio = 0.35
    birth_date: Ratio = 0.4


class DualRole(_Strict):
    policy: Literal["separate_account", "use_existing", "review"] = "review"
    match_threshold: Ratio = 0.9
    review_threshold: Ratio = 0.5
    weights: Weights = Weights()
    # The directory side of the personnummer: a keyed hash (HMAC-SHA-256, hex) that HR's sync
    # writes into this attribute; the key is read from the environment variable below.
    personal_number_attribute: ExtAttr | None = None
    personal_number_key_env: str = "PROVISIONER_PNR_KEY"
    birth_date_attribute: ExtAttr | None = None
    # separate_account: where the official's account records the employee account it belongs with
    link_attribute: ExtAttr = "extensionAttribute14"
    decisions: Path | None = None

    @model_validator(mode="after")
    def _thresholds(self) -> DualRole:
        if self.review_threshold > self.match_threshold:
            raise ValueError("review_threshold must not be above match_threshold")
        return self


class Groups(_Strict):
    """The playbook's user groups: displayName templates over roster fields (``Politiker
    {body}``). With ``create``, the playbook owns them: plan shows the groups it lacks as
    changes, apply makes them (security groups; the licensing group of ``license.via_group``
    with its SKU), and rollback removes those it made once no one else is a member. A plain
    list is the same as ``names`` without ``create``. With ``dynamic`` (and ``create``) the
    groups it makes are dynamic: Entra puts each account in them by a membership rule on the
    tool's ownership mark (and the department, for ``{body}``), so no membership is written;
    it needs Microsoft Entra ID P1."""

    names: tuple[str, ...] = Field((), description="group displayName templates, e.g. 'Politiker {body}'")
    create: bool = False
    dynamic: bool = False

    @model_validator(mode="before")
    @classmethod
    def _list(cls, data: Any) -> Any:
        return {"names": data} if isinstance(data, list | tuple) else data

    @field_validator("names")
    @classmethod
    def _group_fields(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for t in v:
            _check_fields(t, GROUP_FIELDS)
        return v


class Leavers(_Strict):
    """What happens to a managed person who is no longer in the roster, stage by stage."""

    # The automatic reply a leaver's mailbox gets at once, in the organisation's words (none
    # when not given).
    auto_reply: str | None = None
    remove_license_after_days: Annotated[int, Field(ge=0)] = 30
    delete_after_days: Annotated[int, Field(ge=0)] = 90

    @model_validator(mode="after")
    def _order(self) -> Leavers:
        if self.delete_after_days < self.remove_license_after_days:
            raise ValueError("delete_after_days must not come before remove_license_after_days")
        return self


class MassChange(_Strict):
    """Like Entra's accidental-deletion prevention: more than this many people disabled,
    unlicensed or deleted in one apply needs --allow-mass-change with the count."""

    ratio: Ratio = 0.1
    people: Annotated[int, Field(ge=0)] = 20

    def threshold(self, managed: int) -> int:
        return max(self.people, int(self.ratio * managed))


class Playbook(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    description: str = ""
    tenant: Literal["sandbox"] | EntraTenant = "sandbox"
    roster: Path
    domain: str
    naming: Naming = Naming()
    account: Account = Account()
    groups: Groups = Groups()
    steps: tuple[str, ...]
    cohorts: tuple[Cohort, ...] = ()
    leavers: Leavers = Leavers()
    mass_change: MassChange = MassChange()
    dual_role: DualRole = DualRole()
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    # A shared state for a team (the journal, approvals, the lock): postgresql://user@host/db.
    # The password comes from PGPASSWORD or ~/.pgpass, never from the playbook.
    state: str | None = None

    # Filled in by load_playbook, not by the file.
    _source: Path = PrivateAttr(Path("playbook.yaml"))
    _digest: str = PrivateAttr("")

    @property
    def source(self) -> Path:
        return self._source

    @property
    def digest(self) -> str:
        """sha256 of the file's bytes: a saved plan is refused when it changes."""
        return self._digest

    @field_validator("state")
    @classmethod
    def _state_url(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("a shared state is a postgresql:// URL")
        if parts.password is not None:
            raise ValueError("no password in the playbook: PGPASSWORD or ~/.pgpass gives it")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Playbook:
        if "@" in self.naming.upn and self.naming.upn.rsplit("@", 1)[1].lower() != self.domain.lower():
            raise ValueError("naming.upn: its domain differs from `domain`")
        if self.dual_role.link_attribute == self.account.ownership_attribute:
            raise ValueError("dual_role.link_attribute: must differ from account.ownership_attribute")
        names = [c.name for c in self.cohorts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"cohorts: the name {dupes[0]!r} is used twice")
        if sum(c.select.rest for c in self.cohorts) > 1:
            raise ValueError("cohorts: only one cohort can select `rest`")
        if self.groups.create and "groups" not in self.steps:
            raise ValueError("groups.create: the `groups` step makes the groups; list it in `steps`")
        return self

    @model_validator(mode="after")
    def _steps_coherent(self) -> Playbook:
        """Every step is known, listed once, and has what it needs (each step says what)."""
        steps = registry()
        unknown = [s for s in self.steps if s not in steps]
        if unknown:
            raise ValueError(f"steps: unknown step {unknown[0]!r} (steps: {', '.join(steps)})")
        if len(set(self.steps)) != len(self.steps):
            raise ValueError("steps: a step is listed twice")
        for name in self.steps:
            problems = steps[name].check(self)
            if problems:
                raise ValueError(problems[0])
        return self

    def section(self, key: str) -> Any:
        """A step's section of the playbook (None when the file has none)."""
        return getattr(self, key, None)

    @property
    def naming_policy(self) -> NamingPolicy:
        local = self.naming.upn.split("@")[0]
        return NamingPolicy(
            upn_template=f"{local}@{self.domain.lower()}",
            display_name_template=self.naming.display_name,
            mail_nickname_template=self.naming.mail_nickname,
        )

    @property
    def roster_path(self) -> Path:
        return self.resolve(self.roster)

    def resolve(self, path: Path) -> Path:
        """A path from the playbook, relative to the playbook's folder."""
        return path if path.is_absolute() else self.source.parent / path


def _check_fields(template: str, allowed: tuple[str, ...]) -> str:
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from None
    unknown = [f for f in fields if f not in allowed]
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} (known: {', '.join(allowed)})")
    return template


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: with the
    last one silently winning, a second `policy:` line once flipped the dual-role policy."""


def _mapping(loader: _UniqueKeys, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice (first on line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def registry() -> dict[str, Step]:
    """The registered steps. Asked for at validation time (a plug-in registry: the steps'
    modules build on this one, so it cannot import them when it loads)."""
    from .steps import STEPS

    return STEPS


def schema() -> type[Playbook]:
    """The playbook's model: the core sections above plus each registered step's own."""
    return _assemble(tuple(registry().values()))


@functools.cache
def _assemble(steps: tuple[Step, ...]) -> type[Playbook]:
    sections: dict[str, Any] = {s.section: (s.schema | None, None) for s in steps
                                if s.schema is not None and s.section not in Playbook.model_fields}
    return create_model("Playbook", __base__=Playbook, **sections)


def load_playbook(path: Path) -> Playbook:
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise PlaybookError([f"{path}: cannot read playbook: {exc.strerror}"]) from None
    try:
        data = yaml.load(raw_bytes, Loader=_UniqueKeys)  # a SafeLoader that refuses duplicate keys
    except RecursionError:
        raise PlaybookError([f"{path}: nested too deeply to be a playbook"]) from None
    except ValueError as exc:  # a date like 2026-02-30, an integer of 5,000 digits
        raise PlaybookError([f"{path}: a value cannot be read: {exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise PlaybookError([f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise PlaybookError([f"{path}: a playbook is a mapping of keys, found {type(data).__name__}"])
    digest = hashlib.sha256(raw_bytes).hexdigest()
    try:
        playbook = schema().model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        tree = yaml.compose(raw_bytes, Loader=_UniqueKeys)
        found = sorted((_position(tree, e), _describe(e)) for e in errors if not _shadowed(e, errors))
        raise PlaybookError([f"{path}{''.join(f':{n}' for n in at)}: {what}" for at, what in found]) from None
    playbook._source = path
    playbook._digest = digest
    return playbook


def _shadowed(err: Any, errors: list[Any]) -> bool:
    """`tenant: Input should be 'sandbox'` is noise when the mapping form has real errors."""
    return err["type"] == "literal_error" and err["loc"][0] == "tenant" and any(
        len(e["loc"]) > 2 and e["loc"][0] == "tenant" for e in errors
    )


# The schema's patterns, in words (an admin should not have to read a regular expression).
# Keys with no default because only the playbook can say them: what to write there.
MISSING_WORDS = {
    "guide.organisation": "the guides speak for it: e.g. organisation: Solbacka kommun",
    "guide.help": "every guide says where to get help: e.g. help: \"Servicedesk: 0660-88 000\"",
}
PATTERN_WORDS = {
    r"^[A-Z]{2}$": "two capital letters, like SE",
    r"^extensionAttribute([1-9]|1[0-5])$": "one of extensionAttribute1 to extensionAttribute15",
    r"^[A-Za-z][A-Za-z0-9_]{0,79}$": "a letter, then up to 79 letters, digits or _",
    r"^[a-z0-9][a-z0-9_-]{0,62}$": "lower-case letters, digits, - and _ (at most 63), like presidium",
    r"^[a-z0-9][a-z0-9-]{0,62}$": "lower-case letters, digits and - (at most 63), like officials-mail",
    r"^([01][0-9]|2[0-3]):[0-5][0-9]$": "a time of day as HH:MM, like 08:00",
}


def _loc(err: Any) -> list[Any]:
    # pydantic names union branches in the location ("tenant.function-after[...].x"): drop them.
    return [p for p in err["loc"] if not str(p).startswith(("function-after", "literal["))]


def _position(tree: Any, err: Any) -> tuple[int, ...]:
    """(line, column) of what the error is about in the YAML (an unknown key: the key itself),
    or of the nearest enclosing node the path still reaches."""
    node, mark = tree, getattr(tree, "start_mark", None)
    for part in _loc(err):
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if found is None:
                break
            key, node = found
            mark = key.start_mark if err["type"] == "extra_forbidden" else node.start_mark
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            mark = node.start_mark
        else:
            break
    return (mark.line + 1, mark.column + 1) if mark is not None else ()


def _known_keys(loc: list[Any]) -> list[str]:
    """The keys the schema knows where ``loc`` points (for a did-you-mean)."""
    import types
    import typing

    from pydantic import BaseModel

    def models(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models(arg)] \
            if typing.get_origin(annotation) is not None or isinstance(annotation, types.UnionType) else []

    current: list[type[BaseModel]] = [schema()]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        current = [m for model in current if str(part) in model.model_fields
                   for m in models(model.model_fields[str(part)].annotation)]
    return sorted({name for model in current for name in model.model_fields})


def _describe(err: Any) -> str:
    loc = _loc(err)
    where = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        hint = ""
        if loc and loc[-1] in {"client_secret", "secret", "password"}:
            hint = " (secrets are never read from the playbook: use client_secret_env)"
        else:
            import difflib

            key, known = str(loc[-1]), _known_keys(loc)
            # a near spelling (licence), or the start of a longer key (mailbox)
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.75) or \
                [k for k in known if len(key) >= 4 and k.startswith(key)][:1]
            hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{where}: unknown key{hint}"
    if err["type"] == "missing":
        what = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        hint = f" ({MISSING_WORDS[what]})" if what in MISSING_WORDS else ""
        return f"{where}: required key is missing{hint}"
    if err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") in PATTERN_WORDS:
        return f"{where} must be {PATTERN_WORDS[err['ctx']['pattern']]} (not {err['input']!r})"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}"
