"""The apply loop: each person's Changes in step order, people in pipelined waves, group
memberships 20 to a write (see ``_Applier``).

A failure stops that person's later steps (they depend on the account) but not other
people. Mailbox settings that wait for Exchange are polled until ``mailbox_wait`` runs out,
then left pending for the next apply. Journal, audit and progress display are hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .errors import GraphError, GraphFailure
from .graph.batch import MAX_ITEMS
from .graph.gateway import MEMBERS_PER_WRITE, Graph
from .model import Change, Outcome, Plan
from .steps import STEPS, PersonRun

log = structlog.get_logger("provisioner.apply")
WAVE = 200         # people whose changes go round by round together
WAVES_AT_ONCE = 3  # enough that one wave's accounts always wait on the write quota
LAST_ROUND = 1_000  # the priority of a wave's waiting changes once its rounds are done


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
    (progress display). The changes that go to Graph together (a round) are all ``started``
    inside one ``starting()``, before the first of them goes."""

    def starting(self) -> contextlib.AbstractContextManager[object]:
        """Around the ``started`` of changes that go together: what a hook writes for them
        may be kept for one commit at the end (the journal: one disk wait, not one a change)."""
        return contextlib.nullcontext()

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


async def apply_plan(graph: Graph, plan: Plan, hooks: Sequence[Hook], *,
                     mailbox_wait: float, state_dir: Path | None = None) -> Report:
    """Carry out the plan. How many requests are in flight is the Graph's to decide (it adapts
    to Graph's load, up to the playbook's ``concurrency``)."""
    applier = _Applier(graph, plan, hooks)
    for run in applier.runs.values():
        run.state_dir = state_dir
    return await applier.run(mailbox_wait)


