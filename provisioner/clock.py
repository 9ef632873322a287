"""The one clock the planner and the leaver stages read. Tests and rehearsals set
PROVISIONER_NOW (ISO 8601) to see what a later run would do."""

from __future__ import annotations

import datetime as dt
import os


def now() -> dt.datetime:
    fixed = os.environ.get("PROVISIONER_NOW")
    if fixed:
        value = dt.datetime.fromisoformat(fixed.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)
