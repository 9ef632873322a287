"""A preflight check's result: ok, FAIL or skip, with what to do about it.

Lower than both ``preflight`` (which runs the tenant-wide checks and asks each step for its
own) and the steps, so a step can say what it checks without importing preflight.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CheckStatus(enum.StrEnum):
    OK = "ok"
    FAIL = "FAIL"  # upper case: the one word an admin must not miss in the list
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: CheckStatus
    detail: str

    def line(self) -> str:
        return f"  {self.status:<4}  {self.name:<15} {self.detail}"


def ok(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.OK, detail)


def fail(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.FAIL, detail)
