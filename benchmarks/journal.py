"""The journal's cost per change: SQLite in a state dir, and a shared PostgreSQL state.

    python benchmarks/journal.py [--changes 2000] [--postgres URL]

Each change is journaled as apply journals it: its intent committed before the Graph write
(one INSERT), its outcome after (one UPDATE in a transaction), on a journal opened as a
command opens it. Without ``--postgres`` a PostgreSQL server (Debian's, as the tests use)
is started on 127.0.0.1 with fsync on, as a real one runs; SQLite runs with its
``synchronous=FULL``. Figures are wall and process CPU time per change, as text and as one
JSON line; PostgreSQL's are over loopback, so a server across a network adds its round trip
(two per change) to each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provisioner.journal import Journal  # noqa: E402
from provisioner.model import Action, Change  # noqa: E402


def changes(n: int) -> list[Change]:
    return [Change("license", f"p{i:06d}", Action.CREATE, f"license:{i}", None,
                   {"skuId": "6fd2c87f-b296-42f0-b197-1e91e994b900", "disabledPlans": []})
            for i in range(n)]


def measure(journal: Journal, work: list[Change]) -> dict[str, float]:
    run_id = journal.start_run("apply", "bench", "bench.yaml", "0" * 64)
    wall, cpu = time.perf_counter(), time.process_time()
    for change in work:
        seq = journal.intend(run_id, change, reversibility="reversible", cohort="bench",
                             upn=f"{change.person_id}@example.se", object_id=None, before_image=None)
        journal.record(seq, "applied", object_id=str(uuid.uuid4()), request_id=str(uuid.uuid4()))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    journal.finish_run(run_id, "done")
    n = len(work)
    return {"changes": n, "ms_per_change": round(1000 * wall / n, 3),
            "client_cpu_ms_per_change": round(1000 * cpu / n, 3),
            "changes_per_second": round(n / wall, 1)}


@contextlib.contextmanager
def postgres_state(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.servers import create_database, postgres

    with postgres(durable=True) as server:
        yield create_database(server, f"bench_{uuid.uuid4().hex[:8]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=2000)
    ap.add_argument("--postgres", metavar="URL",
                    help="a database to measure (a new run is added to it) instead of a server started here")
    args = ap.parse_args()
    work = changes(args.changes)
    figures: dict[str, object] = {"benchmark": "journal", "load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as state_dir, Journal(Path(state_dir)) as journal:
        figures["sqlite"] = measure(journal, work)
    with postgres_state(args.postgres) as url, Journal(Path("/nonexistent"), url) as journal:
        figures["postgresql"] = measure(journal, work)
    for name in ("sqlite", "postgresql"):
        f = figures[name]
        assert isinstance(f, dict)
        print(f"{name:<11} {f['ms_per_change']:>7.3f} ms per change ({f['client_cpu_ms_per_change']:.3f}"
              f" ms of client CPU), {f['changes_per_second']:.0f} changes/s over {f['changes']}")
    print(f"load average (1 min) {figures['load_average']:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
