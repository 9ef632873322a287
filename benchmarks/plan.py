"""`plan` for a large roster against a large tenant, through the CLI's own code path.

    python benchmarks/plan.py [--users 50000] [--people 10000]

Seeds an in-process sandbox, writes a roster and a playbook (account, licence, groups,
mailbox settings; separate accounts for dual roles), and times operations.plan end to end
(directory read, dual-role matching, naming, planning, preflight). Prints text and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provisioner import operations as ops
from provisioner.sandbox import reset_tenant
from provisioner.sandbox.region import officials, roster_csv
from provisioner.sandbox.seed import SANDBOX_PNR_KEY

PLAYBOOK = """\
name: bench
roster: roster.csv
domain: politiker.example-region.se
naming: {mail_nickname: "pol.{upn_local}"}
license: {sku: ENTERPRISEPACK}
groups: [Förtroendevalda, "Politiker {body}"]
mailbox_settings: {}
steps: [account, license, groups, mailbox_settings]
dual_role:
  policy: separate_account
  personal_number_attribute: extensionAttribute1
  birth_date_attribute: extensionAttribute2
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--people", type=int, default=10_000)
    args = ap.parse_args()
    import os

    os.environ.setdefault("PROVISIONER_PNR_KEY", SANDBOX_PNR_KEY)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        reset_tenant(work / "state", employees=args.users, seed=1).store.close()
        seed_s = time.perf_counter() - start
        (work / "roster.csv").write_text(roster_csv(officials(args.people, 2026)), encoding="utf-8")
        (work / "playbook.yaml").write_text(PLAYBOOK, encoding="utf-8")
        session = ops.Session(ops.Settings(work / "state"))
        start = time.perf_counter()
        loaded = ops.load(work / "playbook.yaml")
        plan, ready = asyncio.run(ops.plan(session, loaded))
        plan_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"benchmark": "plan", "directory_users": args.users, "roster_people": args.people,
               "seed_seconds": round(seed_s, 2), "plan_seconds": round(plan_s, 2),
               "changes": len(plan.changes), "summary": plan.summary(), "preflight_ok": ready.ok,
               "peak_rss_mb": round(peak, 1)}
    failed = [f"{c.name}: {c.detail}" for c in ready.checks if c.status == "FAIL"]
    print(f"plan: {args.people} people against {args.users} users in {plan_s:.2f} s"
          f" ({len(plan.changes)} changes, {len(plan.held)} held for a dual-role decision)")
    print("preflight: " + ("ready" if ready.ok else "not ready (expected here): " + "; ".join(failed)))
    print(f"peak memory (RSS, in-process sandbox included): {peak:.0f} MB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
