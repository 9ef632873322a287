"""The registry: one module per step kind, one line each in ``STEPS``.

Everything else asks the steps through the helpers below (which groups a playbook needs,
what a leaver loses, what the snapshot must read), never by a step's name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .access_pass import AccessPassStep
from .account import AccountStep
from .base import BaseStep, PersonRun, PersonView, PlanContext, Step, StepPlan
from .device_settings import DeviceSettingsStep
from .groups import GroupsStep
from .guide import GuideStep
from .license import LicenseStep
from .mailbox_settings import MailboxSettingsStep

if TYPE_CHECKING:
    from ..playbook import Playbook
    from ..roster import Person
    from ..snapshot import Snapshot

STEPS: dict[str, Step] = {
    s.name: s for s in (
        AccountStep(),
        LicenseStep(),
        GroupsStep(),
        MailboxSettingsStep(),
        DeviceSettingsStep(),
        AccessPassStep(),
        GuideStep(),
    )
}


def used(playbook: Playbook) -> list[Step]:
    """The playbook's steps, in its order."""
    return [STEPS[name] for name in playbook.steps]


def account_step(playbook: Playbook) -> Step:
    return next(s for s in used(playbook) if s.holds_account)


def guide_step(playbook: Playbook) -> Step | None:
    return next((s for s in used(playbook) if s.guide), None)


def group_ids(playbook: Playbook, person: Person, snapshot: Snapshot) -> set[str]:
    """The ids of the (existing) groups the playbook's steps put ``person`` in."""
    names = {n for step in used(playbook) for n in step.groups(playbook, person)}
    return {g.id for n in names for g in snapshot.groups.get(n, [])}


def enrolled_device(playbook: Playbook, person: Person) -> bool:
    """The person's roster device is a work device a step enrols in Intune: compliant."""
    return bool(person.device_serial) and any(s.manages_devices for s in used(playbook))


def needed_groups(playbook: Playbook, persons: Iterable[Person]) -> dict[str, int]:
    """Every group name the playbook's steps need for these people (user and device groups),
    with how many people need it; a group a step manages for nobody here counts 0."""
    steps = used(playbook)
    needed: dict[str, int] = {}
    for person in persons:
        for step in steps:
            for name in step.groups(playbook, person):
                needed[name] = needed.get(name, 0) + 1
    for step in steps:
        for name in step.groups(playbook, None):
            needed.setdefault(name, 0)
    return needed


__all__ = ["STEPS", "BaseStep", "PersonRun", "PersonView", "PlanContext", "Step", "StepPlan",
           "account_step", "guide_step", "needed_groups", "used"]
