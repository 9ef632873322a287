"""The pure tier: who in the directory may be a roster person, from evidence built in memory."""

from __future__ import annotations

from typing import Any

import pytest

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
