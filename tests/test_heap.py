"""The cycle collector kept out of big reads and plans (provisioner/heap.py)."""

from __future__ import annotations

import gc

from provisioner.heap import collector_off


def test_the_collector_is_off_inside_until_the_outermost_ends() -> None:
    assert gc.isenabled()
    with collector_off():
        with collector_off():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_what_is_made_with_the_collector_off_goes_to_the_oldest_generation_unexamined() -> None:
    """A directory read is data that lives on: after it, the next allocation must not look
    through its million objects (they go to the oldest generation; without this they are
    young, and the first collection after re-enabling examines them all)."""
    gc.unfreeze()  # what earlier tests froze (plan freezes what it made) back to the oldest generation
    with collector_off():
        made = [[i] for i in range(1000)]
    assert gc.isenabled()
    assert any(o is made for o in gc.get_objects(generation=2))
    assert not any(o is made for o in gc.get_objects(generation=0))
