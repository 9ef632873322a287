"""The pure tier: the mass-change guard refuses to take many people out at once unless told
how many."""

from __future__ import annotations

import pytest

from provisioner.errors import MassChangeError
from provisioner.guards import check_mass_change
from provisioner.planner import make_plan

from .builders import group, managed, person, playbook, roster, snapshot

STAYING = [person(f"p{i:02d}") for i in range(3)]


def leaving(count: int) -> tuple[object, object, object]:
    """A roster of three people against 3 + ``count`` managed accounts: ``count`` leavers."""
    users = [managed(p.person_id, "Anna", f"Berg{p.person_id}") for p in STAYING]
    users += [managed(f"x{i:02d}", "Bo", f"Ek{i}") for i in range(count)]
    members = [u.id for u in users]
    groups = (group("Förtroendevalda", *members), group("Politiker Regionfullmäktige", *members))
    snap = snapshot(*users, groups=groups)
    pb = playbook(mass_change={"people": 5, "ratio": 0.1})
    return pb, make_plan(pb, roster(*STAYING), snap), snap


@pytest.mark.parametrize(("count", "allowed", "refused"), [
    (5, None, False),   # at the threshold
    (6, None, True),    # one more
    (6, 6, False),      # told exactly how many
    (6, 7, True),       # told another number
])
def test_the_mass_change_guard(count: int, allowed: int | None, refused: bool) -> None:
    pb, plan, snap = leaving(count)
    if refused:
        with pytest.raises(MassChangeError, match=f"would disable, unlicense or delete {count} people"):
            check_mass_change(pb, plan, snap, allowed)  # type: ignore[arg-type]
    else:
        check_mass_change(pb, plan, snap, allowed)  # type: ignore[arg-type]
