"""Start-up: wall time of `provisioner --help` and `provisioner validate` (median of runs).

    python benchmarks/startup.py [--runs 7]

Prints the figures as text and as one JSON line. Commands that do not talk to Graph never
import msgraph-sdk (about 0.2–1 s to import), and `--help` imports no more than Click.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "playbooks" / "fritidspolitiker-epost.yaml"


def wall(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "provisioner", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    runs = ap.parse_args().runs
    state = "/tmp/provisioner-startup-bench"
    figures = {
        "benchmark": "startup", "runs": runs,
        "help_seconds": round(wall(["--help"], runs), 3),
        "validate_seconds": round(wall(["--state-dir", state, "validate", str(EXAMPLE)], runs), 3),
        "python_startup_seconds": round(_python(runs), 3),
    }
    print(f"provisioner --help:      {figures['help_seconds']:.3f} s (median of {runs})")
    print(f"provisioner validate:    {figures['validate_seconds']:.3f} s (200-person roster)")
    print(f"python -c pass (floor):  {figures['python_startup_seconds']:.3f} s")
    print(json.dumps(figures))


def _python(runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    main()
