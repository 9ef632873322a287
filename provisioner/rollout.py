"""The apply loop: each person's Changes in step order, people concurrently (bounded),
group memberships 20 to a write.

A failure stops that person's later steps (they depend on the account) but not other
people. Mailbox settings that wait for Exchange are polled until ``mailbox_wait`` runs out,
then left pending for the next apply. Journal, audit and progress display are hooks.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .errors import GraphError, GraphFailure
from .graph.gateway import MEMBERS_PER_WRITE, REQUEST_IDS, Graph
from .model import Action, Change, Outcome, Plan
from .steps import STEPS, PersonRun

log = structlog.get_logger("provisioner.apply")


@dataclass(frozen=True, slots=True)
class ChangeResult:
    change: Change
    outcome: Outcome
    code: str | None = None
    message: str | None = None
    request_id: str | None = None


class Hook:
    """Observers of the apply loop; the base does nothing (terraform's NilHook).

    ``started`` and ``attempted`` bracket every Graph attempt (the journal's intent and
    outcome, the audit log's write event); ``finished`` sees each change's final result once
    (progress display)."""

    def started(self, change: Change, run: PersonRun) -> None:
        pass

    def attempted(self, result: ChangeResult, run: PersonRun) -> None:
        pass

    def finished(self, result: ChangeResult) -> None:
        pass


@dataclass
class Report:
    results: list[ChangeResult] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(r.outcome.value for r in self.results)

    @property
    def failed(self) -> list[ChangeResult]:
        return [r for r in self.results if r.outcome is Outcome.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed


async def apply_plan(graph: Graph, plan: Plan, hooks: Sequence[Hook], *, concurrency: int,
                     mailbox_wait: float, state_dir: Path | None = None) -> Report:
    applier = _Applier(graph, plan, hooks, concurrency)
    for run in applier.runs.values():
        run.state_dir = state_dir
    return await applier.run(mailbox_wait)


class _Applier:
    """Round by round: round k applies every person's k-th change (a person's changes stay in
    order, and a failed account skips the rest of that person). Within a round, memberships
    of the same group are added 20 to a write instead of one write each."""

    def __init__(self, graph: Graph, plan: Plan, hooks: Sequence[Hook], concurrency: int) -> None:
        self.graph = graph
        self.hooks = hooks
        self.report = Report()
        self.by_person: dict[str, list[Change]] = {}
        for change in plan.changes:
            self.by_person.setdefault(change.person_id, []).append(change)
        self.runs = {pid: PersonRun(pid, plan.people[pid].upn, plan.people[pid].user_id)
                     for pid in self.by_person}
        self.gate = asyncio.Semaphore(concurrency)
        self.deferred: list[Change] = []
        self.failed: set[str] = set()  # people whose account could not be made

    async def run(self, mailbox_wait: float) -> Report:
        rounds = max((len(changes) for changes in self.by_person.values()), default=0)
        for k in range(rounds):
            due = [changes[k] for changes in self.by_person.values() if k < len(changes)]
            for change in due:
                if change.person_id in self.failed:
                    self._record(ChangeResult(change, Outcome.SKIPPED, None,
                                              "not attempted: the account could not be made"))
            await self._round([c for c in due if c.person_id not in self.failed])
        await self._poll_pending(mailbox_wait)
        return self.report

    async def _round(self, changes: list[Change]) -> None:
        joins: dict[str, list[Change]] = {}
        single: list[Change] = []
        for change in changes:
            group_id = _joins_group(change)
            (joins.setdefault(group_id, []) if group_id else single).append(change)
        chunks = [members[i:i + MEMBERS_PER_WRITE] for members in joins.values()
                  for i in range(0, len(members), MEMBERS_PER_WRITE)]
        results = await asyncio.gather(*(self._gated(c) for c in single),
                                       *(self._joined(chunk) for chunk in chunks if len(chunk) > 1),
                                       *(self._gated(chunk[0]) for chunk in chunks if len(chunk) == 1))
        for result in results:
            for r in result if isinstance(result, list) else [result]:
                self._settled(r)

    def _settled(self, result: ChangeResult) -> None:
        if result.outcome is Outcome.PENDING:
            self.deferred.append(result.change)
            return
        if result.outcome is Outcome.FAILED and result.change.step == "account":
            self.failed.add(result.change.person_id)
        self._record(result)

    def _record(self, result: ChangeResult) -> None:
        self.report.results.append(result)
        for hook in self.hooks:
            hook.finished(result)

    async def _one(self, change: Change, *, announced: bool = False) -> ChangeResult:
        run = self.runs[change.person_id]
        if not announced:
            for hook in self.hooks:
                hook.started(change, run)
        seen: list[str] = []
        REQUEST_IDS.set(seen)
        try:
            outcome = await STEPS[change.step].apply(self.graph, change, run)
            result = ChangeResult(change, outcome, request_id=seen[-1] if seen else None)
        except GraphFailure as exc:
            log.warning("change.failed", person_id=change.person_id, step=change.step,
                        code=exc.code, status=exc.status, request_id=exc.request_id)
            result = ChangeResult(change, Outcome.FAILED, exc.code, _message(exc), exc.request_id)
        for hook in self.hooks:
            hook.attempted(result, run)
        return result

    async def _joined(self, chunk: list[Change]) -> list[ChangeResult]:
        """Memberships of one group, up to 20, in one write. Graph adds all or none: if it
        refuses (one is already a member, or too new to be found), each is tried alone, so
        each gets its own answer."""
        async with self.gate:
            for change in chunk:
                for hook in self.hooks:
                    hook.started(change, self.runs[change.person_id])
            seen: list[str] = []
            REQUEST_IDS.set(seen)
            group_id = _joins_group(chunk[0])
            assert group_id is not None
            try:
                await self.graph.bind_members(group_id, [self.runs[c.person_id].user_id or ""
                                                         for c in chunk])
            except GraphFailure as exc:
                if isinstance(exc, GraphError) and exc.status in (400, 404):
                    log.info("members.one_by_one", group_id=group_id, code=exc.code, count=len(chunk))
                    results = None
                else:
                    log.warning("members.failed", group_id=group_id, code=exc.code,
                                request_id=exc.request_id, count=len(chunk))
                    results = [ChangeResult(c, Outcome.FAILED, exc.code, _message(exc), exc.request_id)
                               for c in chunk]
            else:
                results = [ChangeResult(c, Outcome.APPLIED, request_id=seen[-1] if seen else None)
                           for c in chunk]
            for result in results or ():
                for hook in self.hooks:
                    hook.attempted(result, self.runs[result.change.person_id])
        if results is not None:
            return results
        return list(await asyncio.gather(*(self._gated(c, announced=True) for c in chunk)))

    async def _poll_pending(self, wait: float) -> None:
        """Changes waiting on Graph (a mailbox) are tried again, less and less often, until
        ``wait`` seconds have passed; what still waits is recorded as pending."""
        deadline = time.monotonic() + wait
        interval = 1.0
        while self.deferred and time.monotonic() < deadline:
            await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0)))
            interval = min(interval * 1.5, 15.0)
            ready = await self._ready(self.deferred)
            results = await asyncio.gather(*(self._gated(c) for c in ready))
            still = {r.change.id for r in results if r.outcome is Outcome.PENDING}
            self.deferred = [c for c in self.deferred if c not in ready or c.id in still]
            for result in results:
                if result.outcome is not Outcome.PENDING:
                    self._record(result)
        for change in self.deferred:
            self._record(ChangeResult(change, Outcome.PENDING, "MailboxNotEnabledForRESTAPI",
                                      "the mailbox is not provisioned yet; run apply again later"))

    async def _ready(self, waiting: list[Change]) -> list[Change]:
        """Ask each waiting step which of its changes can go now (cheap reads, batched)."""
        ready: list[Change] = []
        for step in {c.step for c in waiting}:
            mine = [(c, self.runs[c.person_id]) for c in waiting if c.step == step]
            probe = getattr(STEPS[step], "ready", None)
            ready += await probe(self.graph, mine) if probe else [c for c, _ in mine]
        return ready

    async def _gated(self, change: Change, *, announced: bool = False) -> ChangeResult:
        async with self.gate:
            return await self._one(change, announced=announced)


def _joins_group(change: Change) -> str | None:
    """The group a change adds its person to, when it is only that (so it can be batched)."""
    if change.action is Action.CREATE and change.step in ("groups", "license") and change.after:
        group_id = change.after.get("groupId")
        return str(group_id) if group_id else None
    return None


def _message(exc: GraphFailure) -> str:
    return getattr(exc, "message", None) or str(exc)
