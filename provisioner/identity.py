"""Validation and normalisation of Swedish identity fields: personnummer, mobile numbers.

A personnummer is sensitive: nothing here puts its digits into an error message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

_PNR = re.compile(r"^(?P<century>\d{2})?(?P<date>\d{6})(?P<sep>[-+]?)(?P<tail>\d{4})$")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 - i % 2)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def normalise_personal_number(value: str, today: dt.date | None = None) -> str:
    """Return the 12-digit form YYYYMMDDXXXX, or raise ValueError (without the number)."""
    m = _PNR.match(value.strip().replace(" ", ""))
    if not m:
        raise ValueError("not a personnummer (expected YYYYMMDD-XXXX or YYMMDD-XXXX)")
    date, tail = m["date"], m["tail"]
    if not luhn_ok(date + tail):
        raise ValueError("personnummer check digit is wrong")
    century = m["century"]
    if century is None:
        today = today or dt.date.today()
        # Short form: the latest century that does not put the birth in the future;
        # '+' means the person is 100 or older.
        year = int(date[:2])
        candidate = (today.year // 100) * 100 + year
        if candidate > today.year:
            candidate -= 100
        if m["sep"] == "+":
            candidate -= 100
        century = str(candidate // 100)
    full = century + date
    day = int(full[6:8])
    if day > 60:  # samordningsnummer: day + 60
        day -= 60
    try:
        dt.date(int(full[:4]), int(full[4:6]), day)
    except ValueError:
        raise ValueError("personnummer has no valid birth date") from None
    return full + tail


def personal_number_hash(normalised: str, key: bytes) -> str:
    """Keyed hash used for matching; the raw number is never stored."""
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()


_MOBILE_JUNK = re.compile(r"[\s\-()/.]")


def normalise_mobile(value: str) -> str:
    """Return E.164 (+46701234567). Swedish national numbers (07x...) are accepted."""
    raw = _MOBILE_JUNK.sub("", value.strip())
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    if raw.startswith("0"):
        raw = "+46" + raw[1:]
    if not re.fullmatch(r"\+[1-9]\d{6,14}", raw):
        raise ValueError(f"not a phone number: {value!r}")
    if raw.startswith("+46") and not re.fullmatch(r"\+467[02369]\d{7}", raw):
        raise ValueError(f"not a Swedish mobile number: {value!r}")
    return raw
