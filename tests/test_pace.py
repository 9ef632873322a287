"""The adaptive limit on requests in flight (additive increase, multiplicative decrease)."""

from __future__ import annotations

import asyncio

import pytest

from provisioner.graph.pace import BUSY, OK, THROTTLED, AdaptiveLimit, service_of


def test_grows_by_about_one_per_round_of_good_answers_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(ceiling=10, limit=2)

    async def go() -> None:
        for _ in range(4):  # four rounds of `limit` answers each
            for _ in range(int(limit.limit)):
                limit.release(await limit.acquire(), OK)
    asyncio.run(go())
    assert 5 <= limit.limit <= 6.5
    for _ in range(200):
        limit.in_flight += 1
        limit.release(0.0, OK)
    assert limit.limit == 10


def test_grows_slower_while_graph_is_busy_and_halves_once_per_burst_of_429s() -> None:
    limit, calm = AdaptiveLimit(ceiling=64, limit=16), AdaptiveLimit(ceiling=64, limit=16)
    for _ in range(16):
        limit.in_flight += 1
        limit.release(0.0, BUSY)
        calm.in_flight += 1
        calm.release(0.0, OK)
    assert 16.2 < limit.limit < 16.3 and 16.9 < calm.limit < 17.1  # a quarter of the pace
    limit.limit = 16
    for _ in range(10):  # ten 429s answered together are one signal
        limit.in_flight += 1
        limit.release(10**9, THROTTLED)
    assert limit.limit == 8 and limit.cuts == 1
    for _ in range(10):
        limit._last_cut = float("-inf")  # rounds apart
        limit.in_flight += 1
        limit.release(0.0, THROTTLED)
    assert limit.limit == 1  # never below one request


def test_higher_priority_waiters_go_first() -> None:
    limit = AdaptiveLimit(ceiling=1, limit=1)
    order: list[str] = []

    async def request(name: str, priority: int) -> None:
        started = await limit.acquire(priority)
        order.append(name)
        await asyncio.sleep(0)
        limit.release(started, OK)

    async def go() -> None:
        first = await limit.acquire()  # hold the only slot while the others queue
        tasks = [asyncio.create_task(request(n, p)) for n, p in
                 (("create-1", 0), ("create-2", 0), ("membership", 2), ("mailbox", 3))]
        await asyncio.sleep(0)
        limit.release(first, OK)
        await asyncio.gather(*tasks)

    asyncio.run(go())
    assert order == ["mailbox", "membership", "create-1", "create-2"]


def test_never_more_in_flight_than_the_limit_and_cancelled_waiters_give_their_slot_back() -> None:
    limit = AdaptiveLimit(ceiling=3, limit=3)
    peak = 0

    async def request() -> None:
        nonlocal peak
        started = await limit.acquire()
        peak = max(peak, limit.in_flight)
        await asyncio.sleep(0.001)
        limit.release(started, BUSY)

    async def go() -> None:
        waiting = [asyncio.create_task(request()) for _ in range(20)]
        await asyncio.sleep(0)
        waiting[10].cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    asyncio.run(go())
    assert peak == 3 and limit.in_flight == 0 and not limit._waiters


def test_each_service_has_its_own_quotas() -> None:
    assert service_of("/users/{user%2Did}/mailboxSettings") == "exchange"
    assert service_of("/users/{user%2Did}/sendMail") == "exchange"
    assert service_of("/deviceManagement/managedDevices") == "intune"
    assert service_of("/users/{user%2Did}/assignLicense") == "entra"
    assert service_of("/groups/{group%2Did}") == "entra"


@pytest.mark.slow
def test_graph_backs_off_when_the_sandbox_throttles_and_every_write_lands() -> None:
    from provisioner.graph.client import Target
    from provisioner.graph.gateway import Graph
    from provisioner.sandbox import Sandbox, reset_tenant

    app = Sandbox(reset_tenant(None, employees=40, seed=1, write_limit=10, time_scale=0.003,
                               latency_ms=2, cloud_only=True))
    users = list(app.tenant.users)[:30]

    async def go() -> Graph:
        async with Graph(Target(sandbox_app=app), concurrency=16) as graph:
            graph.limits["entra"].limit = 16
            await asyncio.gather(*(graph.update_user(uid, {"jobTitle": "ledamot"}) for uid in users))
            return graph

    graph = asyncio.run(go())
    entra = graph.limits["entra"]
    assert graph.stats["throttled"] > 0 and entra.cuts >= 1 and entra.limit < 16
    assert all(app.tenant.users[uid]["jobTitle"] == "ledamot" for uid in users)
