"""How many requests may be in flight to one Graph service: additive increase, multiplicative
decrease (AIMD), as TCP does with its window.

Graph's quotas are per app and tenant and shared with whatever else the app is doing, so no
fixed pool is right: too small wastes the quota, too large earns 429s. The limit grows by
about one per round of answers while Graph is comfortable, holds while Graph says a quota
is over 80% used (``x-ms-throttle-limit-percentage``), and halves on a 429 or 503 (once per
round trip, so that one burst of 429s is one signal). Retry-After itself is honoured by the
retry layer; a request waiting out its Retry-After holds no slot.

Each service has its own quotas (Entra ID, Exchange, Intune), so each gets its own limit.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass, field

OK, BUSY, THROTTLED = "ok", "busy", "throttled"

_EXCHANGE = re.compile(r"^/users/[^/]+/(mailboxSettings|sendMail|mailFolders|messages)")


def service_of(path: str) -> str:
    """The Graph service whose quotas a request (path relative to /v1.0) counts against."""
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
    peak: float = 0.0
    _waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    _last_cut: float = float("-inf")
    _rtt: float = 0.1  # smoothed seconds per answer

    def __post_init__(self) -> None:
        self.limit = min(self.limit, float(self.ceiling))
        self.peak = self.limit

    async def acquire(self) -> float:
        """Wait for a slot; returns the time it was granted (for the round-trip estimate)."""
        if self.in_flight >= int(self.limit) or self._waiters:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future in self._waiters:
                    self._waiters.remove(future)
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
            self.peak = max(self.peak, self.limit)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(None)
