"""A fictional Swedish region: names, committees, employees, officials. Deterministic by seed.

Both the sandbox seed (employees) and the example roster (officials) come from here, so
that the dual-role people of the example roster really exist as employees in the sandbox.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from .people import address_part as name_token
from .people import luhn_ok

GIVEN = (
    "Anna", "Åsa", "Björn", "Göran", "Märta", "Örjan", "Jöns", "Lars", "Karin", "Ingrid",
    "Sören", "Håkan", "Maja", "Elsa", "Linnéa", "Mikael", "Per", "Eva", "Ulla", "Bo",
    "Agneta", "Kjell", "Lena", "Mats", "Ebba", "Hugo", "Nils", "Sven", "Sofia", "Emma",
    "Anders", "Johan", "Kerstin", "Birgitta", "Gunnel", "Tove", "Åke", "Jörgen", "Pär", "Noor",
    "Amir", "Fatima", "Leila", "Ali", "Siv", "Britt-Marie", "Jan-Erik", "Anna-Karin", "Zoë", "René",
)
SURNAMES = (
    "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson",
    "Svensson", "Gustafsson", "Pettersson", "Jonsson", "Jansson", "Hansson", "Bengtsson",
    "Jönsson", "Lindberg", "Lindström", "Lindqvist", "Lindgren", "Berg", "Bergström", "Åberg",
    "Öberg", "Ström", "Sjöberg", "Holm", "Ekström", "Söderberg", "Nyström", "Hedlund",
    "Håkansson", "Sandberg", "Björk", "Wikström", "Forsberg", "Lundgren", "Mattsson", "Falk",
    "Dahl", "Berg-Nilsson", "Svensson Lind", "Ali", "Haddad", "Yilmaz", "Nordström",
)
BODIES = (
    "Regionfullmäktige", "Regionstyrelsen", "Hälso- och sjukvårdsnämnden",
    "Regionala utvecklingsnämnden", "Kulturnämnden", "Patientnämnden", "Servicenämnden",
)
ROLES = ("ledamot", "ersättare")
DEPARTMENTS = (
    "Akutmottagningen", "Rehabiliteringsenheten", "Regionkansliet", "IT-avdelningen",
    "Ekonomiavdelningen", "Vårdcentral Norr", "Vårdcentral Söder", "Kollektivtrafik",
)
JOB_TITLES = (
    "undersköterska", "sjuksköterska", "läkare", "fysioterapeut", "arbetsterapeut",
    "handläggare", "controller", "systemförvaltare",
)
DEVICE_MODELS = ("iPhone 12", "Samsung XCover 5", "iPad mini", "iPad")

# Employees who also sit on a committee: the example roster carries their employee_id.
DUAL_ROLE_EMPLOYEES = (
    ("E10001", "Karin", "Lindqvist", "+46701110001"),
    ("E10002", "Håkan", "Öberg", "+46701110002"),
    ("E10003", "Leila", "Haddad", "+46701110003"),
    ("E10004", "Per", "Svensson Lind", "+46701110004"),
    ("E10005", "Märta", "Åberg", "+46701110005"),
    ("E10006", "Jan-Erik", "Nyström", "+46701110006"),
)

# Officials whose names exercise the naming policy.
HARD_NAMES = (
    ("Anna-Karin", "Berg-Nilsson"), ("Sören", "Svensson Lind"), ("Ebba", "af Klint"),
    ("Carl", "von Essen"), ("Siobhán", "O'Brien"), ("René", "Müller"), ("Zoë", "Ødegård"),
    ("Björn", "Æbelø"), ("Linnéa", "Sjöström"), ("Anna", "Svensson"), ("Anna", "Svensson"),
    ("Märta", "D'Souza"), ("Jöns", "Ångström-Éclair"), ("Örjan", "Öhman"),
)


# Employees behind the example roster's hard dual-role cases (the last officials of a roster
# of 50 or more): a married name, an official two employees could be, a disabled account.
SCENARIO_EMPLOYEES = (
    ("E10007", "Sara", "Nilsson", "+46701110007", True, ()),
    ("E10008", "Omar", "Ali", "+46701110008", True, ()),
    ("E10009", "Elin", "Berg", "+46701110009", True, ("elin.berg.privat@example.org",)),
    ("E10010", "Per", "Holm", "+46701110010", False, ()),
)


# The device pilot: staff of an emergency department and a rehabilitation unit in five
# professional categories, each with one of the four pilot devices. Four devices are not
# enrolled yet when the sandbox is made (they enrol on `sandbox simulate-checkins`).
PILOT_CATEGORIES = ("undersköterska", "sjuksköterska", "läkare", "arbetsterapeut", "fysioterapeut")
PILOT_DEVICES = (  # the roster's name, the model Intune reports
    ("iPhone 12", "iPhone 12"), ("Samsung XCover 5", "SM-G525F"),
    ("iPad mini", "iPad mini (6th generation)"), ("iPad", "iPad (9th generation)"),
)
_PILOT_NAMES = (
    ("Amanda", "Sundberg"), ("Oskar", "Wallin"), ("Hanna", "Ekström"), ("Yusuf", "Demir"),
    ("Lisa", "Forsberg"), ("Erik", "Hägg"), ("Fredrika", "Björklund"), ("Mohammed", "Karimi"),
    ("Ida", "Åkesson"), ("Viktor", "Lundin"), ("Sanna", "Mäkinen"), ("Ahmed", "Hassan"),
    ("Julia", "Strand"), ("Tobias", "Nyberg"), ("Emelie", "Öhrn"), ("Daniel", "Sjödin"),
    ("Matilda", "Berglund"), ("Rasmus", "Holmgren"), ("Nadia", "Rahimi"), ("Gustav", "Lind"),
)


@dataclass(frozen=True, slots=True)
class PilotStaff:
    employee_id: str
    given: str
    surname: str
    department: str
    category: str
    device_model: str   # as the roster says it
    intune_model: str   # as Intune reports it
    serial: str
    enrolled: bool


def pilot_staff() -> list[PilotStaff]:
    out = []
    for i, (given, surname) in enumerate(_PILOT_NAMES):
        roster_model, intune_model = PILOT_DEVICES[i % len(PILOT_DEVICES)]
        out.append(PilotStaff(
            f"E{30001 + i}", given, surname,
            "Akutmottagningen" if i % 2 == 0 else "Rehabiliteringsenheten",
            PILOT_CATEGORIES[i % len(PILOT_CATEGORIES)], roster_model, intune_model,
            f"{'DX' if 'iP' in roster_model else 'R5'}{7000 + i:05d}", enrolled=i % 5 != 4))
    return out


@dataclass(frozen=True, slots=True)
class Employee:
    employee_id: str
    given: str
    surname: str
    mobile: str
    department: str
    job_title: str
    enabled: bool = True
    other_mails: tuple[str, ...] = ()

    @property
    def personal_number(self) -> str:
        return personal_number_for(self.employee_id)


def personal_number_for(key: str) -> str:
    """A fictional, valid personnummer (YYYYMMDDXXXX), the same for the same key."""
    rng = random.Random(f"pnr:{key}")
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(365 * 50))
    body = birth.strftime("%y%m%d") + f"{rng.randrange(1000):03d}"
    check = next(d for d in range(10) if luhn_ok(body + str(d)))
    return birth.strftime("%Y%m%d") + body[6:] + str(check)


def employees(count: int, seed: int) -> list[Employee]:
    rng = random.Random(seed)
    fixed = [Employee(eid, g, s, m, "Regionkansliet", "handläggare")
             for eid, g, s, m in DUAL_ROLE_EMPLOYEES]
    fixed += [Employee(eid, g, s, m, "Regionkansliet", "handläggare", enabled, mails)
              for eid, g, s, m, enabled, mails in SCENARIO_EMPLOYEES]
    fixed += [Employee(p.employee_id, p.given, p.surname, f"+4670{4000000 + i:07d}", p.department,
                       p.category) for i, p in enumerate(pilot_staff())]
    out = fixed[:count]
    for i in range(len(out), count):
        out.append(Employee(
            f"E{20000 + i}", rng.choice(GIVEN), rng.choice(SURNAMES),
            f"+4670{2000000 + i:07d}", rng.choice(DEPARTMENTS), rng.choice(JOB_TITLES),
            enabled=rng.random() > 0.02,
        ))
    return out


@dataclass(frozen=True, slots=True)
class Official:
    person_id: str
    given: str
    surname: str
    role: str
    body: str
    mobile: str = ""
    employee_id: str = ""
    private_email: str = ""
    personal_number: str = ""


def _formatted(pnr: str) -> str:
    return f"{pnr[:8]}-{pnr[8:]}"


def officials(count: int, seed: int) -> list[Official]:
    rng = random.Random(seed)
    out: list[Official] = []

    def body_for(i: int) -> str:
        return BODIES[i % len(BODIES)]

    for eid, given, surname, mobile in DUAL_ROLE_EMPLOYEES:
        i = len(out)
        out.append(Official(f"P{i + 1:05d}", given, surname, ROLES[i % 2], body_for(i),
                            mobile, eid, "", _formatted(personal_number_for(eid))))
    for given, surname in HARD_NAMES:
        i = len(out)
        out.append(Official(f"P{i + 1:05d}", given, surname, ROLES[i % 2], body_for(i)))
    while len(out) < count:
        i = len(out)
        given, surname = rng.choice(GIVEN), rng.choice(SURNAMES)
        mobile = f"070-{3000000 + i:07d}" if rng.random() < 0.6 else ""
        email = f"{name_token(given)[:3]}{i}@example.org" if rng.random() < 0.4 else ""
        out.append(Official(f"P{i + 1:05d}", given, surname,
                            "ledamot" if rng.random() < 0.55 else "ersättare",
                            body_for(rng.randrange(len(BODIES))), mobile, "", email))
    out = out[:count]
    if count >= 50:  # the hard dual-role cases close the roster
        n = count - 3
        out[n:] = [
            # Married since HR's record: another surname, the same personnummer.
            Official(f"P{n + 1:05d}", "Sara", "Ek", "ledamot", BODIES[1],
                     personal_number=_formatted(personal_number_for("E10007"))),
            # Omar Ali's mobile and Elin Berg's private e-mail: two employees could be her.
            Official(f"P{n + 2:05d}", "Maja", "Lund", "ersättare", BODIES[2], "+46701110008",
                     private_email="elin.berg.privat@example.org"),
            # Per Holm's employee account is disabled.
            Official(f"P{n + 3:05d}", "Per", "Holm", "ledamot", BODIES[3], employee_id="E10010",
                     personal_number=_formatted(personal_number_for("E10010"))),
        ]
    return out


def roster_csv(people: list[Official], delimiter: str = ";") -> str:
    """A roster as the committee secretariat's Excel exports it (Swedish locale: ';')."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["person_id", "given_name", "surname", "role", "body", "mobile",
                     "private_email", "employee_id", "personal_number"])
    for p in people:
        writer.writerow([p.person_id, p.given, p.surname, p.role, p.body, p.mobile,
                         p.private_email, p.employee_id, p.personal_number])
    return buf.getvalue()


def pilot_roster_csv() -> str:
    """The device pilot's roster: staff, by employee id, with their device."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    writer.writerow(["person_id", "given_name", "surname", "role", "body", "category", "employee_id",
                     "device_model", "device_serial"])
    for i, p in enumerate(pilot_staff()):
        writer.writerow([f"S{i + 1:04d}", p.given, p.surname, "anställd", p.department, p.category,
                         p.employee_id, p.device_model, p.serial])
    return buf.getvalue()
