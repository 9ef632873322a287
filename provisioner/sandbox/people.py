"""How the sandbox region's HR and IT write their people down: addresses of employees, the
keyed hash of a personnummer that HR's sync puts in the directory, a valid check digit.

These are the region's rules, written here on their own, never borrowed from the tool: if the
tool's naming or hashing went wrong and the sandbox used the same code, both would agree and
no test would see it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

_LETTERS = str.maketrans({"æ": "ae", "ø": "o", "ß": "ss", "þ": "th", "ð": "d", "œ": "oe", "ł": "l",
                          "đ": "d", "ı": "i"})


def address_part(name: str) -> str:
    """A name as the region's IT puts it in an address: ``"Åsa-Britt O'Neil"`` → ``asa-brittoneil``."""
    plain = unicodedata.normalize("NFKD", name.lower().translate(_LETTERS))
    ascii_only = "".join(ch for ch in plain if not unicodedata.combining(ch))
    return re.sub(r"[^a-z0-9.\-_]", "", ascii_only)


def hr_hash(personnummer: str, key: bytes) -> str:
    """What HR's sync writes for a personnummer (12 digits): HMAC-SHA-256, hex, as the README
    tells a region to set it up."""
    return hmac.new(key, personnummer.encode(), hashlib.sha256).hexdigest()


def luhn_ok(digits: str) -> bool:
    """The personnummer's check digit (Luhn over the last ten digits)."""
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 - i % 2)
        total += n - 9 if n > 9 else n
    return total % 10 == 0
