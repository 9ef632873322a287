from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.errors import RosterError
from provisioner.identity import luhn_ok, normalise_mobile, normalise_personal_number
from provisioner.roster import parse_roster

VALID_PNR = "19811218-9876"  # Skatteverket's documented test number


def test_semicolon_separated_with_bom_as_swedish_excel_writes_it() -> None:
    data = "\ufeffperson_id;given_name;surname;body\nP1;Åsa;Öberg;Regionstyrelsen\n".encode()
    [person] = parse_roster(data)
    assert (person.person_id, person.given_name, person.surname, person.body) == (
        "P1", "Åsa", "Öberg", "Regionstyrelsen")


def test_comma_separated_with_quoted_commas() -> None:
    data = b'person_id,given_name,surname,body\nP1,Anna,Berg,"Kultur, fritid"\n'
    assert parse_roster(data)[0].body == "Kultur, fritid"


def test_all_errors_are_reported_together_with_file_line_and_column() -> None:
    data = (
        b"person_id,given_name,surname,mobile,personal_number,private_email\n"
        b"P1,Anna,Berg,0701234567,,\n"
        b"P2,,Berg,12,,\n"
        b"P1,Bo,Ek,,,\n"
        b"P4,Bo,Ek,,19811218-9875,not-an-email\n"
    )
    with pytest.raises(RosterError) as err:
        parse_roster(data, "r.csv")
    assert err.value.problems == [
        "r.csv:3: given_name: required value is empty",
        "r.csv:3: mobile: not a phone number: '12'",
        "r.csv:4: person_id: 'P1' already used on line 2",
        "r.csv:5: personal_number: personnummer check digit is wrong",
        "r.csv:5: private_email: 'not-an-email' is not an e-mail address",
    ]


def test_unknown_and_missing_columns_are_errors() -> None:
    with pytest.raises(RosterError) as err:
        parse_roster(b"person_id,given_name,email\nP1,A,a@b.se\n", "r.csv")
    assert "r.csv:1: email: unknown column" in err.value.problems[0]
    assert "r.csv:1: surname: required column is missing" in err.value.problems


def test_a_wrong_number_of_cells_names_the_line() -> None:
    with pytest.raises(RosterError) as err:
        parse_roster(b"person_id,given_name,surname\nP1,Anna,Berg,extra\n", "r.csv")
    assert err.value.problems[0].startswith("r.csv:2: -: expected 3 columns, found 4")


def test_line_numbers_count_multiline_quoted_cells() -> None:
    data = b'person_id,given_name,surname,body\nP1,A,B,"two\nlines"\nP2,,B,x\n'
    with pytest.raises(RosterError) as err:
        parse_roster(data, "r.csv")
    assert err.value.problems == ["r.csv:4: given_name: required value is empty"]


def test_not_utf8_nor_windows_1252_is_a_clear_error() -> None:
    with pytest.raises(RosterError, match=r"r\.csv:2: not UTF-8, nor Windows-1252: save the file as CSV"):
        parse_roster(b"person_id,given_name,surname\nP1,\x81sa,B\n", "r.csv")


def test_excels_windows_1252_csv_is_read_and_said() -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        data = "person_id;given_name;surname\r\nP1;Åsa;Öberg\r\n".encode("cp1252")
        [person] = parse_roster(data, "r.csv")
    assert (person.given_name, person.surname) == ("Åsa", "Öberg")
    [warning] = logs
    assert warning["event"] == "roster.read_as_windows_1252" and warning["first_non_utf8_line"] == 2


def test_excels_trailing_empty_columns_are_ignored() -> None:
    data = "person_id;given_name;surname;;\r\nP1;Åsa;Ek;;\r\nP2;Bo;Ek;;\r\n".encode()
    assert [p.person_id for p in parse_roster(data, "r.csv")] == ["P1", "P2"]
    with pytest.raises(RosterError, match=r"r\.csv:2: -: expected 3 columns, found 4"):
        parse_roster(b"person_id;given_name;surname;;\nP1;A;B;oops;\n", "r.csv")


def test_personal_number_is_never_in_an_error_or_repr() -> None:
    bad = "19811218-9875"
    with pytest.raises(RosterError) as err:
        parse_roster(f"person_id,given_name,surname,personal_number\nP1,A,B,{bad}\n".encode())
    assert "9875" not in str(err.value) and "811218" not in str(err.value)
    [person] = parse_roster(
        f"person_id,given_name,surname,personal_number\nP1,A,B,{VALID_PNR}\n".encode())
    assert person.personal_number == "198112189876"
    assert "9876" not in repr(person)


@pytest.mark.parametrize(("raw", "expected"), [
    ("19811218-9876", "198112189876"),
    ("811218-9876", "198112189876"),
    ("8112189876", "198112189876"),
    ("121212+1212", "191212121212"),  # '+': a hundred or older
    ("19811278-9873", "198112789873"),  # samordningsnummer: day + 60
])
def test_personal_number_forms(raw: str, expected: str) -> None:
    assert normalise_personal_number(raw, today=dt.date(2026, 11, 26)) == expected


@given(st.dates(dt.date(1900, 1, 1), dt.date(2020, 12, 31)), st.integers(0, 999))
def test_any_luhn_valid_number_is_accepted(birth: dt.date, serial: int) -> None:
    body = birth.strftime("%y%m%d") + f"{serial:03d}"
    check = next(d for d in range(10) if luhn_ok(body + str(d)))
    assert normalise_personal_number(birth.strftime("%Y%m%d") + f"-{serial:03d}{check}")[:8] == \
        birth.strftime("%Y%m%d")


@pytest.mark.parametrize(("raw", "expected"), [
    ("070-123 45 67", "+46701234567"),
    ("+46 70 123 45 67", "+46701234567"),
    ("0046701234567", "+46701234567"),
    ("+4790012345", "+4790012345"),
])
def test_mobile_numbers_are_normalised_to_e164(raw: str, expected: str) -> None:
    assert normalise_mobile(raw) == expected


def test_a_swedish_landline_is_not_a_mobile() -> None:
    with pytest.raises(ValueError, match="not a Swedish mobile"):
        normalise_mobile("08-123 456 78")
