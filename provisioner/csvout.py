"""CSV exports an admin opens in Excel: no cell is ever read as a formula.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with a
single quote, as OWASP's "CSV Injection" page recommends, so that a hostile name in a roster
or a directory (``=HYPERLINK(...)``) stays text. ``excel=True`` writes what a Swedish Excel
opens cleanly: UTF-8 with a BOM, ``;`` between cells, CRLF line ends.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]], *, excel: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";" if excel else ",", lineterminator="\r\n" if excel else "\n")
    writer.writerow([cell(h) for h in header])
    writer.writerows([cell(v) for v in row] for row in rows)
    return ("\ufeff" if excel else "") + buf.getvalue()
