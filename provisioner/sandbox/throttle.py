"""Entra ID's per app + tenant quotas: resource units per 10 s and writes per 150 s.

Costs follow Microsoft's table (graph/throttling-limits): GET /users 2, GET
/groups/{id}/members 3, GET /users/{id}/memberOf 2, GET /subscribedSkus 3, any other GET 1;
a write costs 1 RU and 1 write. ``$select`` −1, ``$expand`` +1, ``$top`` under 20 −1,
never below 1. Windows are sliding; every duration is multiplied by ``time_scale``.

Only Entra ID (directory) requests count: Exchange (a user's mailboxSettings, sendMail) and
Intune (deviceManagement) have their own limits, which the sandbox does not charge here.
A limiter can start ``primed``: as if the app had written at its ceiling for the whole last
window, so that a benchmark measures the steady state (20 writes/s) rather than a fresh
window's burst of 3,000.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# Resource units per 10 s by tenant size: < 50 users, 50–500, > 500.
RU_LIMITS = ((50, 3500), (500, 5000), (None, 8000))
WRITE_LIMIT = 3000
RU_WINDOW = 10.0
WRITE_WINDOW = 150.0

_BASE_COSTS = (
    (re.compile(r"^/users/?$"), 2),
    (re.compile(r"^/groups/[^/]+/members/?$"), 3),
    (re.compile(r"^/users/[^/]+/memberOf/?$"), 2),
    (re.compile(r"^/subscribedSkus/?$"), 3),
)


# Outlook (Exchange Online) resources of a user and Intune's deviceManagement have quotas of
# their own (graph/throttling-limits: "Outlook service limits", "Intune service limits").
_EXCHANGE = re.compile(r"^/users/[^/]+/(mailboxSettings|sendMail|mailFolders|messages|events|calendar)"
                       r"(/|$)", re.IGNORECASE)
_INTUNE = re.compile(r"^/deviceManagement(/|$)", re.IGNORECASE)


def service_of(path: str) -> str:
    """Which Graph service answers a request (path relative to the version): its quotas and
    its way of saying no are its own."""
    if _INTUNE.match(path):
        return "intune"
    return "exchange" if _EXCHANGE.match(path) else "entra"


def is_entra(path: str) -> bool:
    """Whether a request (path relative to /v1.0) is charged to Entra ID's quotas."""
    return service_of(path) == "entra"


def ru_limit_for(user_count: int) -> int:
    for upper, limit in RU_LIMITS:
        if upper is None or user_count < upper:
            return limit
    raise AssertionError("unreachable")


def request_cost(method: str, path: str, query: dict[str, str]) -> tuple[int, bool]:
    """(resource units, is a write) for one request; ``path`` is relative to /v1.0."""
    if method != "GET":
        return 1, True
    cost = next((c for pattern, c in _BASE_COSTS if pattern.match(path)), 1)
    if "$select" in query:
        cost -= 1
    if "$expand" in query:
        cost += 1
    top = query.get("$top")
    if top is not None and top.isdigit() and int(top) < 20:
        cost -= 1
    return max(cost, 1), False


@dataclass
class _Window:
    limit: int
    seconds: float
    used: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def expire(self, now: float) -> None:
        while self.used and self.used[0][0] <= now - self.seconds:
            self.total -= self.used.popleft()[1]

    def wait_for(self, now: float, cost: int) -> float:
        """Seconds until ``cost`` more fits; 0 when it fits now."""
        if self.total + cost <= self.limit:
            return 0.0
        freed = self.total
        for t, c in self.used:
            freed -= c
            if freed + cost <= self.limit:
                return max(t + self.seconds - now, 0.001)
        return self.seconds

    def charge(self, now: float, cost: int) -> None:
        self.used.append((now, cost))
        self.total += cost


@dataclass(frozen=True, slots=True)
class Verdict:
    headers: dict[str, str]
    retry_after: float | None = None  # set when throttled
    reason: str = ""


class Limiter:
    """One per app + tenant pair."""

    def __init__(self, ru_limit: int, write_limit: int, time_scale: float,
                 clock: Callable[[], float] = time.monotonic, *, primed: bool = False) -> None:
        self.time_scale = time_scale
        self.ru = _Window(ru_limit, RU_WINDOW * time_scale)
        self.writes = _Window(write_limit, WRITE_WINDOW * time_scale)
        self.clock = clock
        if primed:  # one write every window/limit seconds, for the whole last window
            now, step = clock(), self.writes.seconds / write_limit
            for i in range(write_limit):
                self.writes.charge(now - self.writes.seconds + (i + 1) * step, 1)

    def admit(self, cost: int, is_write: bool) -> Verdict:
        now = self.clock()
        self.ru.expire(now)
        self.writes.expire(now)
        wait_ru = self.ru.wait_for(now, cost)
        wait_w = self.writes.wait_for(now, 1) if is_write else 0.0
        if wait_ru or wait_w:
            reason = "WriteLimitExceeded" if wait_w >= wait_ru else "ResourceUnitLimitExceeded"
            return Verdict(
                {"x-ms-throttle-information": reason}, self._format(max(wait_ru, wait_w)), reason
            )
        self.ru.charge(now, cost)
        if is_write:
            self.writes.charge(now, 1)
        headers = {"x-ms-resource-unit": str(cost)}
        usage = max(self.ru.total / self.ru.limit, self.writes.total / self.writes.limit)
        if usage >= 0.8:
            headers["x-ms-throttle-limit-percentage"] = f"{min(usage, 1.8):.1f}"
        return Verdict(headers)

    def _format(self, seconds: float) -> float:
        # Graph sends whole seconds; a time-scaled sandbox sends fractions (clients parse floats).
        return float(math.ceil(seconds)) if self.time_scale >= 1 else round(seconds, 3)
