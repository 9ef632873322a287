"""The least-privilege Graph application permissions a playbook needs, step by step."""

from __future__ import annotations

from .playbook import Playbook

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

# Why each permission is needed, for `provisioner permissions`.
BASE = {
    "User.ReadWrite.All": "read the directory, create and update accounts, assign licences",
    "Organization.Read.All": "read subscribed SKUs (licences and free seats)",
    "Domain.Read.All": "preflight: the UPN domain is verified",
    "Application.Read.All": "preflight: read the permissions granted to this app",
}
BY_STEP = {
    "groups": {"GroupMember.ReadWrite.All": "add and remove group members"},
    "mailbox_settings": {"MailboxSettings.ReadWrite": "set language, time zone and formats"},
    "device_settings": {
        "DeviceManagementManagedDevices.ReadWrite.All": "read devices, set device categories",
        "DeviceManagementManagedDevices.PrivilegedOperations.All": "ask devices to sync",
        "Device.Read.All": "find the Entra device object of a managed device",
        "GroupMember.ReadWrite.All": "add devices to their profile's device groups",
    },
    "access_pass": {"UserAuthenticationMethod.ReadWrite.All": "issue and revoke Temporary Access Passes"},
}


def required(playbook: Playbook) -> dict[str, str]:
    """permission → why, for exactly what this playbook does."""
    needed = dict(BASE)
    for step in playbook.steps:
        needed.update(BY_STEP.get(step, {}))
    if playbook.guide is not None and "guide" in playbook.steps and playbook.guide.delivery == "email":
        needed["Mail.Send"] = "send each person their guide from the service mailbox"
    if any(c.gates.signin for c in playbook.cohorts):
        needed["AuditLog.Read.All"] = "the sign-in gate reads the sign-in logs"
    return dict(sorted(needed.items()))
