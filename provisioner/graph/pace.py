"""How many requests may be in flight to one Graph service: additive increase, multiplicative
decrease (AIMD), as TCP does with its window.

Graph's quotas are per app and tenant and shared with whatever else the app is doing, so no
fixed pool is right: too small wastes the quota, too large earns 429s. The limit grows by
about one per round of answers while Graph is comfortable, by a quarter of that while Graph
says a quota is over 80% used (``x-ms-throttle-limit-percentage``: at a steady ceiling it
always is, so holding there would never recover from a cut), and halves on a 429 or 503
(once per round trip, so that one burst of 429s is one signal). Retry-After itself is honoured by the
retry layer; a request waiting out its Retry-After holds no slot.

Each service has its own quotas (Entra ID, Exchange, Intune), so each gets its own limit.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

OK, BUSY, THROTTLED = "ok", "busy", "throttled"

_EXCHANGE = re.compile(r"^/users/[^/]+/(mailboxSettings|sendMail|mailFolders|messages)")


def service_of(path: str) -> str:
    """The Graph service whose quotas a request (path relative to /v1.0) counts against.
    The sandbox keeps its own rule, from the same documentation."""
    if path.startswith("/deviceManagement"):
        return "intune"
    return "exchange" if _EXCHANGE.match(path) else "entra"


@dataclass
class AdaptiveLimit:
    ceiling: int
    limit: float = 4.0
    floor: float = 1.0
    in_flight: int = 0
    cuts: int = 0
    # (-priority, arrival, future): a higher priority first, then first come first served
    _waiters: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)
    _last_cut: float = float("-inf")
    _rtt: float = 0.1  # smoothed seconds per answer

    def __post_init__(self) -> None:
        self.limit = min(self.limit, float(self.ceiling))

    async def acquire(self, priority: int = 0) -> float:
        """Wait for a slot (a higher ``priority`` is served first); returns the time it was
        granted (for the round-trip estimate)."""
        if self.in_flight >= int(self.limit) or self._waiters:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (-priority, next(self._arrivals), future)
            heapq.heappush(self._waiters, entry)
            try:
                await future
            except asyncio.CancelledError:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                elif future.done() and not future.cancelled():
                    self.in_flight -= 1  # the slot granted to us goes to the next in line
                    self._wake()
                raise
        else:
            self.in_flight += 1
        return time.monotonic()

    def release(self, started: float, signal: str) -> None:
        now = time.monotonic()
        self.in_flight -= 1
        self._rtt = 0.8 * self._rtt + 0.2 * max(now - started, 0.001)
        if signal == THROTTLED:
            if now - self._last_cut > self._rtt:
                self.limit = max(self.floor, self.limit / 2)
                self._last_cut = now
                self.cuts += 1
        elif signal == OK:
            self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
        elif signal == BUSY:  # near the quota: keep probing, at a quarter of the pace
            self.limit = min(float(self.ceiling), self.limit + 0.25 / self.limit)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            future = heapq.heappop(self._waiters)[2]
            if not future.done():
                self.in_flight += 1
                future.set_result(None)


# Entra ID's documented write quota per app and tenant: 3,000 writes in any 150 seconds
# (https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits).
ENTRA_WRITES, ENTRA_WINDOW = 3000, 150.0
SHARE = 0.95  # of the quota this tool takes at most, for other work of the same app
SCALE_ENV = "PROVISIONER_QUOTA_TIME_SCALE"  # a time-scaled sandbox's windows (benchmarks)


class WritePacer:
    """Entra writes paced to the documented quota instead of probed with 429s (Graph's
    guidance: requests sent while throttled extend the throttling).

    Alone in the quota, the tool writes as fast as the adaptive limit lets it while its own
    writes in the last window stay under 95% of the quota: a fresh window is used in a burst,
    then as fast as it empties. When Graph reports more use than the tool's own
    (``x-ms-throttle-limit-percentage``, sent above 80%, or a 429), the rest of the window
    belongs to someone else, whose writes leave it at an unknown pace: from then on writes go
    one at a time at 95% of the quota's steady rate (19 a second). Those old writes leave it
    at the steady rate at least once it is full, so the window does not overflow."""

    def __init__(self, limit: int = ENTRA_WRITES, window: float = ENTRA_WINDOW, share: float = SHARE,
                 clock: Callable[[], float] = time.monotonic, scale: float | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        scale = float(os.environ.get(SCALE_ENV) or 1.0) if scale is None else scale
        self.limit, self.window, self.clock, self.sleep = limit, window * scale, clock, sleep
        self.budget = int(limit * share)
        self.interval = self.window / (limit * share)  # seconds per write at the steady rate
        self.ours: collections.deque[float] = collections.deque()  # when each of our writes went
        self.shared = False
        self._next = 0.0  # the steady rate's next free moment
        # The first write goes alone: its answer says whether the window is someone else's.
        self._probe: asyncio.Future[None] | None = None

    async def take(self, n: int = 1) -> None:
        """Wait until ``n`` writes may go. Each caller reserves its moment when it arrives and
        sleeps once: callers waiting together never all wake to compete for one slot."""
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_future()
        elif not self._probe.done():
            await asyncio.shield(self._probe)
        now = self.clock()
        while self.ours and self.ours[0] <= now - self.window:
            self.ours.popleft()
        at = now
        over = len(self.ours) + n - self.budget
        if over > 0:  # our window is full: when enough of our (reserved) writes have left it
            at = self.ours[over - 1] + self.window
        if self.shared:
            # Slots unused in the last ten seconds (a wait that ended late on a busy loop, a
            # pause between rounds) may be caught up: the window's old writes have left at
            # the steady rate at least, faster than ours came. Longer ago, they are gone.
            self._next = max(self._next, now - self.window / 15)
            # n writes at once (a $batch) go at the last of their n slots: they arrive together.
            at = max(at, self._next + self.interval * (n - 1))
            self._next = at + self.interval  # reservations stay in order
        at = max(at, now)
        self.ours.extend([at] * n)
        if at > now:
            await self.sleep(at - now)

    def answered(self) -> None:
        """A write came back, answered or not: the writes held behind the first may go."""
        if self._probe is not None and not self._probe.done():
            self._probe.set_result(None)

    def observe(self, status: int, usage: str | None) -> None:
        """An Entra answer: a 429, or use above what this tool wrote, means a shared window."""
        if self.shared:
            return
        if status == 429:
            self._share()
            return
        try:
            used = float(usage) * self.limit if usage is not None else 0.0
        except ValueError:
            return
        if used > len(self.ours) + 0.1 * self.limit:  # the header has one decimal: ±150
            self._share()

    def _share(self) -> None:
        self.shared, self._next = True, self.clock() + self.interval  # the window was full
