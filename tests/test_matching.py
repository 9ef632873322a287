"""The pure tier: who in the directory may be a roster person, from evidence built in memory."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.dualrole import ADOPT, HELD, OWN, resolve
from provisioner.matching import MATCH, NEW, REVIEW, match_people
from provisioner.playbook import DualRole

from .builders import OWNER, person, user

POLICY = DualRole(policy="separate_account")


def employee(uid: str, given: str = "Anna", surname: str = "Berg", **attributes: Any) -> Any:
    attributes.setdefault("displayName", f"{given} {surname}")
    attributes.setdefault("givenName", given)
    attributes.setdefault("surname", surname)
    return user(uid, f"{given}.{surname}@region.se".lower(), **attributes)


@pytest.mark.parametrize(("who", "directory", "status", "evidence"), [
    (person("p1"), [], NEW, ()),
    (person("p1", employee_id="E100"), [employee("u1", employeeId="E100")], MATCH,
     ("employee_id", "name")),
    (person("p1", mobile="+46701234567"), [employee("u1", mobilePhone="+46701234567")], REVIEW,
     ("mobile", "name")),                                              # 0.74: a human decides
    (person("p1"), [employee("u1")], NEW, ("name",)),                  # 0.35: a name is no one
    (person("p1", given="Bo"), [employee("u1")], NEW, ()),             # another name, nothing else
    (person("p1", employee_id="E100"), [employee("u1", employeeId="E100", accountEnabled=False)],
     REVIEW, ("employee_id", "name")),                                 # a disabled account
    (person("p1", employee_id="E100"),                                # two could be the one
     [employee("u1", employeeId="E100"), employee("u2", employeeId="E100")], REVIEW, ("employee_id", "name")),
])
def test_matching(who: Any, directory: list[Any], status: str, evidence: tuple[str, ...]) -> None:
    found = match_people([who], directory, POLICY, owner_prefix=OWNER, key=None)[who.person_id]
    assert found.status is status
    assert (found.candidates[0].evidence if found.candidates else ()) == evidence


def test_the_persons_own_account_is_never_a_candidate() -> None:
    own = employee("u1", employeeId="E100",
                   onPremisesExtensionAttributes={"extensionAttribute15": f"{OWNER}p1"})
    found = match_people([person("p1", employee_id="E100")], [own], POLICY, owner_prefix=OWNER, key=None)
    assert found["p1"].status is NEW


@pytest.mark.parametrize(("policy", "status", "kind"), [
    ("separate_account", MATCH, OWN), ("use_existing", MATCH, ADOPT), ("review", MATCH, HELD),
    ("use_existing", REVIEW, HELD), ("use_existing", NEW, OWN),
])
def test_the_policy_decides_what_a_match_means(policy: str, status: str, kind: str) -> None:
    who, directory = person("p1", employee_id="E100"), {"u1": employee("u1", employeeId="E100")}
    if status is NEW:
        directory = {}
    elif status is REVIEW:
        directory["u1"] = employee("u1", employeeId="E100", accountEnabled=False)
    rules = DualRole(policy=policy)  # type: ignore[arg-type]
    found = match_people([who], directory.values(), rules, owner_prefix=OWNER, key=None)["p1"]
    assert found.status is status
    assert resolve(found, rules, None, directory).kind is kind


def _pairwise(people: list[Any], directory: list[Any], policy: DualRole, key: bytes) -> dict[str, list[Any]]:
    """The definition the index must agree with: every person against every account."""
    from provisioner.identity import personal_number_hash
    from provisioner.matching import _mobile, name_key

    w, out = policy.weights, {}
    for p in people:
        born = None
        if p.personal_number:
            day = int(p.personal_number[6:8])
            born = f"{p.personal_number[:4]}-{p.personal_number[4:6]}-{day - 60 if day > 60 else day:02d}"
        found = []
        for u in directory:
            a, ext = u.attributes, u.attributes.get("onPremisesExtensionAttributes") or {}
            kinds = [k for k, hit in (
                ("employee_id", p.employee_id and str(a.get("employeeId") or "").casefold()
                 == p.employee_id.casefold()),
                ("personal_number", p.personal_number and ext.get(policy.personal_number_attribute)
                 == personal_number_hash(p.personal_number, key)),
                ("mobile", p.mobile and _mobile(a.get("mobilePhone")) == p.mobile),
                ("private_email", p.private_email and p.private_email.casefold()
                 in [m.casefold() for m in a.get("otherMails") or []]),
                ("name", a.get("givenName") and a.get("surname") and name_key(a["givenName"], a["surname"])
                 == name_key(p.given_name, p.surname))) if hit]
            if not kinds or (u.owner_tag or "").startswith(OWNER):
                continue
            theirs = ext.get(policy.birth_date_attribute) if born else None
            if theirs and str(theirs)[:10] != born and kinds == ["name"]:
                continue
            if theirs and str(theirs)[:10] == born:
                kinds.append("birth_date")
            score = 1.0
            for k in kinds:
                score *= 1 - getattr(w, k)
            found.append((round(1 - score, 3), u.upn, u.id, tuple(kinds)))
        found.sort(key=lambda c: (-c[0], c[1]))
        out[p.person_id] = found
    return out


@given(st.data())
def test_the_index_agrees_with_comparing_every_pair(data: Any) -> None:
    """Namesakes are judged once per name and phone numbers found by their last digits: the
    result is still that of comparing each person with each account."""
    from provisioner.matching import _classify

    names = st.sampled_from(["Anna", "Åsa", "Bo", "Anna-Karin"])
    surnames = st.sampled_from(["Berg", "Öberg", "Berg Lind"])
    dates = st.sampled_from(["", "1970-01-02", "1980-05-06"])
    pnrs = st.sampled_from(["", "197001020000", "198005060000", "197001620000"])
    phones = st.sampled_from(["", "+46701234567", "070-123 45 67", "0046701234568", "+47701234567"])
    policy = DualRole(policy="separate_account", personal_number_attribute="extensionAttribute1",
                      birth_date_attribute="extensionAttribute2")
    key = b"k"
    directory = []
    for i in range(data.draw(st.integers(0, 12))):
        ext = {"extensionAttribute2": data.draw(dates)}
        if data.draw(st.booleans()):
            ext["extensionAttribute15"] = f"{OWNER}p{i}"
        directory.append(user(f"u{i}", f"u{i}@region.se", givenName=data.draw(names),
                              surname=data.draw(surnames), mobilePhone=data.draw(phones) or None,
                              employeeId=data.draw(st.sampled_from(["", "E1", "e1", "E2"])) or None,
                              accountEnabled=data.draw(st.booleans())))
        directory[-1].attributes["onPremisesExtensionAttributes"].update(ext)
    people = [person(f"p{i}", given=data.draw(names), surname=data.draw(surnames),
                     employee_id=data.draw(st.sampled_from(["", "E1", "E2"])),
                     personal_number=data.draw(pnrs), mobile=data.draw(phones.filter(
                         lambda v: v in ("", "+46701234567"))))
              for i in range(data.draw(st.integers(1, 6)))]
    got = match_people(people, directory, policy, owner_prefix=OWNER, key=key)
    for pid, found in _pairwise(people, directory, policy, key).items():
        assert [(c.score, c.upn, c.user_id, c.evidence) for c in got[pid].candidates] == found
        assert got[pid].status is _classify(pid, got[pid].candidates, policy).status
