"""Who may call what: application permissions and directory roles, as a tenant enforces them.

Each rule is the permission table of the endpoint's page in Microsoft's Graph API reference
(``learn.microsoft.com/graph/api/<page>``, the "Application" row: least privileged first, then
the higher privileged ones, any of which is enough). An app token without one of them gets 403
``Authorization_RequestDenied``, as Graph answers. Some writes need more than a permission:
resetting another user's ``passwordProfile`` needs a directory role on the app's service
principal (user-update: "the calling app must be assigned ... User Administrator"), and adding
a device to a group needs Device.ReadWrite.All besides the group permission (group-post-members).

The sandbox keeps its own table, written from the documentation, and never the client's: when
the two disagree, a test fails and the documentation decides.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph's well-known appId
SANDBOX_APP_ID = "5a7d0d1e-0000-4000-8000-00000000beef"  # the app every sandbox token stands for

# The roles that may reset a non-admin user's password (user-update, "passwordProfile").
PASSWORD_ROLES = ("User Administrator", "Helpdesk Administrator", "Authentication Administrator",
                  "Privileged Authentication Administrator", "Global Administrator")
DIRECTORY_ROLES = ("User Administrator", "Helpdesk Administrator", "Authentication Administrator",
                   "Privileged Authentication Administrator", "Global Administrator",
                   "Groups Administrator", "Intune Administrator")

_U = "User.ReadWrite.All", "Directory.ReadWrite.All"
_UR = "User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"
_GM = "GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"
_GW_ALL = ("Group.ReadWrite.All", "Directory.ReadWrite.All")
_GR = ("GroupMember.Read.All", "Group.Read.All", "GroupMember.ReadWrite.All", "Group.ReadWrite.All",
       "Directory.Read.All", "Directory.ReadWrite.All")
_MD = "DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All"
_TAP_W = "UserAuthMethod-TAP.ReadWrite.All", "UserAuthenticationMethod.ReadWrite.All"
_TAP_R = ("UserAuthMethod-TAP.Read.All", "UserAuthenticationMethod.Read.All", *_TAP_W)
_APP_R = "Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All"
_CA = "Policy.Read.ConditionalAccess", "Policy.Read.All", "Policy.ReadWrite.ConditionalAccess"

# (method, path pattern relative to /v1.0, any of these application permissions, doc page)
RULES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("GET", r"/users", _UR, "user-list"),
    ("POST", r"/users", _U, "user-post-users"),
    ("GET", r"/users/[^/]+", _UR, "user-get"),
    ("PATCH", r"/users/[^/]+", _U, "user-update"),
    ("DELETE", r"/users/[^/]+", _U, "user-delete"),
    ("POST", r"/users/[^/]+/assignLicense", ("LicenseAssignment.ReadWrite.All", *_U), "user-assignlicense"),
    ("GET", r"/users/[^/]+/mailboxSettings", ("MailboxSettings.Read", "MailboxSettings.ReadWrite"),
     "user-get-mailboxsettings"),
    ("PATCH", r"/users/[^/]+/mailboxSettings", ("MailboxSettings.ReadWrite",), "user-update-mailboxsettings"),
    ("GET", r"/users/[^/]+/memberOf", _GR, "user-list-memberof"),
    ("POST", r"/users/[^/]+/authentication/temporaryAccessPassMethods", _TAP_W,
     "authentication-post-temporaryaccesspassmethods"),
    ("GET", r"/users/[^/]+/authentication/temporaryAccessPassMethods", _TAP_R,
     "authentication-list-temporaryaccesspassmethods"),
    ("DELETE", r"/users/[^/]+/authentication/temporaryAccessPassMethods/[^/]+", _TAP_W,
     "temporaryaccesspassauthenticationmethod-delete"),
    ("POST", r"/users/[^/]+/sendMail", ("Mail.Send",), "user-sendmail"),
    ("GET", r"/subscribedSkus", ("Organization.Read.All", "Directory.Read.All", "Directory.ReadWrite.All",
                                 "Organization.ReadWrite.All"), "subscribedsku-list"),
    ("GET", r"/groups", _GR, "group-list"),
    ("POST", r"/groups", ("Group.Create", "Group.ReadWrite.All", "Directory.ReadWrite.All"),
     "group-post-groups"),
    ("GET", r"/groups/[^/]+", _GR, "group-get"),
    ("PATCH", r"/groups/[^/]+", _GM, "group-update"),
    ("DELETE", r"/groups/[^/]+", _GW_ALL, "group-delete"),
    ("POST", r"/groups/[^/]+/assignLicense", ("LicenseAssignment.ReadWrite.All", *_GW_ALL),
     "group-assignlicense"),
    ("GET", r"/groups/[^/]+/members", _GR, "group-list-members"),
    ("POST", r"/groups/[^/]+/members/\$ref", _GM, "group-post-members"),
    ("DELETE", r"/groups/[^/]+/members/[^/]+(/\$ref)?", _GM, "group-delete-members"),
    ("GET", r"/directory/deletedItems/.*", _UR, "directory-deleteditems-list"),
    ("POST", r"/directory/deletedItems/[^/]+/restore", _U, "directory-deleteditems-restore"),
    ("DELETE", r"/directory/deletedItems/[^/]+", _U, "directory-deleteditems-delete"),
    ("GET", r"/auditLogs/signIns", ("AuditLog.Read.All", "Directory.Read.All"), "signin-list"),
    ("GET", r"/deviceManagement/managedDevices(/[^/]+)?", _MD, "intune-devices-manageddevice-list"),
    ("POST", r"/deviceManagement/managedDevices/[^/]+/syncDevice",
     ("DeviceManagementManagedDevices.PrivilegedOperations.All",), "intune-devices-manageddevice-syncdevice"),
    ("PUT", r"/deviceManagement/managedDevices/[^/]+/deviceCategory/\$ref",
     ("DeviceManagementManagedDevices.ReadWrite.All",), "intune-devices-manageddevice-update"),
    ("DELETE", r"/deviceManagement/managedDevices/[^/]+/deviceCategory/\$ref",
     ("DeviceManagementManagedDevices.ReadWrite.All",), "intune-devices-manageddevice-update"),
    ("GET", r"/deviceManagement/deviceCategories", _MD, "intune-shared-devicecategory-list"),
    ("GET", r"/deviceManagement/deviceConfigurations(/.*)?", ("DeviceManagementConfiguration.Read.All",
                                                            "DeviceManagementConfiguration.ReadWrite.All"),
     "intune-deviceconfig-deviceconfiguration-list"),
    ("POST", r"/deviceManagement/deviceConfigurations/[^/]+/assign",
     ("DeviceManagementConfiguration.ReadWrite.All",), "intune-deviceconfig-deviceconfiguration-assign"),
    ("GET", r"/devices(/[^/]+)?", ("Device.Read.All", "Device.ReadWrite.All", "Directory.Read.All",
                                   "Directory.ReadWrite.All"), "device-list"),
    ("GET", r"/domains", ("Domain.Read.All", "Domain.ReadWrite.All", "Directory.Read.All",
                          "Directory.ReadWrite.All"), "domain-list"),
    ("GET", r"/servicePrincipals", _APP_R, "serviceprincipal-list"),
    ("GET", r"/servicePrincipals/[^/]+/(appRoleAssignments|memberOf)", _APP_R,
     "serviceprincipal-list-approleassignments"),
    ("GET", r"/applications\(appId='[^']*'\)/extensionProperties", _APP_R,
     "application-list-extensionproperty"),
    ("GET", r"/organization", ("Organization.Read.All", "Directory.Read.All", "Organization.ReadWrite.All",
                               "Directory.ReadWrite.All"), "organization-list"),
    ("GET", r"/identity/conditionalAccess/policies(/[^/]+)?", _CA, "conditionalaccessroot-list-policies"),
    ("GET", r"/identity/conditionalAccess/namedLocations", _CA, "conditionalaccessroot-list-namedlocations"),
    ("POST", r"/identity/conditionalAccess/evaluate", _CA, "conditionalaccessroot-evaluate"),
    ("GET", r"/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/[^/]+",
     ("Policy.Read.AuthenticationMethod", "Policy.ReadWrite.AuthenticationMethod"),
     "temporaryaccesspassauthenticationmethodconfiguration-get"),
)
_COMPILED = [(m, re.compile(f"^{p}/?$", re.IGNORECASE), perms, doc) for m, p, perms, doc in RULES]

# Every application permission named above, and the ones a region grants this tool in the
# sandbox's region (what `provisioner permissions` asks for the example playbooks).
KNOWN = sorted({p for _, _, perms, _ in RULES for p in perms})
GRANTED_BY_DEFAULT = (
    "User.ReadWrite.All", "GroupMember.ReadWrite.All", "Organization.Read.All", "Domain.Read.All",
    "Application.Read.All", "MailboxSettings.ReadWrite", "Mail.Send", "UserAuthMethod-TAP.ReadWrite.All",
    "Policy.Read.AuthenticationMethod", "DeviceManagementManagedDevices.ReadWrite.All",
    "DeviceManagementManagedDevices.PrivilegedOperations.All", "Device.ReadWrite.All", "AuditLog.Read.All",
    "Policy.Read.ConditionalAccess",
)
ROLES_BY_DEFAULT = ("User Administrator",)


def role_id(name: str) -> str:
    """The sandbox's id for an app role (its own: the client matches roles by value)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox:approle:{name}"))


@dataclass(frozen=True, slots=True)
class Denial:
    reason: str
    doc: str


def check(method: str, path: str, body: Any, granted: set[str], roles: set[str],
          is_device: Any) -> Denial | None:
    """None when an app holding ``granted`` permissions and ``roles`` may make this request."""
    for rule_method, pattern, perms, doc in _COMPILED:
        if rule_method == method and pattern.match(path):
            if not granted & set(perms):
                return Denial(f"needs one of {', '.join(perms)}", doc)
            if method == "PATCH" and doc == "user-update" and isinstance(body, dict) \
                    and "passwordProfile" in body and not roles & set(PASSWORD_ROLES):
                return Denial("resetting a password needs the User Administrator role", doc)
            if doc == "group-post-members" and isinstance(body, dict) and is_device(body.get("@odata.id")) \
                    and "Device.ReadWrite.All" not in granted:
                return Denial("adding a device to a group needs Device.ReadWrite.All", doc)
            return None
    return None  # a route without a rule here is not access-controlled by the sandbox
