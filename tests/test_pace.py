"""The adaptive limit on requests in flight (additive increase, multiplicative decrease)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from provisioner.graph.pace import BUSY, OK, SCALE_ENV, THROTTLED, AdaptiveLimit, WritePacer, service_of


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


# -- the documented write quota, paced -------------------------------------------------------
class FakeTime:
    """A clock that sleeping moves on, so that a pacer's waits take no time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pacer(t: FakeTime) -> WritePacer:
    return WritePacer(clock=t.clock, sleep=t.sleep, scale=1.0)


def test_alone_in_a_fresh_window_writes_go_at_once_up_to_95_percent_of_it() -> None:
    t = FakeTime()
    p = pacer(t)

    async def go() -> None:
        await p.take()
        p.answered()  # the first write goes alone; its answer lets the others go
        for _ in range(2849):
            await p.take()
        assert t.slept == []
        await p.take()  # the 2,851st waits for the first to leave the window
    asyncio.run(go())
    assert t.slept == [pytest.approx(150.0)] and not p.shared


def shared_pacer(takes: list[int]) -> tuple[WritePacer, list[float]]:
    """A pacer whose first write learnt that the window is full (``x-ms-throttle-limit-
    percentage`` 1.0), then ``takes`` writes at a time: when each went, from then."""
    t = FakeTime()
    p = pacer(t)

    async def go() -> list[float]:
        await p.take()
        p.observe(200, "1.0")
        p.answered()
        start, times = t.now, []
        for n in takes:
            await p.take(n)
            times.append(t.now - start)
        return times
    return p, asyncio.run(go())


def test_more_use_than_ours_means_a_shared_window_paced_at_19_writes_a_second() -> None:
    """Graph says the window is full (``x-ms-throttle-limit-percentage`` 1.0) after one write
    of ours: someone else's writes fill it, so ours go at 95% of 3,000 per 150 s."""
    p, times = shared_pacer([1] * 190)
    assert p.shared and times[-1] == pytest.approx(189 / 19, rel=0.01)
    assert min(b - a for a, b in itertools.pairwise(times)) == pytest.approx(1 / 19)


def test_writes_sent_together_go_at_the_last_of_their_slots() -> None:
    """A $batch of 20 writes arrives at Graph at once: in a shared window it waits for its
    twentieth slot, not its first, or a full window overflows by 19 writes a batch."""
    assert shared_pacer([20] * 3)[1] == [pytest.approx(n * 20 / 19) for n in (1, 2, 3)]


@pytest.mark.parametrize(("ours", "usage", "status", "shared"), [
    (2450, "0.9", 200, False),   # 2,700 by a header of one decimal: ours, give or take 150
    (10, "0.8", 200, True),      # 2,400 used, 10 of them ours
    (10, None, 429, True),       # throttled below the quota: someone else is writing
    (10, None, 200, False),      # below 80%: no header
])
def test_a_window_is_shared_when_graph_reports_more_than_ours(ours: int, usage: str | None,
                                                             status: int, shared: bool) -> None:
    t = FakeTime()
    p = pacer(t)

    async def go() -> None:
        for _ in range(ours):
            await p.take()
            p.answered()
    asyncio.run(go())
    p.observe(status, usage)
    assert p.shared is shared


@pytest.mark.slow
def test_writes_waiting_together_each_sleep_once() -> None:
    """Each reserves its moment on arrival: 200 writers waiting on a shared window sleep 200
    times in all, not once per writer per slot (a thundering herd: thousands). Real time,
    with the window scaled to 0.3 s (a slot every 0.1 ms)."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    p = WritePacer(scale=0.002, sleep=sleep)

    async def go() -> None:
        await p.take()
        p.observe(200, "1.0")
        p.answered()
        await asyncio.gather(*(p.take() for _ in range(200)))
    asyncio.run(go())
    assert p.shared and len(slept) <= 200


def test_the_first_write_goes_alone_and_its_answer_lets_the_others_go() -> None:
    t = FakeTime()
    p = pacer(t)
    order: list[str] = []

    async def write(name: str) -> None:
        await p.take()
        order.append(name)

    async def go() -> None:
        first = asyncio.ensure_future(write("first"))
        await asyncio.sleep(0)
        others = asyncio.gather(*(write(f"w{i}") for i in range(3)))
        await asyncio.sleep(0.01)
        assert order == ["first"]  # the others wait for its answer
        p.observe(200, "1.0")
        p.answered()
        await asyncio.gather(first, others)
    asyncio.run(go())
    assert p.shared and order == ["first", "w0", "w1", "w2"]


def test_in_a_window_already_full_paced_writes_are_never_throttled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox's write window starts full, as after writing at the ceiling, and its old
    writes leave it at the steady rate (graph/throttling-limits: 3,000 per 150 s, here scaled
    to 15 s). The first write goes alone and finds the window full (one 429: that is how the
    tool learns it is not alone); the 300 writes paced after it land without another. Without
    the pacer the adaptive limit finds the ceiling by hitting it, again and again."""
    from provisioner.graph.client import Target
    from provisioner.graph.gateway import Graph
    from provisioner.sandbox import Sandbox, reset_tenant

    monkeypatch.setenv(SCALE_ENV, "0.1")
    app = Sandbox(reset_tenant(None, employees=300, seed=1, time_scale=0.1, quota_primed=True,
                               cloud_only=True))
    users = list(app.tenant.users)[:300]

    async def go() -> Graph:
        async with Graph(Target(sandbox_app=app), concurrency=16) as graph:
            await asyncio.gather(*(graph.update_user(uid, {"jobTitle": "ledamot"}) for uid in users))
            return graph

    graph = asyncio.run(go())
    assert graph.pacer.shared and app.tenant.store.counters.get("throttled", 0) <= 1
    assert all(app.tenant.users[uid]["jobTitle"] == "ledamot" for uid in users)


def test_in_a_window_already_full_writes_sent_20_to_a_batch_are_paced_item_by_item(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Graph throttles each item of a $batch as itself (learn.microsoft.com/graph/json-batching)
    and answers it with its own status and x-ms-throttle-limit-percentage: the pacer learns
    from the items, not from the batch's 200. 300 accounts created 20 to a batch into a full
    window: the first batch finds it full; the rest are paced and land without a 429."""
    from provisioner.graph.client import Target
    from provisioner.graph.gateway import Graph
    from provisioner.sandbox import Sandbox, reset_tenant

    monkeypatch.setenv(SCALE_ENV, "0.1")
    app = Sandbox(reset_tenant(None, employees=10, seed=1, time_scale=0.1, quota_primed=True))

    async def go() -> Graph:
        async with Graph(Target(sandbox_app=app), concurrency=16) as graph:
            together = graph.coalescing()
            await asyncio.gather(*(together.create_user({
                "accountEnabled": True, "displayName": f"Ledamot {i}", "mailNickname": f"led{i}",
                "userPrincipalName": f"led{i}@politiker.example-region.se",
                "passwordProfile": {"password": "Xy9!" * 6}}) for i in range(300)))
            return graph

    graph = asyncio.run(go())
    assert graph.stats["batches"] >= 15
    assert graph.pacer.shared and app.tenant.store.counters.get("throttled", 0) <= 20
    made = [u for u in app.tenant.users.values() if u["userPrincipalName"].startswith("led")]
    assert len(made) == 300
