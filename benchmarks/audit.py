"""`provisioner audit verify` of a long audit log: time and the command's peak memory.

    python benchmarks/audit.py [--records 400000]

The log is written here as the tool writes it (hash-chained JSON lines, records the size of
an apply's graph_write records), then verified by the command in its own process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._served import run_measured
from provisioner.audit import GENESIS
from provisioner.model import canonical


def write_log(path: Path, records: int) -> None:
    prev = GENESIS
    with path.open("wb") as fh:
        for seq in range(1, records + 1):
            record = {"event": "graph_write", "ts": "2026-12-01T10:00:00Z", "operator": "admin",
                      "host": "bench", "tool_version": "0", "run_id": "20261201T100000Z-abcdef",
                      "cohort": "kommunstyrelsen", "playbook": "bench", "playbook_digest": "0" * 64,
                      "change_id": f"{seq:016x}", "person_id": f"P{seq:06d}", "step": "account",
                      "action": "create", "target": f"user:p{seq:06d}@politiker.example-region.se",
                      "outcome": "applied", "request_id": "00000000-0000-0000-0000-000000000000",
                      "seq": seq, "prev": prev, "alg": "sha256"}
            record["hash"] = prev = hashlib.sha256(canonical(record).encode()).hexdigest()
            fh.write((canonical(record) + "\n").encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=400_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "audit.jsonl"
        write_log(log, args.records)
        size_mb = log.stat().st_size / 2**20
        run = run_measured([sys.executable, "-m", "provisioner", "--state-dir", str(Path(tmp) / "state"),
                            "audit", "verify", str(log)])
    if run.code != 0:
        raise SystemExit(f"audit verify failed ({run.code}):\n{run.out[-3000:]}")
    figures = {"benchmark": "audit", "records": args.records, "log_mb": round(size_mb, 1),
               "records_per_second": round(args.records / run.wall), "verify": run.figures()}
    print(f"audit verify of {args.records} records ({size_mb:.0f} MB): {run.describe()};"
          f" {figures['records_per_second']} records/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
