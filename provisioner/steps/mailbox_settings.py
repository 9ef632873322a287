"""``mailbox_settings``: language, time zone, date and time formats of the new mailbox.

Exchange creates the mailbox minutes (up to 24 h) after the licence; until then Graph
answers 404 MailboxNotEnabledForRESTAPI. That is not a failure: the change stays pending
and the apply loop polls for it, then leaves it for the next apply.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field, field_validator

from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..schema import Strict
from ..snapshot import MAILBOX_NOT_READY, Snapshot, owner_prefix, read_mailboxes
from .base import BaseStep, Leaver, Leaving, PersonRun, PersonView, PlanContext, StepPlan, inverse, shape

if TYPE_CHECKING:
    from ..playbook import Playbook


# The languages an Exchange Online mailbox can be set to (Outlook on the web's display
# languages, as Set-MailboxRegionalConfiguration takes them), by culture name.
LANGUAGES = frozenset({
    "ar-SA", "bg-BG", "ca-ES", "cs-CZ", "cy-GB", "da-DK", "de-AT", "de-CH", "de-DE", "el-GR", "en-AU",
    "en-CA", "en-GB", "en-IE", "en-IN", "en-NZ", "en-US", "en-ZA", "es-ES", "es-MX", "et-EE", "eu-ES",
    "fa-IR", "fi-FI", "fil-PH", "fr-BE", "fr-CA", "fr-CH", "fr-FR", "ga-IE", "gl-ES", "he-IL", "hi-IN",
    "hr-HR", "hu-HU", "id-ID", "is-IS", "it-IT", "ja-JP", "kk-KZ", "ko-KR", "lt-LT", "lv-LV", "mk-MK",
    "ms-MY", "nb-NO", "nl-BE", "nl-NL", "nn-NO", "pl-PL", "pt-BR", "pt-PT", "ro-RO", "ru-RU", "sk-SK",
    "sl-SI", "sq-AL", "sr-Latn-RS", "sv-FI", "sv-SE", "th-TH", "tr-TR", "uk-UA", "ur-PK", "vi-VN",
    "zh-CN", "zh-HK", "zh-TW",
})
# Windows time zone ids Exchange takes for mailboxSettings.timeZone (IANA names work too), the
# ones a Nordic organisation meets; see Windows' list (tzutil /l) for the rest.
WINDOWS_ZONES = frozenset("""
UTC|W. Europe Standard Time|Central Europe Standard Time|Central European Standard Time|
Romance Standard Time|GMT Standard Time|Greenwich Standard Time|FLE Standard Time|
GTB Standard Time|E. Europe Standard Time|Russian Standard Time|Turkey Standard Time|
Belarus Standard Time|Kaliningrad Standard Time|Morocco Standard Time|Israel Standard Time|
Arabian Standard Time|Arab Standard Time|Iran Standard Time|Pakistan Standard Time|
India Standard Time|China Standard Time|Tokyo Standard Time|Korea Standard Time|
Singapore Standard Time|AUS Eastern Standard Time|New Zealand Standard Time|
Eastern Standard Time|Central Standard Time|Mountain Standard Time|Pacific Standard Time|
Atlantic Standard Time|Greenland Standard Time|Azores Standard Time|Cape Verde Standard Time|
South Africa Standard Time|E. Africa Standard Time|W. Central Africa Standard Time|
Egypt Standard Time|Jordan Standard Time|Middle East Standard Time|Syria Standard Time|
SE Asia Standard Time|Hawaiian Standard Time|Alaskan Standard Time|UTC-11|UTC+12|UTC-02
""".replace("\n", "").split("|"))


def _known_zone(name: str) -> bool:
    import zoneinfo

    if name in WINDOWS_ZONES:
        return True
    iana = zoneinfo.available_timezones()
    # Without a time zone database (Windows without the tzdata package), an Area/City name is
    # taken as it is: Exchange has the last word.
    return name in iana if iana else bool(re.fullmatch(r"[A-Z][A-Za-z_]+(/[A-Z][A-Za-z_+-]+)+", name))


def _guess(value: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(value, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class MailboxSettings(Strict):
    language: str = "sv-SE"
    time_zone: str = "W. Europe Standard Time"

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        if v in LANGUAGES:
            return v
        raise ValueError(f"{v!r} is not a language Exchange sets a mailbox to (a culture name like"
                         f" sv-SE){_guess(v.replace('_', '-'), LANGUAGES)}")

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, v: str) -> str:
        if _known_zone(v):
            return v
        raise ValueError(f"{v!r} is not a time zone Exchange knows (a Windows name like 'W. Europe"
                         f" Standard Time' or an IANA name like Europe/Stockholm){_guess(v, WINDOWS_ZONES)}")

    date_format: str = "yyyy-MM-dd"
    time_format: str = "HH:mm"
    # A mailbox appears minutes (up to 24 h) after its licence: apply polls this long for it,
    # then leaves the settings pending for the next apply.
    wait_seconds: Annotated[float, Field(ge=0, le=3600)] = 120


def desired_settings(ctx: PlanContext) -> Json:
    s = ctx.playbook.section("mailbox_settings")
    return {"language": {"locale": s.language}, "timeZone": s.time_zone,
            "dateFormat": s.date_format, "timeFormat": s.time_format}


def _comparable(key: str, value: Any) -> Any:
    if key == "language" and isinstance(value, dict):
        return {"locale": value.get("locale")}
    return value


class MailboxSettingsStep(BaseStep):
    name: ClassVar[str] = "mailbox_settings"
    section: ClassVar[str | None] = "mailbox_settings"
    schema: ClassVar[type[Strict] | None] = MailboxSettings
    requires: ClassVar[dict[str, str]] = {"license": "the licence makes the mailbox"}
    undo_rank: ClassVar[int] = 60
    leave_rank: ClassVar[int] = 20

    async def read(self, graph: Graph, playbook: Playbook, snapshot: Snapshot) -> dict[str, Any]:
        mine = list(snapshot.managed(owner_prefix(playbook)).values())
        return {"mailboxes": await read_mailboxes(graph, [u.id for u in mine])}

    def plan(self, ctx: PlanContext, view: PersonView) -> StepPlan:
        return StepPlan(self._changes(ctx, view))

    def _changes(self, ctx: PlanContext, view: PersonView) -> list[Change]:
        if view.adopted:
            return []  # an employee's own mailbox: their settings are theirs
        wanted = desired_settings(ctx)
        upn = view.user.upn if view.user else view.names.upn
        current = ctx.snapshot.mailboxes.get(view.user.id) if view.user else None
        if current is None:  # no account or no mailbox yet: everything is to be set
            return [Change(self.name, view.person.person_id, Action.UPDATE, f"mailbox:{upn}",
                           None, wanted)]
        changed = [k for k in wanted if _comparable(k, current.get(k)) != wanted[k]]
        if not changed:
            return []
        return [Change(self.name, view.person.person_id, Action.UPDATE, f"mailbox:{upn}",
                       {k: _comparable(k, current.get(k)) for k in changed},
                       {k: wanted[k] for k in changed})]

    def leave(self, ctx: PlanContext, leaver: Leaver) -> Leaving:
        """An automatic reply saying where to write instead (``leavers.auto_reply``), at once."""
        user = leaver.user
        if not ctx.playbook.leavers.auto_reply:
            return Leaving()
        wanted: Json = {"status": "alwaysEnabled", "externalAudience": "all",
                        "internalReplyMessage": ctx.playbook.leavers.auto_reply,
                        "externalReplyMessage": ctx.playbook.leavers.auto_reply}
        current = (ctx.snapshot.mailboxes.get(user.id) or {}).get("automaticRepliesSetting")
        if user.adopted or current is None:  # the employee's, or no mailbox (yet, or any more)
            return Leaving()
        have = {k: current.get(k) for k in wanted}
        if have == wanted:
            return Leaving()
        return Leaving([Change(self.name, leaver.person_id, Action.UPDATE, f"mailbox:{user.upn}",
                               {"automaticRepliesSetting": have}, {"automaticRepliesSetting": wanted})])

    def operations(self, playbook: Playbook) -> dict[str, str]:
        return {"get_mailbox_settings": "read mailbox settings (and whether the mailbox exists)",
                "update_mailbox_settings": "set language, time zone and formats"}

    def undo(self, change: Change, before_image: Json | None) -> Change | None:
        return inverse(change, before_image or change.before)

    async def current(self, graph: Graph, change: Change, run: PersonRun) -> Json | None:
        keys = shape(change) or {}
        try:
            settings = await graph.get_mailbox_settings(run.user_id or run.upn)
        except GraphError as exc:
            if exc.status == 404:
                return None
            raise
        return {k: _comparable(k, settings.get(k)) for k in keys}

    async def apply(self, graph: Graph, change: Change, run: PersonRun) -> Outcome:
        assert change.after is not None and run.user_id is not None
        if change.before is None and change.id not in run.observed:
            # Read first: a missing mailbox costs a read, not a failed write, and what is
            # there now is the image an undo restores (``ready`` reads it for many at once).
            now = await self.current(graph, change, run)
            if now is None:
                return Outcome.PENDING
            run.observed[change.id] = now
        try:
            await graph.update_mailbox_settings(run.user_id, change.after)
        except GraphError as exc:
            if exc.status == 404 and exc.code == MAILBOX_NOT_READY:
                return Outcome.PENDING
            raise
        return Outcome.APPLIED

    async def ready(self, graph: Graph, waiting: list[tuple[Change, PersonRun]]) -> list[Change]:
        """Which waiting changes have their mailbox now: one $batch of reads per 20."""
        ids = [run.user_id for _, run in waiting if run.user_id]
        found = await read_mailboxes(graph, ids)
        ready = []
        for change, run in waiting:
            settings = found.get(run.user_id or "")
            if settings is not None:
                run.observed[change.id] = {k: _comparable(k, settings.get(k)) for k in shape(change) or {}}
                ready.append(change)
        return ready