class _Applier:
    """People in waves of ``WAVE``, a few waves at once; within a wave, round by round: round
    k applies every person's k-th change (a person's changes stay in order, and a failed
    account skips the rest of that person), and memberships of one group go 20 to a write.
    Later rounds go first at Graph (``PRIORITY``), so that while one wave's accounts wait
    for the write quota, an earlier wave's memberships and mailboxes are done."""

    def __init__(self, graph: Graph, plan: Plan, hooks: Sequence[Hook]) -> None:
        # A round's account creates and deletes and its mailbox settings go 20 to a $batch.
        self.graph = graph.coalescing()
        self.hooks = hooks
        self.report = Report()
        self.by_person: dict[str, list[Change]] = {}
        for change in plan.changes:
            self.by_person.setdefault(change.person_id, []).append(change)
        self.runs = {pid: PersonRun(pid, plan.people[pid].upn, plan.people[pid].user_id)
                     for pid in self.by_person}
        self.failed: set[str] = set()  # people whose account could not be made
        self.asked: Counter[str] = Counter()  # how often each waiting change was asked about

    async def run(self, mailbox_wait: float) -> Report:
        people = list(self.by_person)
        waves = asyncio.Semaphore(WAVES_AT_ONCE)

        async def wave(index: int, pids: list[str]) -> None:
            async with waves:
                waiting = await self._wave(index, pids)
            await self._poll_pending(waiting, mailbox_wait, _priority(LAST_ROUND, index))  # no wave slot

        await asyncio.gather(*(wave(i, people[start:start + WAVE])
                               for i, start in enumerate(range(0, len(people), WAVE))))
        return self.report

    async def _wave(self, index: int, pids: list[str]) -> list[Change]:
        """The wave's rounds; returns its changes still waiting on Graph (mailboxes)."""
        waiting: list[Change] = []
        rounds = max(len(self.by_person[pid]) for pid in pids)
        for k in range(rounds):
            due = [self.by_person[pid][k] for pid in pids if k < len(self.by_person[pid])]
            for change in due:
                if change.person_id in self.failed:
                    self._record(ChangeResult(change, Outcome.SKIPPED, None,
                                              "not attempted: the account could not be made"))
            started = time.monotonic()
            waiting += await self._round([c for c in due if c.person_id not in self.failed],
                                         _priority(k, index))
            log.debug("apply.round", wave=index, round=k, changes=len(due),
                      seconds=round(time.monotonic() - started, 3),
                      limits={name: round(lim.limit, 1) for name, lim in self.graph.limits.items()})
        return waiting

    async def _round(self, changes: list[Change], priority: int) -> list[Change]:
        """One round's changes; returns those that wait on Graph (nothing was written)."""
        not_ready = set(await self._not_ready(changes, priority))  # mailboxes Exchange has not made
        joins: dict[str, list[Change]] = {}
        single: list[Change] = []
        for change in changes:
            if change.id in not_ready:
                continue
            key = STEPS[change.step].batch_key(change)
            (joins.setdefault(key, []) if key else single).append(change)
        chunks = [members[i:i + MEMBERS_PER_WRITE] for members in joins.values()
                  for i in range(0, len(members), MEMBERS_PER_WRITE)]
        lone = [chunk[0] for chunk in chunks if len(chunk) == 1]
        self._announce([c for c in changes if c.id not in not_ready])
        results = await asyncio.gather(*(self._one(c, priority) for c in single),
                                       *(self._joined(chunk, priority) for chunk in chunks if len(chunk) > 1),
                                       *(self._one(c, priority) for c in lone))
        waiting = [c for c in changes if c.id in not_ready]
        for result in results:
            for r in result if isinstance(result, list) else [result]:
                if r.outcome is Outcome.PENDING:
                    waiting.append(r.change)
                    continue
                if r.outcome is Outcome.FAILED and STEPS[r.change.step].holds_account:
                    self.failed.add(r.change.person_id)
                self._record(r)
        return waiting

    async def _not_ready(self, changes: list[Change], priority: int) -> list[str]:
        """Ids of changes whose step says, from cheap batched reads, that Graph is not ready
        for them (they wait for ``_poll_pending``; nothing was written)."""
        ready = {c.id for c in await self._ready(changes, priority)}
        return [c.id for c in changes if c.id not in ready]

    def _announce(self, changes: list[Change]) -> None:
        """Every hook's ``started`` for changes about to go to Graph together."""
        with contextlib.ExitStack() as together:
            for hook in self.hooks:
                together.enter_context(hook.starting())
            for change in changes:
                for hook in self.hooks:
                    hook.started(change, self.runs[change.person_id])

    def _record(self, result: ChangeResult) -> None:
        self.report.results.append(result)
        for hook in self.hooks:
            hook.finished(result)

    async def _one(self, change: Change, priority: int) -> ChangeResult:
        """One change (announced: see ``_announce``) and its result."""
        run = self.runs[change.person_id]
        seen: list[str] = []
        # Each change runs in its own task: what is bound here is on its log lines only.
        with structlog.contextvars.bound_contextvars(step=change.step, person_id=change.person_id):
            try:
                outcome = await STEPS[change.step].apply(self.graph.for_change(priority, seen), change, run)
                result = ChangeResult(change, outcome, request_id=seen[-1] if seen else None)
                log.info("change.done", outcome=outcome.value, target=change.target)
            except GraphFailure as exc:
                log.warning("change.failed", code=exc.code, status=exc.status, request_id=exc.request_id)
                result = ChangeResult(change, Outcome.FAILED, exc.code, _message(exc), exc.request_id)
        for hook in self.hooks:
            hook.attempted(result, run)
        return result

    async def _joined(self, chunk: list[Change], priority: int) -> list[ChangeResult]:
        """Memberships of one group, up to 20, in one write (announced). Graph adds all or
        none: if it refuses (one is already a member, or too new to be found), each is tried
        alone, so each gets its own answer."""
        seen: list[str] = []
        group_id = STEPS[chunk[0].step].batch_key(chunk[0])
        assert group_id is not None
        results: list[ChangeResult]
        try:
            await self.graph.for_change(priority, seen).bind_members(
                group_id, [self.runs[c.person_id].user_id or "" for c in chunk])
        except GraphFailure as exc:
            if isinstance(exc, GraphError) and exc.status in (400, 404):
                log.info("members.one_by_one", group_id=group_id, code=exc.code, count=len(chunk))
                return list(await asyncio.gather(*(self._one(c, priority) for c in chunk)))
            log.warning("members.failed", group_id=group_id, code=exc.code,
                        request_id=exc.request_id, count=len(chunk))
            results = [ChangeResult(c, Outcome.FAILED, exc.code, _message(exc), exc.request_id)
                       for c in chunk]
        else:
            results = [ChangeResult(c, Outcome.APPLIED, request_id=seen[-1] if seen else None)
                       for c in chunk]
            for c in chunk:
                log.info("change.done", step=c.step, person_id=c.person_id, outcome="applied",
                          target=c.target, joined=len(chunk))
        for result in results:
            for hook in self.hooks:
                hook.attempted(result, self.runs[result.change.person_id])
        return results

    async def _poll_pending(self, waiting: list[Change], wait: float, priority: int) -> None:
        """Changes waiting on Graph (a mailbox) are tried again, less and less often, until
        ``wait`` seconds have passed; what still waits is recorded as pending."""
        deadline = time.monotonic() + wait
        interval = 0.5
        while waiting and time.monotonic() < deadline:  # each was asked about just now
            await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0)))
            # A poll costs one read while nothing has come (see _ready): back off gently, so a
            # mailbox is seen soon after it comes (within a fifth of its wait), up to 15 s.
            interval = min(interval * 1.2, 15.0)
            ready = await self._ready(waiting, priority)
            if not ready:
                continue
            self._announce(ready)
            results = await asyncio.gather(*(self._one(c, priority) for c in ready))
            still = {r.change.id for r in results if r.outcome is Outcome.PENDING}
            went = {c.id for c in ready} - still
            waiting = [c for c in waiting if c.id not in went]
            for result in results:
                if result.outcome is not Outcome.PENDING:
                    self._record(result)
        for change in waiting:
            self._record(ChangeResult(change, Outcome.PENDING, "MailboxNotEnabledForRESTAPI",
                                      "the mailbox is not provisioned yet; run apply again later"))

    async def _ready(self, waiting: list[Change], priority: int) -> list[Change]:
        """Ask each waiting step which of its changes can go now (cheap reads, batched). A step
        is asked first about 20 (one $batch), and about the rest only if one of those is
        ready: Exchange makes mailboxes roughly in the order their licences came, minutes
        later, so while none is there a wave's mailboxes cost one read a poll, not one per
        person. The 20 are the 10 oldest and the 10 asked about least: mailboxes that never
        come (their licence failed) do not hide the others."""
        ready: list[Change] = []
        for step in {c.step for c in waiting}:
            mine = [c for c in waiting if c.step == step]
            half = MAX_ITEMS // 2
            first = mine[:half] + sorted(mine[half:], key=lambda c: self.asked[c.id])[:half]
            self.asked.update(c.id for c in first)
            found = await self._ask(step, first, priority)
            if found and len(mine) > len(first):
                asked = {c.id for c in first}
                found += await self._ask(step, [c for c in mine if c.id not in asked], priority)
            ready += found
        return ready

    async def _ask(self, step: str, changes: list[Change], priority: int) -> list[Change]:
        return await STEPS[step].ready(self.graph.for_change(priority),
                                      [(c, self.runs[c.person_id]) for c in changes])



def _priority(round_: int, wave: int) -> int:
    """Later rounds first (they finish people), then earlier waves (people started first)."""
    return round_ * 100_000 - wave


def _message(exc: GraphFailure) -> str:
    return getattr(exc, "message", None) or str(exc)
