"""`plan` for a large roster against a large tenant, through the CLI's own code path.

    python benchmarks/plan.py [--users 50000] [--people 10000] [--runs 3] [--instructions]
                              [--beside REV]

Seeds a sandbox and serves it from its own process, writes a roster and a playbook (account,
licence, groups, mailbox settings; separate accounts for dual roles), and times the whole
`provisioner plan --json` command (start-up, directory read, dual-role matching, naming,
planning, preflight, printing). Prints text and JSON. Baseline: what a hand-written script
spends reading the directory with msgraph-sdk's typed models before it can plan anything
(one page measured, extrapolated). The command runs ``--runs`` times, each a new process
with a new state dir: on a shared machine the same work's CPU time varies by a third from
one run to the next, so the least, the median and the most are printed, each run's figures
in the JSON. ``--instructions`` also counts the instructions the command runs (valgrind's
cachegrind, about thirty times as slow): a figure the machine's load does not move, to
compare two versions of the tool on a shared machine. ``--beside REV`` runs the tool as it
was at git revision REV too, each run next to one of this version (in turn first), against
the same served sandbox: the older version's time says how fast the machine is in these
minutes, and the ratio of the two does not move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._served import ROOT, instructions, run_measured, served, spread, version_at
from benchmarks.dual_roles import typed_page
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
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--instructions", action="store_true",
                    help="also count the command's instructions once (valgrind; minutes)")
    ap.add_argument("--beside", metavar="REV",
                    help="also run the tool as it was at this git revision, run for run beside this one")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        reset_tenant(work / "tenant", employees=args.users, seed=1).store.close()
        seed_s = time.perf_counter() - start
        (work / "roster.csv").write_text(roster_csv(officials(args.people, 2026)), encoding="utf-8")
        (work / "playbook.yaml").write_text(PLAYBOOK, encoding="utf-8")
        with served(work / "tenant") as url:
            def command(i: int | str) -> list[str]:
                return [sys.executable, "-m", "provisioner", "--graph-url", url, "--state-dir",
                        str(work / f"client{i}"), "plan", "--json", str(work / "playbook.yaml")]

            env = {"PROVISIONER_PNR_KEY": SANDBOX_PNR_KEY}
            runs, beside = [], []
            tools = [(runs, ROOT, "")]
            if args.beside:
                tools.append((beside, version_at(args.beside, work / "beside"), "beside"))
            for i in range(args.runs):  # with --beside, each version first in turn
                for into, tool, name in tools if i % 2 == 0 else tools[::-1]:
                    into.append(run_measured(command(f"{name}{i}"), env=env, tool=tool))
            counted = instructions(command("counted"), env=env) if args.instructions else None
            typed_n, typed_s = asyncio.run(typed_page(url))
    for run in runs + beside:
        if run.code != 0:
            raise SystemExit(f"plan failed ({run.code}):\n{run.out[-3000:]}")
    plan = json.loads(runs[0].out[runs[0].out.index("{"):])
    least, median, most = spread([r.wall for r in runs])
    run = min(runs, key=lambda r: r.wall)
    figures = {"benchmark": "plan", "directory_users": args.users, "roster_people": args.people,
               "seed_seconds": round(seed_s, 2), "plan_seconds": round(least, 2),
               "plan_seconds_median": round(median, 2), "plan_seconds_most": round(most, 2),
               "changes": len(plan["changes"]), "summary": plan["summary"],
               "client": run.figures(), "runs": [r.figures() for r in runs],
               "baseline_typed_read_seconds_extrapolated": round(typed_s / typed_n * args.users, 1),
               "client_instructions": counted}
    if beside:
        b_least, b_median, b_most = spread([r.wall for r in beside])
        figures["beside"] = {
            "revision": args.beside, "plan_seconds": round(b_least, 2),
            "plan_seconds_median": round(b_median, 2), "plan_seconds_most": round(b_most, 2),
            "runs": [r.figures() for r in beside],
            "changes": len(json.loads(beside[0].out[beside[0].out.index("{"):])["changes"]),
            "median_over_ours": round(b_median / median, 2)}
    print(f"plan: {args.people} people against {args.users} users, the whole `provisioner plan"
          f" --json` command against a sandbox served by its own process ({len(plan['changes'])}"
          f" changes), {len(runs)} runs: least {least:.2f} s, median {median:.2f} s, most {most:.2f} s;"
          f" the least: {run.describe()}; client CPU in each run:"
          f" {', '.join(f'{r.cpu:.2f}' for r in runs)} s"
          + (f"; the client's instructions (cachegrind): {counted / 1e9:.2f} G" if counted else ""))
    if beside:
        b = figures["beside"]
        print(f"beside it, the tool at {args.beside}: least {b['plan_seconds']:.2f} s, median"
              f" {b['plan_seconds_median']:.2f} s, most {b['plan_seconds_most']:.2f} s"
              f" ({b['changes']} changes); its median is {b['median_over_ours']:.2f} times this one's")
    print(f"baseline: a hand-written plan must first read the directory; with typed models"
          f" (graph.users.get()) one page of {typed_n} took {typed_s:.2f} s, so {args.users} users"
          f" take about {figures['baseline_typed_read_seconds_extrapolated']:.0f} s before any"
          " planning")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
