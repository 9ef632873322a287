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
import heapq
import itertools
import re
import time
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
