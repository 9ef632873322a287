"""Roster file (CSV from the committee secretariat or HR) → validated Persons.

Every problem is collected and reported together as ``file:line: column: what is wrong``;
an invalid roster yields no Persons at all, so nothing is applied from it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from .errors import RosterError
from .identity import normalise_mobile, normalise_personal_number

REQUIRED = ("person_id", "given_name", "surname")
OPTIONAL = (
    "role",
    "body",
    "category",
    "personal_number",
    "mobile",
    "private_email",
    "employee_id",
    "device_model",
    "device_serial",
    "upn_local",
)
COLUMNS = REQUIRED + OPTIONAL

_PERSON_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UPN_LOCAL = re.compile(r"^[A-Za-z0-9'.\-_!#^~]{1,64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str
    given_name: str
    surname: str
    role: str = ""
    body: str = ""
    category: str = ""
    # Normalised 12 digits; kept out of repr so it never reaches a log by accident.
    personal_number: str = field(default="", repr=False)
    mobile: str = ""
    private_email: str = ""
    employee_id: str = ""
    device_model: str = ""
    device_serial: str = ""
    # The address's local part, chosen by hand: for a name with no Latin letters, or a wish.
    upn_local: str = ""
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Roster:
    path: Path
    persons: tuple[Person, ...]
    digest: str  # sha256 of the file's bytes: a saved plan is refused when it changes

    def __iter__(self) -> Iterator[Person]:
        return iter(self.persons)

    def __len__(self) -> int:
        return len(self.persons)


MAX_BYTES = 50 * 1024 * 1024  # a roster of a whole region is a few megabytes


def load_roster(path: Path) -> Roster:
    try:
        if not path.is_file():
            raise RosterError([f"{path}: not a regular file (a roster is a CSV file)"])
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise RosterError([f"{path}: cannot read roster: {exc.strerror}"]) from None
    if len(data) > MAX_BYTES:
        raise RosterError([f"{path}: larger than {MAX_BYTES // 1024 // 1024} MB; is it the roster?"])
    persons = parse_roster(data, str(path))
    return Roster(path, tuple(persons), hashlib.sha256(data).hexdigest())


def _decode(data: bytes, name: str) -> str:
    """UTF-8 (with or without BOM), as "CSV UTF-8" saves it; else Windows-1252, which Excel's
    "CSV (semicolon delimited)" writes on a Swedish Windows, said as a warning."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        problem = f"{name}:{line}: not UTF-8, nor Windows-1252: save the file as CSV UTF-8"
        raise RosterError([problem]) from None
    structlog.get_logger("provisioner").warning(
        "roster.read_as_windows_1252", file=name, first_non_utf8_line=line,
        detail="not UTF-8, so read as Windows-1252 (Excel's CSV on Swedish Windows): check å, ä, ö"
               " in the plan, and save it as CSV UTF-8 to be sure")
    return text


def parse_roster(data: bytes, name: str = "<roster>") -> list[Person]:
    text = _decode(data, name)
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    problems: list[str] = []
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise RosterError([f"{name}:1: the roster is empty (a header row is required)"]) from None
    while header and not header[-1]:  # Excel's trailing empty columns (";;")
        header.pop()
    problems += _check_header(header, name)
    if problems:
        raise RosterError(problems)

    persons: list[Person] = []
    seen: dict[str, int] = {}
    for row in _rows(reader, name, problems):
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        while len(row) > len(header) and not row[-1].strip():  # trailing empty cells (";;")
            row = row[:-1]
        if len(row) != len(header):
            problems.append(
                f"{name}:{line}: -: expected {len(header)} columns, found {len(row)}"
                f" (is the separator {delimiter!r} inside an unquoted value?)"
            )
            continue
        values = {col: cell.strip() for col, cell in zip(header, row, strict=True)}
        person, row_problems = _person(values, line)
        problems += [f"{name}:{line}: {p}" for p in row_problems]
        if person is None:
            continue
        key = person.person_id.casefold()  # P00004 and p00004 are one person
        if key in seen:
            problems.append(
                f"{name}:{line}: person_id: {person.person_id!r} already used on line {seen[key]}"
            )
            continue
        seen[key] = line
        persons.append(person)
    if problems:
        raise RosterError(problems)
    return persons


def _rows(reader: Any, name: str, problems: list[str]) -> Iterator[list[str]]:
    """The reader's rows; a row the csv module cannot read (a field over its 128 kB limit, a
    NUL byte) is reported with its line and reading stops there."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(f"{name}:{reader.line_num}: -: cannot be read as CSV ({exc})")
            return


def _invisible(value: str, name: bool) -> str | None:
    """The first control or invisible formatting character (NUL, a bidi override such as
    U+202E, a zero-width space or joiner), which would hide what a value really says. A line
    break is allowed in a quoted cell, never in a name."""
    if value.isprintable():  # no character of category C or Z but the space: none of these
        return None
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf") and (name or ch not in "\n\r\t"):
            return f"U+{ord(ch):04X}"
    return None


def _check_header(header: list[str], name: str) -> list[str]:
    problems = []
    for col in header:
        if col not in COLUMNS:
            problems.append(f"{name}:1: {col or '(empty)'}: unknown column (known: {', '.join(COLUMNS)})")
    for col in REQUIRED:
        if col not in header:
            problems.append(f"{name}:1: {col}: required column is missing")
    dupes = {c for c in header if header.count(c) > 1}
    problems += [f"{name}:1: {c}: column appears more than once" for c in sorted(dupes)]
    return problems


def _person(values: dict[str, str], line: int) -> tuple[Person | None, list[str]]:
    problems: list[str] = []
    for col in REQUIRED:
        if not values.get(col):
            problems.append(f"{col}: required value is empty")
    for col, value in values.items():
        hidden = _invisible(value, name=col in ("given_name", "surname"))
        if hidden:
            problems.append(f"{col}: contains the invisible or control character {hidden}; retype the value")
    pid = values.get("person_id", "")
    if pid and not _PERSON_ID.match(pid):
        problems.append(f"person_id: {pid!r} may hold only letters, digits, '.', '_' and '-'")
    if pid.lower().startswith("canary-"):
        problems.append(f"person_id: {pid!r}: 'canary-' is reserved for the tool's test accounts")
    for col in ("given_name", "surname"):
        if any(ch in values.get(col, "") for ch in "\"<>@;\\"):
            problems.append(f"{col}: contains a character not allowed in a name")
    fields: dict[str, str] = {c: values.get(c, "") for c in COLUMNS}
    if values.get("personal_number"):
        try:
            fields["personal_number"] = normalise_personal_number(values["personal_number"])
        except ValueError as exc:
            problems.append(f"personal_number: {exc}")  # the message never holds the digits
    if values.get("mobile"):
        try:
            fields["mobile"] = normalise_mobile(values["mobile"])
        except ValueError as exc:
            problems.append(f"mobile: {exc}")
    local = values.get("upn_local", "")
    if local and (not _UPN_LOCAL.match(local) or local.startswith(".") or local.endswith(".")
                  or ".." in local):
        problems.append(f"upn_local: {local!r} is not an address's local part (a-z, 0-9, . - _)")
    email = values.get("private_email", "")
    if email and not _EMAIL.match(email):
        problems.append(f"private_email: {email!r} is not an e-mail address")
    if problems:
        return None, problems
    return Person(**fields, line=line), []
