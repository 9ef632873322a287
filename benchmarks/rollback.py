"""Rollback at the write floor, and its planning at scale.

    python benchmarks/rollback.py [--people 2000] [--time-scale 0.5] [--plan-sizes 1000,...]

1. At the floor: ``provisioner apply`` provisions the officials as the provisioning benchmark
   does (sandbox served by its own process, Entra's documented quotas, write window primed,
   80 ms latency), then ``rollback --dry-run`` and ``rollback --yes`` undo the run. Reported:
   the rollback's wall time against its floor (its Entra writes ÷ 20 per second), 429s, the
   client's CPU, and the dry run's time.
2. Planning at scale: a journal of N applied accounts (each with a membership that goes with
   it) and a tenant holding those accounts; ``plan_rollback`` in this process against the
   sandbox served by its own process (no latency, quotas out of the way): wall seconds and
   the client's CPU seconds per size, so that anything worse than linear shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._served import http_counters, run_measured, served
from benchmarks.provisioning import DECISIONS, DOMAIN, LICENSING_GROUP, PLAYBOOK, make_tenant
from provisioner.graph.pace import SCALE_ENV
from provisioner.sandbox.region import officials, roster_csv
from provisioner.sandbox.throttle import WRITE_LIMIT, WRITE_WINDOW

MARK = "extensionAttribute15"


def at_the_floor(work: Path, people: int, scale: float, latency_ms: float) -> dict[str, Any]:
    state = work / "tenant"
    make_tenant(state, people, scale, latency_ms)
    (work / "roster.csv").write_text(roster_csv(officials(people, 2026)), encoding="utf-8")
    (work / "decisions.csv").write_text(DECISIONS.format(a=people - 1, b=people), encoding="utf-8")
    licence = f"{{sku: ENTERPRISEPACK, via_group: {LICENSING_GROUP}}}"
    (work / "playbook.yaml").write_text(PLAYBOOK.format(domain=DOMAIN, license=licence, wait=600,
                                                        groups="[Förtroendevalda]"),
                                        encoding="utf-8")
    with served(state) as url:
        def provisioner(*args: str) -> Any:
            return run_measured([sys.executable, "-m", "provisioner", "--graph-url", url, "--state-dir",
                                 str(work / "client"), *args, str(work / "playbook.yaml")],
                                env={SCALE_ENV: str(scale)})

        applied = provisioner("apply", "--yes")
        if applied.code != 0:
            raise SystemExit(f"apply failed ({applied.code}):\n{applied.out[-3000:]}")
        dry = provisioner("rollback", "--dry-run")
        if dry.code != 0:
            raise SystemExit(f"rollback --dry-run failed ({dry.code}):\n{dry.out[-3000:]}")
        before = http_counters(url)
        rolled = provisioner("rollback", "--yes")
        after = http_counters(url)
    if rolled.code != 0:
        raise SystemExit(f"rollback failed ({rolled.code}):\n{rolled.out[-3000:]}")
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    writes = delta.get("entra writes", 0)
    floor = writes / (WRITE_LIMIT / WRITE_WINDOW) * scale
    return {
        "people": people, "rollback_entra_writes": writes,
        "rollback_wall_seconds": round(rolled.wall, 2), "floor_seconds": round(floor, 2),
        "wall_over_floor": round(rolled.wall / floor, 3) if floor else None,
        "throttled_429": delta.get("throttled", 0), "batches": delta.get("BATCH", 0),
        "rollback_client": rolled.figures(), "rollback_described": rolled.describe(),
        "dry_run_seconds": round(dry.wall, 2), "dry_run_client_cpu_seconds": round(dry.cpu, 2),
        "summary": next((x for x in rolled.out.splitlines() if x.startswith("Rollback complete")), ""),
    }


def planning(size: int) -> dict[str, Any]:
    """plan_rollback of ``size`` accounts, each with a membership that goes with it, against a
    sandbox served by its own process: this process's CPU time is the client's alone (its
    reads of every account included), measured, not a difference of two timings."""
    from provisioner.graph.client import Target
    from provisioner.graph.gateway import Graph
    from provisioner.heap import collector_off
    from provisioner.journal import Journal
    from provisioner.model import Action, Change
    from provisioner.reconcile import plan_rollback
    from provisioner.sandbox import reset_tenant

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tenant = reset_tenant(work / "tenant", employees=50, seed=1, ru_limit=10**9, write_limit=10**9,
                              mailbox_delay=0)
        users, changes = [], []
        for i in range(size):
            upn, pid, uid = f"p{i:06d}@{DOMAIN}", f"P{i:06d}", str(uuid.uuid4())
            users.append({"id": uid, "userPrincipalName": upn, "displayName": f"Person {i}",
                          "mailNickname": f"p{i:06d}", "accountEnabled": True,
                          "onPremisesExtensionAttributes": {MARK: f"bench:{pid}"}})
            after = {"userPrincipalName": upn, "displayName": f"Person {i}",
                     "onPremisesExtensionAttributes": {MARK: f"bench:{pid}"}}
            changes.append((Change("account", pid, Action.CREATE, f"user:{upn}", None, after), upn, uid))
            changes.append((Change("groups", pid, Action.CREATE, f"group:Förtroendevalda:{upn}", None,
                                   {"group": "Förtroendevalda"}), upn, uid))
        tenant.store.bulk_load("users", users)
        tenant.store.close()
        with Journal(work / "client") as journal:
            journal.backend.execute("PRAGMA synchronous=OFF")  # setting up, not measured
            rid = journal.start_run("apply", "bench", "playbook.yaml", "digest")
            for change, upn, uid in changes:
                seq = journal.intend(rid, change, reversibility="compensable", cohort="all", upn=upn,
                                     object_id=uid, before_image=None)
                journal.record(seq, "applied", object_id=uid)
            journal.finish_run(rid, "completed")
            entries = journal.applied("bench")

        with served(work / "tenant") as url:
            async def plan() -> Any:
                async with Graph(Target(graph_url=url), concurrency=32) as graph:
                    return await plan_rollback(graph, entries, playbook_name="bench", force=False)

            async def read_only() -> None:  # the same reads as plan_rollback's, nothing planned
                async with Graph(Target(graph_url=url), concurrency=32) as graph:
                    reads = graph.coalescing()
                    select = ("id", "userPrincipalName", "displayName", "onPremisesExtensionAttributes")
                    for start in range(0, len(users), 500):
                        chunk = users[start:start + 500]
                        await asyncio.gather(*(reads.get_user(u["id"], select) for u in chunk))

            def timed(run: Any) -> tuple[Any, float, float]:
                cpu, wall = time.process_time(), time.perf_counter()
                result = asyncio.run(run())
                return result, time.process_time() - cpu, time.perf_counter() - wall

            # Each the least of three runs: the difference of two noisy CPU times is noisier.
            planned, cpu, wall = min((timed(plan) for _ in range(3)), key=lambda r: r[1])
            with collector_off():
                reading = min(timed(read_only)[1] for _ in range(3))
    return {"accounts": size, "undos": len(planned.plan.changes), "seconds": round(wall, 2),
            "client_cpu_seconds": round(cpu, 2), "client_cpu_ms_per_account": round(cpu / size * 1000, 3),
            "reads_alone_client_cpu_seconds": round(reading, 2),
            "planning_without_reads_client_cpu_seconds": round(max(cpu - reading, 0.0), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--time-scale", type=float, default=0.5)
    ap.add_argument("--latency-ms", type=float, default=80.0, help="before the time scale")
    ap.add_argument("--plan-sizes", default="1000,2000,4000,8000,25000")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        floor = at_the_floor(Path(tmp), args.people, args.time_scale, args.latency_ms)
    sizes = [planning(int(n)) for n in args.plan_sizes.split(",")]
    figures = {"benchmark": "rollback", "time_scale": args.time_scale, "at_the_floor": floor,
               "planning": sizes}
    print(f"rollback of {floor['people']} officials (time scale {args.time_scale}, as the provisioning"
          f" benchmark): {floor['rollback_wall_seconds']:.1f} s wall against a floor of"
          f" {floor['floor_seconds']:.1f} s ({floor['wall_over_floor']:.2f}x) for"
          f" {floor['rollback_entra_writes']} Entra writes; 429s: {floor['throttled_429']};"
          f" {floor['summary']}")
    print(f"  rollback client: {floor['rollback_described']}")
    print(f"  rollback --dry-run: {floor['dry_run_seconds']:.1f} s wall,"
          f" {floor['dry_run_client_cpu_seconds']:.1f} s client CPU")
    for s in sizes:
        print(f"planning the undo of {s['accounts']:>6} accounts: {s['seconds']:6.2f} s wall (the"
              f" sandbox serving every account's read from its own process), client CPU"
              f" {s['client_cpu_seconds']:.2f} s ({s['client_cpu_ms_per_account']:.3f} ms per account,"
              f" its reads included); the same reads alone {s['reads_alone_client_cpu_seconds']:.2f} s"
              f" of client CPU, so planning itself {s['planning_without_reads_client_cpu_seconds']:.2f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
