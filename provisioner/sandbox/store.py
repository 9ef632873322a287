"""Durable storage of the sandbox tenant: one SQLite file in the state dir.

Objects are JSON documents held in memory and written through on every change, in the
same transaction as the request counters, so that a process killed mid-run leaves the
tenant exactly as Graph would be: every acknowledged write is there.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Doc = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL,
                                    PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


class Store:
    def __init__(self, path: Path | None) -> None:
        """``path=None`` keeps everything in memory (tests that need no persistence)."""
        # One event loop uses it at a time, but `sandbox serve` and tests may run that loop
        # on another thread than the one that opened the file.
        self._db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.kinds: dict[str, dict[str, Doc]] = {}
        for kind, oid, doc in self._db.execute("SELECT kind, id, doc FROM objects ORDER BY rowid"):
            self.kinds.setdefault(kind, {})[oid] = json.loads(doc)
        self.config: dict[str, Any] = {
            k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM config")
        }
        self.counters: Counter[str] = Counter(
            dict(self._db.execute("SELECT key, n FROM counters").fetchall())
        )
        self._flushed: Counter[str] = Counter(self.counters)
        # Each kind's objects added, replaced or removed so far: what a list made of them
        # earlier is good for as long as it stays the same.
        self.versions: Counter[str] = Counter()

    def all(self, kind: str) -> dict[str, Doc]:
        return self.kinds.setdefault(kind, {})

    def values(self, kind: str) -> Iterator[Doc]:
        return iter(self.all(kind).values())

    def put(self, kind: str, doc: Doc) -> None:
        self.all(kind)[doc["id"]] = doc
        self.versions[kind] += 1
        self._write(
            "INSERT OR REPLACE INTO objects (kind, id, doc) VALUES (?, ?, ?)",
            (kind, doc["id"], json.dumps(doc, ensure_ascii=False)),
        )

    def remove(self, kind: str, oid: str) -> None:
        self.all(kind).pop(oid, None)
        self.versions[kind] += 1
        self._write("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, oid))

    def set_config(self, values: dict[str, Any]) -> None:
        self.config.update(values)
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO config (key, value) VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in values.items()],
        )
        self._db.execute("COMMIT")

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        self._db.execute("BEGIN")
        self._db.execute(sql, args)
        self._flush_counters()
        self._db.execute("COMMIT")

    def flush(self) -> None:
        self._db.execute("BEGIN")
        self._flush_counters()
        self._db.execute("COMMIT")

    def _flush_counters(self) -> None:
        delta = self.counters - self._flushed
        if delta:
            self._db.executemany(
                "INSERT INTO counters (key, n) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET n = n + excluded.n",
                list(delta.items()),
            )
            self._flushed = Counter(self.counters)

    def bulk_load(self, kind: str, docs: list[Doc]) -> None:
        """Seed many objects in one transaction (sandbox reset)."""
        self.all(kind).update({d["id"]: d for d in docs})
        self.versions[kind] += 1
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO objects (kind, id, doc) VALUES (?, ?, ?)",
            [(kind, d["id"], json.dumps(d, ensure_ascii=False)) for d in docs],
        )
        self._db.execute("COMMIT")

    def clear(self) -> None:
        self._db.executescript("DELETE FROM objects; DELETE FROM config; DELETE FROM counters;")
        self.versions.update(self.kinds.keys())
        self.kinds.clear()
        self.config.clear()
        self.counters.clear()
        self._flushed.clear()

    def close(self) -> None:
        self.flush()
        self._db.close()
