"""``mailbox_settings``: language, time zone, date and time formats of the new mailbox.

Exchange creates the mailbox minutes (up to 24 h) after the licence; until then Graph
answers 404 MailboxNotEnabledForRESTAPI. That is not a failure: the change stays pending
and the apply loop polls for it, then leaves it for the next apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field

from ..errors import GraphError
from ..graph.gateway import Graph
from ..model import Action, Change, Json, Outcome
from ..schema import Strict
from ..snapshot import MAILBOX_NOT_READY, Snapshot, owner_prefix, read_mailboxes
from .base import BaseStep, Leaver, Leaving, PersonRun, PersonView, PlanContext, StepPlan, inverse, shape

if TYPE_CHECKING:
    from ..playbook import Playbook


class MailboxSettings(Strict):
    language: str = "sv-SE"
    time_zone: str = "W. Europe Standard Time"
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
