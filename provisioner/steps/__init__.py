"""One module per step kind; ``STEPS`` maps the playbook's step names to them."""

from __future__ import annotations

from .access_pass import AccessPassStep
from .account import AccountStep
from .base import PersonRun, PersonView, PlanContext, Step
from .device_settings import DeviceSettingsStep
from .groups import GroupsStep
from .guide import GuideStep
from .license import LicenseStep
from .mailbox_settings import MailboxSettingsStep

STEPS: dict[str, Step] = {
    s.name: s for s in (AccountStep(), LicenseStep(), GroupsStep(), MailboxSettingsStep(),
                        DeviceSettingsStep(), AccessPassStep(), GuideStep())
}

__all__ = ["STEPS", "PersonRun", "PersonView", "PlanContext", "Step"]
