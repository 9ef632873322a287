"""Every benchmark, one after another, each with its baseline: `make bench` runs this.

    python benchmarks/run.py [--quick]

Each benchmark prints its figures as text and as one JSON line; this prints them as they
come and ends with one JSON line holding them all (`--quick`: small sizes, to check that
they run, not to measure).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = {
    "provisioning": [],
    "dual_roles": [],
    "plan": [],
    "startup": [],
    "journal": [],
    "rollback": [],
    "audit": [],
}
QUICK = {
    "provisioning": ["--people", "60", "--baseline-people", "4", "--time-scale", "0.1"],
    "dual_roles": ["--users", "2000", "--people", "200", "--runs", "2"],
    "plan": ["--users", "2000", "--people", "400", "--runs", "2"],
    "startup": ["--runs", "1"],
    "journal": ["--changes", "50"],
    "rollback": ["--people", "60", "--time-scale", "0.1", "--plan-sizes", "200,400"],
    "audit": ["--records", "2000"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    results = {}
    for name, extra in (QUICK if args.quick else FULL).items():
        print(f"== {name}", flush=True)
        done = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *extra],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout + done.stderr)
            raise SystemExit(f"benchmark {name} failed ({done.returncode})")
        lines = done.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        results[name] = json.loads(lines[-1])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
