"""Canonical JSON: the text change ids and the audit chain are hashes of must not move."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.model import Action, Change, canonical, canonical_bytes

# What json.dumps wrote when journals and audit logs were first kept: the reference.
REFERENCE = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))

_scalars = (st.none() | st.booleans() | st.text() | st.integers()
            | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.sampled_from([1e-07, 2.5e-05, 1e16, 5e-324, -0.0, float("inf"), float("nan")]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.lists(inner, max_size=3).map(tuple)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


@settings(max_examples=400)
@given(_values)
def test_canonical_json_is_the_standard_librarys_byte_for_byte(value: object) -> None:
    """Floats (``1e-07``, not orjson's ``1e-7``), integers beyond 64 bits, non-BMP keys sorted
    by code point: whichever encoder writes it, the bytes are the reference's."""
    assert canonical_bytes(value) == REFERENCE.encode(value).encode()
    assert canonical(value) == REFERENCE.encode(value)


def test_deep_nesting_and_non_string_keys_are_written_as_before() -> None:
    deep: object = "x"
    for _ in range(300):  # orjson stops at 255 levels
        deep = [deep]
    for value in (deep, {1: "a", 2: "b"}, {"k": {3: True}}, ["\u2028", "\x7f", "\x00"]):
        assert canonical(value) == REFERENCE.encode(value)


def test_a_change_without_floats_keeps_the_id_earlier_versions_gave_it() -> None:
    """The common change (strings, booleans, integers, lists): the id journals already hold."""
    change = Change("groups", "P00002", Action.CREATE, "group:Förtroendevalda:bo@politiker.example-region.se",
                    None, {"group": "Förtroendevalda", "members": ["a", "b"], "n": 3, "ok": False,
                           "e": "\U0001F600", "z": None})
    assert change.id == "b0ddb26f03326282"
