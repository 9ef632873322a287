"""The vocabulary of playbook sections: a strict frozen model and the value types they share.

The playbook's core sections (playbook.py) and each step's own section (steps/*.py) are
written with these, so an unknown key or a bad value reads the same wherever it is.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: Any) -> Any:
    """``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"7d"`` → seconds."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 15m, 2h, 7d)")
        return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    return value


def _share(value: Any) -> Any:
    if isinstance(value, str) and value.strip().endswith("%"):
        return float(value.strip()[:-1]) / 100
    return value


def _listify(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Ratio = Annotated[float, Field(ge=0, le=1)]
Share = Annotated[Ratio | None, BeforeValidator(_share)]
Values = Annotated[tuple[str, ...], BeforeValidator(_listify)]
ExtAttr = Annotated[str, Field(pattern=r"^extensionAttribute([1-9]|1[0-5])$")]
