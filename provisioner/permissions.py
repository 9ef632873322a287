"""What the app needs in a tenant: one table, per Graph request the gateway makes, of the
least-privileged application permission (and any directory role), from the "Permissions"
table of that request's page in Microsoft's Graph API reference
(https://learn.microsoft.com/graph/api/PAGE, the "Application" row).

``provisioner permissions``, preflight and the README's "A real tenant" list all come from
``required()`` and ``roles()`` below: a playbook asks for exactly what its steps, gates and
leavers call, and no more. Where an endpoint accepts a permission already asked for (a higher
privileged one, e.g. User.ReadWrite.All for assignLicense), no second permission is added.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .playbook import Playbook
from .steps import used

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph's appId in every tenant


@dataclass(frozen=True, slots=True)
class Endpoint:
    request: str             # as the reference page writes it
    least: str               # the least-privileged application permission
    also: tuple[str, ...]    # higher-privileged ones that also allow it
    page: str                # learn.microsoft.com/graph/api/<page>
    role: str | None = None  # a directory role the app's service principal needs as well

    def allows(self, granted: Iterable[str]) -> bool:
        return bool({self.least, *self.also} & set(granted))


_UW = ("Directory.ReadWrite.All",)
_UR = ("User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
_GR = ("Group.Read.All", "GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.Read.All",
       "Directory.ReadWrite.All")
_GW = ("Group.ReadWrite.All", "Directory.ReadWrite.All")
_MD = ("DeviceManagementManagedDevices.ReadWrite.All",)
_APP = ("Application.ReadWrite.All", "Directory.Read.All")
_TAP = ("UserAuthenticationMethod.ReadWrite.All",)
_DIR = ("Directory.Read.All", "Directory.ReadWrite.All")
_CA = ("Policy.Read.All", "Policy.ReadWrite.ConditionalAccess")

# Keyed by the gateway method (provisioner/graph/gateway.py) that makes the request.
ENDPOINTS: dict[str, Endpoint] = {
    "create_user": Endpoint("POST /users", "User.ReadWrite.All", _UW, "user-post-users"),
    "update_user": Endpoint("PATCH /users/{id}", "User.ReadWrite.All", _UW, "user-update"),
    "reset_password": Endpoint("PATCH /users/{id} (passwordProfile)", "User.ReadWrite.All", _UW,
                               "user-update", role="User Administrator"),
    "delete_user": Endpoint("DELETE /users/{id}", "User.ReadWrite.All", _UW, "user-delete"),
    "restore_user": Endpoint("POST /directory/deletedItems/{id}/restore", "User.ReadWrite.All", _UW,
                             "directory-deleteditems-restore"),
    "assign_license": Endpoint("POST /users/{id}/assignLicense", "LicenseAssignment.ReadWrite.All",
                               ("User.ReadWrite.All", "Directory.ReadWrite.All"), "user-assignlicense"),
    "bind_members": Endpoint("PATCH /groups/{id} (members@odata.bind)", "GroupMember.ReadWrite.All", _GW,
                             "group-update"),
    "create_group": Endpoint("POST /groups", "Group.Create", _GW, "group-post-groups"),
    "delete_group": Endpoint("DELETE /groups/{id}", "Group.ReadWrite.All", ("Directory.ReadWrite.All",),
                             "group-delete"),
    "assign_group_license": Endpoint("POST /groups/{id}/assignLicense", "LicenseAssignment.ReadWrite.All",
                                     _GW, "group-assignlicense"),
    "add_member": Endpoint("POST /groups/{id}/members/$ref", "GroupMember.ReadWrite.All", _GW,
                           "group-post-members"),
    "add_device_member": Endpoint("POST /groups/{id}/members/$ref (a device)", "Device.ReadWrite.All",
                                  ("Directory.ReadWrite.All",), "group-post-members"),
    "remove_member": Endpoint("DELETE /groups/{id}/members/{id}/$ref", "GroupMember.ReadWrite.All", _GW,
                              "group-delete-members"),
    "update_mailbox_settings": Endpoint("PATCH /users/{id}/mailboxSettings", "MailboxSettings.ReadWrite", (),
                                        "user-update-mailboxsettings"),
    "create_access_pass": Endpoint("POST /users/{id}/authentication/temporaryAccessPassMethods",
                                   "UserAuthMethod-TAP.ReadWrite.All", _TAP,
                                   "authentication-post-temporaryaccesspassmethods"),
    "delete_access_pass": Endpoint("DELETE /users/{id}/authentication/temporaryAccessPassMethods/{id}",
                                   "UserAuthMethod-TAP.ReadWrite.All", _TAP,
                                   "temporaryaccesspassauthenticationmethod-delete"),
    "send_mail": Endpoint("POST /users/{id}/sendMail", "Mail.Send", (), "user-sendmail"),
    "sync_device": Endpoint("POST /deviceManagement/managedDevices/{id}/syncDevice",
                            "DeviceManagementManagedDevices.PrivilegedOperations.All", (),
                            "intune-devices-manageddevice-syncdevice"),
    "set_device_category": Endpoint("PUT /deviceManagement/managedDevices/{id}/deviceCategory/$ref",
                                    "DeviceManagementManagedDevices.ReadWrite.All", (),
                                    "intune-devices-manageddevice-update"),
    # reads
    "list_users": Endpoint("GET /users", "User.Read.All", _UR, "user-list"),
    "get_user": Endpoint("GET /users/{id}", "User.Read.All", _UR, "user-get"),
    "subscribed_skus": Endpoint("GET /subscribedSkus", "Organization.Read.All",
                                ("Organization.ReadWrite.All", *_DIR),
                                "subscribedsku-list"),
    "list_groups": Endpoint("GET /groups", "GroupMember.Read.All", _GR, "group-list"),
    "get_group": Endpoint("GET /groups/{id}", "GroupMember.Read.All", _GR, "group-get"),
    "group_member_ids": Endpoint("GET /groups/{id}/members", "GroupMember.Read.All", _GR,
                                 "group-list-members"),
    "member_of": Endpoint("GET /users/{id}/memberOf", "GroupMember.Read.All", _GR, "user-list-memberof"),
    "get_mailbox_settings": Endpoint("GET /users/{id}/mailboxSettings", "MailboxSettings.Read",
                                     ("MailboxSettings.ReadWrite",), "user-get-mailboxsettings"),
    "access_passes": Endpoint("GET /users/{id}/authentication/temporaryAccessPassMethods",
                              "UserAuthMethod-TAP.Read.All",
                              ("UserAuthMethod-TAP.ReadWrite.All", "UserAuthenticationMethod.Read.All",
                               "UserAuthenticationMethod.ReadWrite.All"),
                              "authentication-list-temporaryaccesspassmethods"),
    "access_pass_policy": Endpoint(
        "GET /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/TemporaryAccessPass",
        "Policy.Read.AuthenticationMethod", ("Policy.ReadWrite.AuthenticationMethod",),
        "temporaryaccesspassauthenticationmethodconfiguration-get"),
    "method_configuration": Endpoint(
        "GET /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{id}",
        "Policy.Read.AuthenticationMethod", ("Policy.ReadWrite.AuthenticationMethod",),
        "authenticationmethodconfiguration-get"),
    "list_managed_devices": Endpoint("GET /deviceManagement/managedDevices",
                                     "DeviceManagementManagedDevices.Read.All", _MD,
                                     "intune-devices-manageddevice-list"),
    "device_categories": Endpoint("GET /deviceManagement/deviceCategories",
                                  "DeviceManagementManagedDevices.Read.All", _MD,
                                  "intune-shared-devicecategory-list"),
    "list_devices": Endpoint("GET /devices", "Device.Read.All",
                             ("Device.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
                             "device-list"),
    "sign_ins": Endpoint("GET /auditLogs/signIns", "AuditLog.Read.All", ("Directory.Read.All",),
                         "signin-list"),
    "domains": Endpoint("GET /domains", "Domain.Read.All",
                        ("Domain.ReadWrite.All", *_DIR), "domain-list"),
    "granted_app_permissions": Endpoint("GET /servicePrincipals/{id}/appRoleAssignments",
                                        "Application.Read.All", _APP,
                                        "serviceprincipal-list-approleassignments"),
    "extension_properties": Endpoint("GET /applications(appId='{appId}')/extensionProperties",
                                     "Application.Read.All", _APP, "application-list-extensionproperty"),
    "conditional_access_policies": Endpoint("GET /identity/conditionalAccess/policies",
                                            "Policy.Read.ConditionalAccess", _CA,
                                            "conditionalaccessroot-list-policies"),
    "named_locations": Endpoint("GET /identity/conditionalAccess/namedLocations",
                                "Policy.Read.ConditionalAccess", _CA,
                                "conditionalaccessroot-list-namedlocations"),
    "what_if": Endpoint("POST /identity/conditionalAccess/evaluate", "Policy.Read.ConditionalAccess", _CA,
                        "conditionalaccessroot-evaluate"),
    "app_directory_roles": Endpoint("GET /servicePrincipals/{id}/memberOf", "Application.Read.All", _APP,
                                    "serviceprincipal-list-memberof"),
}


def operations(playbook: Playbook) -> dict[str, str]:
    """gateway method → what it is for, for exactly what this playbook does: the core's reads,
    each step's requests (``Step.operations``), and the gates'."""
    ops = {"list_users": "read the directory (plan, dual-role matching)",
           "get_user": "read an account back (resume, rollback, the verify gate)",
           "domains": "preflight: the UPN domain is verified",
           "granted_app_permissions": "preflight: read the permissions granted to this app",
           "app_directory_roles": "preflight: read this app's directory roles",
           "extension_properties": "find the directory extension that marks adopted accounts",
           **dict.fromkeys(("conditional_access_policies", "named_locations", "what_if"),
                           "preflight: will Conditional Access let the next cohort sign in")}
    for step in used(playbook):
        ops |= step.operations(playbook)
    if any(c.gates.signin for c in playbook.cohorts):
        ops["sign_ins"] = "the sign-in gate reads the cohort's sign-ins"
        ops.setdefault("subscribed_skus", "preflight: the tenant has Entra ID P1 or P2 (sign-in logs)")
    return ops


def cover(playbook: Playbook) -> dict[str, str]:
    """gateway method → the permission asked for it: the fewest permissions, each the least
    privileged one of some request, that allow every request (greedy: the permission that
    allows the most requests not yet allowed, first)."""
    used = operations(playbook)
    candidates = sorted({ENDPOINTS[op].least for op in used})
    chosen: dict[str, str] = {}
    while len(chosen) < len(used):
        best = max(candidates, key=lambda p: sum(1 for op in used
                                                  if op not in chosen and ENDPOINTS[op].allows([p])))
        chosen |= {op: best for op in used if op not in chosen and ENDPOINTS[op].allows([best])}
    return {op: chosen[op] for op in used}


def required(playbook: Playbook) -> dict[str, str]:
    """permission → why (what it was first asked for)."""
    return _why(playbook, cover(playbook))


def _why(playbook: Playbook, ops: dict[str, str]) -> dict[str, str]:
    """permission → the reason of the first write it is for (else the first read)."""
    used, out = operations(playbook), {}
    for op in sorted(ops, key=lambda op: ENDPOINTS[op].request.startswith("GET")):
        out.setdefault(ops[op], used[op])
    return dict(sorted(out.items()))


def missing(playbook: Playbook, granted: set[str]) -> dict[str, str]:
    """The permissions to grant, with why, for the requests ``granted`` does not allow (a
    higher-privileged grant such as Directory.ReadWrite.All counts)."""
    return _why(playbook, {op: permission for op, permission in cover(playbook).items()
                           if not ENDPOINTS[op].allows(granted)})


def roles(playbook: Playbook) -> dict[str, str]:
    """directory role → why, for the app's service principal."""
    used = operations(playbook)
    return {ENDPOINTS[op].role: why for op, why in used.items() if ENDPOINTS[op].role}  # type: ignore[misc]


def doc_url(op: str) -> str:
    return f"https://learn.microsoft.com/graph/api/{ENDPOINTS[op].page}"
