"""Dual-role matching at scale: read a 50,000-user directory and match a 2,000-person roster.

    python benchmarks/dual_roles.py [--users 50000] [--people 2000]

Seeds an in-process sandbox, then times separately (1) the directory read through msgraph-sdk
(request builders, raw JSON, paging by 999) and (2) the matching, and prints both with the
process's peak memory, as text and as one JSON line. For scale it also reads one page with
msgraph-sdk's typed models (`graph.users.get()`), the way admins' scripts do, and extrapolates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provisioner.graph.client import Target
from provisioner.graph.gateway import Graph
from provisioner.identity import normalise_mobile
from provisioner.matching import match_people
from provisioner.playbook import DualRole
from provisioner.roster import Person
from provisioner.sandbox import Sandbox, reset_tenant
from provisioner.sandbox.region import officials, personal_number_for
from provisioner.sandbox.seed import SANDBOX_PNR_KEY
from provisioner.snapshot import USER_SELECT, DirectoryUser


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def roster(people: int, tenant: object, share_dual: float = 0.1) -> list[Person]:
    """Officials, a tenth of whom are employees too (found by employee id, personnummer or mobile)."""
    rng = random.Random(5)
    employees = [u for u in tenant.users.values()]  # type: ignore[attr-defined]
    out = []
    for o in officials(people, 2026):
        if rng.random() < share_dual:
            e = rng.choice(employees)
            kind = rng.choice(("employee_id", "pnr", "mobile"))
            out.append(Person(o.person_id, e["givenName"], e["surname"], body=o.body,
                              employee_id=e["employeeId"] if kind == "employee_id" else "",
                              personal_number=personal_number_for(e["employeeId"]) if kind == "pnr" else "",
                              mobile=normalise_mobile(e["mobilePhone"]) if kind == "mobile" else ""))
        else:
            out.append(Person(o.person_id, o.given, o.surname, body=o.body,
                              mobile=normalise_mobile(o.mobile) if o.mobile else ""))
    return out


async def read(app: Sandbox) -> tuple[list[DirectoryUser], float]:
    async with Graph(Target(sandbox_app=app)) as graph:
        start = time.perf_counter()
        docs = await graph.list_users(USER_SELECT)
        users = [DirectoryUser.from_graph(d, "extensionAttribute15") for d in docs]
        return users, time.perf_counter() - start


async def typed_page(app: Sandbox) -> tuple[int, float]:
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.users_request_builder import UsersRequestBuilder

    async with Graph(Target(sandbox_app=app)) as graph:
        params = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            select=list(USER_SELECT), top=999)
        start = time.perf_counter()
        page = await graph.client.users.get(RequestConfiguration(query_parameters=params))
        return len(page.value or []), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--people", type=int, default=2_000)
    args = ap.parse_args()
    os.environ.setdefault("PROVISIONER_PNR_KEY", SANDBOX_PNR_KEY)

    start = time.perf_counter()
    tenant = reset_tenant(None, employees=args.users, seed=1)
    seed_s = time.perf_counter() - start
    app = Sandbox(tenant)
    people = roster(args.people, tenant)

    users, read_s = asyncio.run(read(app))
    read_peak = peak_mb()
    policy = DualRole(personal_number_attribute="extensionAttribute1",
                      birth_date_attribute="extensionAttribute2")
    start = time.perf_counter()
    results = match_people(people, users, policy, owner_prefix="provisioner:bench:",
                           key=SANDBOX_PNR_KEY.encode())
    match_s = time.perf_counter() - start
    tracemalloc.start()  # a second, traced run: memory the matching itself needs
    match_people(people, users, policy, owner_prefix="provisioner:bench:", key=SANDBOX_PNR_KEY.encode())
    match_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    counts: dict[str, int] = {}
    for r in results.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    typed_n, typed_s = asyncio.run(typed_page(app))
    typed_total = typed_s / typed_n * len(users)

    figures = {
        "benchmark": "dual_roles", "directory_users": len(users), "roster_people": len(people),
        "seed_seconds": round(seed_s, 2), "directory_read_seconds": round(read_s, 2),
        "matching_seconds": round(match_s, 3), "matching_peak_alloc_mb": round(match_mb, 1),
        "peak_rss_mb": round(peak_mb(), 1),
        "peak_rss_after_read_mb": round(read_peak, 1), "classified": counts,
        "baseline_typed_page_users": typed_n, "baseline_typed_page_seconds": round(typed_s, 2),
        "baseline_typed_read_seconds_extrapolated": round(typed_total, 1),
    }
    print(f"directory read: {len(users)} users in {read_s:.2f} s (msgraph-sdk request builders,"
          f" raw JSON, pages of 999)")
    print(f"matching: {len(people)} people in {match_s * 1000:.0f} ms -> {counts};"
          f" it allocates at most {match_mb:.0f} MB (index included)")
    print(f"peak memory (RSS) of the whole process, the in-process sandbox's 50,000 users included:"
          f" {figures['peak_rss_mb']} MB ({figures['peak_rss_after_read_mb']} MB after the read)")
    print(f"baseline: graph.users.get() with typed models read {typed_n} users in {typed_s:.2f} s;"
          f" extrapolated to {len(users)} users: {typed_total:.0f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
