"""The sandbox tenant's directory: users, groups, licences, mailboxes, soft delete.

Pure state and rules, no HTTP: every operation either returns Graph's JSON or raises
``ApiError`` carrying Graph's status, code and message. ``app.py`` puts HTTP around it.
"""

from __future__ import annotations

import datetime as dt
import heapq
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from . import dynamic
from .store import Doc, Store

GRAPH = "https://graph.microsoft.com/v1.0"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 details: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "innerError": {"date": _now_iso(), "request-id": request_id,
                           "client-request-id": request_id},
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}


def bad_request(message: str, details: list[dict[str, str]] | None = None) -> ApiError:
    return ApiError(400, "Request_BadRequest", message, details)


def not_found(oid: str) -> ApiError:
    return ApiError(404, "Request_ResourceNotFound",
                    f"Resource '{oid}' does not exist or one of its queried reference-property"
                    " objects are not present.")


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


USER_WRITABLE = {
    "accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile",
    "givenName", "surname", "usageLocation", "employeeId", "employeeType", "mobilePhone",
    "businessPhones", "otherMails", "department", "jobTitle", "companyName", "officeLocation",
    "preferredLanguage", "onPremisesExtensionAttributes", "mail", "city", "country",
    "passwordPolicies", "streetAddress", "postalCode", "state", "ageGroup",
}
USER_READONLY = {"id", "createdDateTime", "assignedLicenses", "licenseAssignmentStates",
                 "proxyAddresses", "deletedDateTime", "onPremisesSyncEnabled", "onPremisesImmutableId",
                 "onPremisesSamAccountName", "onPremisesDomainName", "onPremisesLastSyncDateTime"}
# What Entra Connect's default rules sync from on-premises AD: on a user with
# onPremisesSyncEnabled these are mastered on-premises and read-only through Graph
# (learn.microsoft.com/graph/api/resources/onpremisesextensionattributes: "the source of
# authority for this set of properties is the on-premises Active Directory ... and is
# read-only"; the same holds for the identity attributes the sync rules flow). usageLocation,
# licences, memberships of cloud groups and an app's own directory extensions stay writable.
ON_PREMISES_MASTERED = {
    "accountEnabled", "displayName", "givenName", "surname", "userPrincipalName", "mailNickname",
    "mail", "department", "jobTitle", "mobilePhone", "businessPhones", "employeeId", "employeeType",
    "companyName", "officeLocation", "streetAddress", "city", "state", "postalCode", "country",
    "preferredLanguage", "otherMails", "onPremisesExtensionAttributes", "passwordProfile",
}
SYNCED_READ_ONLY = ("Unable to update the specified properties for on-premises mastered Directory"
                    " Sync objects or objects currently undergoing migration.")
DIRECTORY_EXTENSION = re.compile(r"^extension_[0-9a-f]{32}_[A-Za-z0-9_]+$")
USER_REQUIRED = ("accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile")
USER_FILTERABLE = {
    "id", "userPrincipalName", "mail", "mailNickname", "employeeId", "displayName", "givenName",
    "surname", "accountEnabled", "mobilePhone", "otherMails", "department", "jobTitle",
    "usageLocation", *(f"onPremisesExtensionAttributes/extensionAttribute{i}" for i in range(1, 16)),
}
USER_DEFAULT_SELECT = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)
GROUP_FILTERABLE = {"id", "displayName", "mailNickname", "securityEnabled", "mailEnabled"}

_UPN_LOCAL = re.compile(r"^[A-Za-z0-9'.\-_!#^~]+$")
_NICK = re.compile(r"^[\x21-\x7e]+$")
_NICK_BAD = set('@()\\[]";:<>, ')
MAILBOX_SETTINGS_KEYS = {
    "automaticRepliesSetting", "archiveFolder", "timeZone", "language", "workingHours",
    "dateFormat", "timeFormat", "delegateMeetingMessageDeliveryOptions", "userPurpose",
}
# A small, real subset of the Windows and IANA time zone names Exchange accepts.
TIME_ZONES = {
    "W. Europe Standard Time", "Central Europe Standard Time", "GMT Standard Time", "UTC",
    "FLE Standard Time", "Romance Standard Time", "Central European Standard Time",
    "Pacific Standard Time", "Eastern Standard Time", "Europe/Stockholm", "Europe/Oslo",
    "Europe/Helsinki", "Europe/Copenhagen", "Europe/Berlin", "Europe/London", "Etc/UTC",
}
EXCHANGE_PLANS = {"EXCHANGE_S_ENTERPRISE", "EXCHANGE_S_STANDARD", "EXCHANGE_S_FOUNDATION"}


class Tenant:
    """The directory. ``clock`` returns wall seconds; ``time_scale`` shrinks every delay."""

    def __init__(self, store: Store, clock: Any = time.time) -> None:
        self.store = store
        self.clock = clock
        # the SKUs as last seen, and each one's Exchange service plans (see _exchange_plans)
        self._exchange: tuple[list[Doc], dict[str, frozenset[str]]] = ([], {})
        self._visible: tuple[int, list[Doc]] = (-1, [])  # (store version, users): visible_users
        self.reindex()
        # (when, user id): users Entra has yet to evaluate against the dynamic groups. Not
        # kept on disk: a tenant opened again evaluates everyone at once.
        self._dynamic_due: list[tuple[float, str]] = []
        if any(self.is_dynamic(g) for g in self.store.values("groups")):
            self._dynamic_due = [(0.0, uid) for uid in self.users]

    def reindex(self) -> None:
        """Unique-name and seat-count indexes, so that a 50,000-user tenant stays fast."""
        self._unique: dict[str, dict[str, str]] = {"userPrincipalName": {}, "mailNickname": {}}
        self._consumed: dict[str, int] = {}
        for u in self.users.values():
            self._index(u, +1)

    def _index(self, doc: Doc, sign: int) -> None:
        # Only live objects hold their names and seats; a soft-deleted user frees both
        # (restoring it fails with a conflict if its name was taken meanwhile).
        if "deletedDateTime" in doc:
            return
        for prop, index in self._unique.items():
            if doc.get(prop):
                key = str(doc[prop]).lower()
                if sign > 0:
                    index[key] = doc["id"]
                elif index.get(key) == doc["id"]:
                    del index[key]
        for sku_id in {lic["skuId"] for lic in doc.get("assignedLicenses", [])}:  # one seat a SKU
            self._consumed[sku_id] = self._consumed.get(sku_id, 0) + sign

    def _save(self, kind: str, new: Doc, old: Doc | None) -> None:
        if old is not None:
            self._index(old, -1)
        self._index(new, +1)
        self.store.put(kind, new)

    # -- configuration -------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return self.store.config

    def scaled(self, seconds: float) -> float:
        return seconds * float(self.config.get("time_scale", 1.0))

    # -- users ---------------------------------------------------------------------------
    @property
    def users(self) -> dict[str, Doc]:
        return self.store.all("users")

    def find_user(self, key: str) -> Doc:
        doc = self.users.get(key)
        if doc is None:
            oid = self._unique["userPrincipalName"].get(key.lower())
            doc = self.users.get(oid) if oid else None
        if doc is None or not self.replicated(doc):
            raise not_found(key)
        return doc

    def visible_users(self) -> list[Doc]:
        """Every user a request can see, in the order made. Without a replication delay the
        same list serves every page until a user is added, replaced or removed (a page of a
        50,000-user directory made one of 50,000 anew). Not for the caller to change."""
        if float(self.config.get("replication_delay", 0)):
            return [u for u in self.users.values() if self.replicated(u)]
        version = self.store.versions["users"]
        if self._visible[0] != version:
            self._visible = (version, list(self.users.values()))
        return self._visible[1]

    def replicated(self, doc: Doc) -> bool:
        """Whether the replica a request lands on knows the object yet. Entra ID is
        eventually consistent: a user created a moment ago can be unknown (404
        Request_ResourceNotFound) to the next request for a few seconds
        (learn.microsoft.com/graph/best-practices-concept#handling-expected-errors)."""
        made = doc.get("_createdAt")
        delay = float(self.config.get("replication_delay", 0))
        return made is None or not delay or self.clock() >= made + self.scaled(delay)

    def view_user(self, doc: Doc, wanted: Sequence[str] | None = None) -> Doc:
        """The user as Graph shows it: private fields dropped, mail once the mailbox exists.
        ``wanted``: the properties a $select asks for (None: all); only those are worked out."""
        return self.user_view(wanted)(doc)

    def user_view(self, wanted: Sequence[str] | None) -> Callable[[Doc], Doc]:
        """`view_user` for many users asked the same $select (a page): what it asks for is
        looked at once, not once a user."""
        asked = None if wanted is None else frozenset(wanted)
        licences = asked is None or "assignedLicenses" in asked
        states = asked is None or "licenseAssignmentStates" in asked
        mail = asked is None or "mail" in asked or "proxyAddresses" in asked

        hidden = wanted is not None and any(k[0] == "_" or k == "passwordProfile" for k in wanted)

        def view(doc: Doc) -> Doc:
            if wanted is None:
                out = {k: v for k, v in doc.items() if not k.startswith("_") and k != "passwordProfile"}
            elif hidden:  # in the order asked, null where unset or hidden (as `_select` shows it)
                out = {k: None if k[0] == "_" or k == "passwordProfile" else doc.get(k) for k in wanted}
            else:
                get = doc.get
                out = {k: get(k) for k in wanted}
            if licences:  # direct and through a group: one a SKU
                given = doc.get("assignedLicenses") or ()
                if len(given) > 1:
                    given = list({lic["skuId"]: lic for lic in reversed(given)}.values())
                out["assignedLicenses"] = [
                    {"skuId": lic["skuId"], "disabledPlans": lic.get("disabledPlans", [])} for lic in given]
            if states:
                out["licenseAssignmentStates"] = self._licence_states(doc)
            if mail:
                self._view_mail(doc, out)
            return out

        return view

    @staticmethod
    def _licence_states(doc: Doc) -> list[Doc]:
        return [
            {"skuId": lic["skuId"], "disabledPlans": lic.get("disabledPlans", []),
             "assignedByGroup": lic.get("_viaGroup"), "state": "Active", "error": None}
            for lic in doc.get("assignedLicenses", [])] + [
            {"skuId": e["skuId"], "disabledPlans": [], "assignedByGroup": e["group"],
             "state": "Error", "error": e["error"]} for e in doc.get("_licenseErrors", [])]

    def _view_mail(self, doc: Doc, out: Doc) -> None:
        if self.mailbox_ready(doc):
            out["mail"] = doc["mail"] if "mail" in doc else doc["userPrincipalName"]
            out["proxyAddresses"] = [f"SMTP:{out['mail']}"]
        else:
            out["mail"] = doc.get("mail")
            out["proxyAddresses"] = []

    def create_user(self, body: Doc) -> Doc:
        self._check_properties(body, "Microsoft.DirectoryServices.User")
        missing = [p for p in USER_REQUIRED if p not in body or body[p] in (None, "")]
        if missing:
            raise bad_request(f"Property '{missing[0]}' is required when creating the resource.")
        self._check_password(body["passwordProfile"])
        self._check_names(body)
        self._check_unique(body, None)
        doc: Doc = {"id": str(uuid.uuid4()), "createdDateTime": _now_iso(),
                    "assignedLicenses": [], **body, "_createdAt": self.clock()}
        doc["passwordProfile"] = {"forceChangePasswordNextSignIn":
                                  body["passwordProfile"].get("forceChangePasswordNextSignIn", True)}
        if self.config.get("new_accounts_disabled"):
            doc["accountEnabled"] = False  # fault knob: the wrong setting from our story
        doc.setdefault("otherMails", [])
        doc.setdefault("businessPhones", [])
        doc.setdefault("onPremisesExtensionAttributes", {})
        doc["onPremisesExtensionAttributes"] = _ext_attrs(doc["onPremisesExtensionAttributes"])
        self._save("users", doc, None)
        self._evaluate_later(doc["id"])
        return self.view_user(doc)

    def update_user(self, key: str, body: Doc) -> None:
        doc = self.find_user(key)
        self._check_properties(body, "Microsoft.DirectoryServices.User")
        if doc.get("onPremisesSyncEnabled") and set(body) & ON_PREMISES_MASTERED:
            raise bad_request(SYNCED_READ_ONLY)
        if "passwordProfile" in body:
            self._check_password(body["passwordProfile"])
        self._check_names(body)
        self._check_unique(body, doc["id"])
        new = {**doc, **body}
        if "onPremisesExtensionAttributes" in body:
            new["onPremisesExtensionAttributes"] = _ext_attrs(
                {**doc.get("onPremisesExtensionAttributes", {}), **body["onPremisesExtensionAttributes"]}
            )
        if "passwordProfile" in body:
            new["passwordProfile"] = {"forceChangePasswordNextSignIn":
                                      body["passwordProfile"].get("forceChangePasswordNextSignIn", True)}
        self._save("users", new, doc)
        self._evaluate_later(doc["id"])

    def delete_user(self, key: str) -> None:
        doc = self.find_user(key)
        if doc.get("onPremisesSyncEnabled"):
            raise bad_request(SYNCED_READ_ONLY)
        groups = [g for g in self.store.values("groups") if doc["id"] in g["_members"]]
        for g in groups:
            self.store.put("groups", {**g, "_members": [m for m in g["_members"] if m != doc["id"]]})
        deleted = {**doc, "deletedDateTime": _now_iso(), "_memberOf": [g["id"] for g in groups]}
        self.store.remove("users", doc["id"])
        self._save("deletedUsers", deleted, doc)

    def deleted_users(self) -> list[Doc]:
        return [self.view_user(d) for d in self.store.values("deletedUsers")]

    def restore(self, oid: str) -> Doc:
        if oid in self.store.all("deletedGroups"):
            return self.restore_group(oid)
        doc = self.store.all("deletedUsers").get(oid)
        if doc is None:
            raise not_found(oid)
        self._check_unique({"userPrincipalName": doc["userPrincipalName"],
                            "mailNickname": doc["mailNickname"]}, oid)
        restored = {k: v for k, v in doc.items() if k not in {"_memberOf", "deletedDateTime"}}
        self.store.remove("deletedUsers", oid)
        self._save("users", restored, doc)
        self._evaluate_later(doc["id"])
        for gid in doc.get("_memberOf", []):
            g = self.store.all("groups").get(gid)
            if g and oid not in g["_members"]:
                self.store.put("groups", {**g, "_members": [*g["_members"], oid]})
        return self.view_user(restored)

    def purge(self, oid: str) -> None:
        doc = self.store.all("deletedUsers").get(oid)
        if doc is None:
            raise not_found(oid)
        self.store.remove("deletedUsers", oid)

    def _check_properties(self, body: Doc, type_name: str) -> None:
        # Clients (msgraph-sdk among them) send "@odata.type"; Graph accepts it.
        if body.pop("@odata.type", "#microsoft.graph.user") != "#microsoft.graph.user":
            raise bad_request("Invalid @odata.type for a user.")
        extensions = self.extension_names()
        for key in body:
            if key in USER_READONLY:
                raise bad_request(f"Property '{key}' is read-only and cannot be set.")
            if key not in USER_WRITABLE and key not in extensions:
                raise bad_request(f"Property '{key}' does not exist on type '{type_name}'.")
            if key in extensions and not isinstance(body[key], str | None):
                raise bad_request(f"Invalid value specified for property '{key}' of resource 'User'.")

    # -- what the tenant has bought -----------------------------------------------------------
    PREMIUM_PLANS = ("AAD_PREMIUM", "AAD_PREMIUM_P2")

    def has_premium(self) -> bool:
        """Microsoft Entra ID P1 or P2 in some subscription with seats."""
        return any(sku["prepaidUnits"]["enabled"] > 0
                   and {p["servicePlanName"] for p in sku["servicePlans"]} & set(self.PREMIUM_PLANS)
                   for sku in self.store.values("skus"))

    def require_premium(self) -> None:
        """Sign-in logs need Microsoft Entra ID P1 or P2 in the tenant (signin-list: "...
        requires a Microsoft Entra ID P1 or P2 license"); without one Graph answers 403."""
        if self.has_premium():
            return None
        raise ApiError(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                       "Neither tenant is B2C or tenant doesn't have premium license")

    # -- authentication methods policy -------------------------------------------------------
    def access_pass_policy(self) -> Doc:
        """The Temporary Access Pass method configuration (a default tenant's values unless
        the region changed them)."""
        stored = self.store.all("authenticationMethodConfigurations").get("TemporaryAccessPass")
        return {**default_access_pass_policy(), **(stored or {})}

    def method_configuration(self, method: str) -> Doc:
        """An authentication method's configuration (authenticationmethodconfiguration-get)."""
        if method == "TemporaryAccessPass":
            return self.access_pass_policy()
        defaults = default_method_configurations()
        if method not in defaults:
            raise not_found(method)
        stored = self.store.all("authenticationMethodConfigurations").get(method)
        return {**defaults[method], **(stored or {})}

    def targeted(self, user: Doc, policy: Doc) -> bool:
        targets = {t["id"] for t in policy.get("includeTargets", [])}
        excluded = {t["id"] for t in policy.get("excludeTargets", [])}
        groups = {g["id"] for g in self.store.values("groups") if user["id"] in g["_members"]}
        return ("all_users" in targets or bool(targets & groups)) and not excluded & groups

    # -- directory extensions (learn.microsoft.com/graph/extensibility-overview) ------------
    def extension_names(self) -> set[str]:
        """Directory extension properties registered on users: extension_{appId}_{name}."""
        return {e["name"] for e in self.store.values("extensionProperties")
                if "User" in e.get("targetObjects", [])}

    def extension_properties(self, app_id: str) -> list[Doc]:
        if not any(sp.get("appId") == app_id for sp in self.store.values("servicePrincipals")):
            raise not_found(app_id)
        return [{k: v for k, v in e.items() if not k.startswith("_")}
                for e in self.store.values("extensionProperties") if e["_appId"] == app_id]

    def _check_password(self, profile: Any) -> None:
        password = profile.get("password") if isinstance(profile, dict) else None
        if not password:
            raise bad_request("Property 'passwordProfile.password' is required.")
        classes = sum(bool(re.search(p, password)) for p in ("[a-z]", "[A-Z]", "[0-9]", "[^A-Za-z0-9]"))
        if len(password) < 8 or len(password) > 256 or classes < 3:
            raise bad_request(
                "The specified password does not comply with password complexity requirements."
                " Please provide a different password.",
                [{"target": "passwordProfile.password", "code": "PasswordComplexity"}],
            )

    def _check_names(self, body: Doc) -> None:
        upn = body.get("userPrincipalName")
        if upn is not None:
            local, _, domain = str(upn).partition("@")
            if not local or not domain or not _UPN_LOCAL.match(local) or len(local) > 64 \
                    or local.startswith(".") or local.endswith(".") or ".." in local:
                raise bad_request("Invalid value specified for property 'userPrincipalName' of"
                                  " resource 'User'.")
            verified = {d["id"].lower() for d in self.store.values("domains")}
            if domain.lower() not in verified:
                raise bad_request(
                    "The domain portion of the userPrincipalName property is invalid. You must"
                    " use one of the verified domain names in your organization.",
                    [{"target": "userPrincipalName", "code": "InvalidValue"}],
                )
        nick = body.get("mailNickname")
        if nick is not None:
            nick = str(nick)
            if (not nick or len(nick) > 64 or not _NICK.match(nick) or set(nick) & _NICK_BAD
                    or nick.startswith(".") or nick.endswith(".")):
                raise bad_request("Invalid value specified for property 'mailNickname' of"
                                  " resource 'User'.")
        if "usageLocation" in body and body["usageLocation"] is not None \
                and not re.fullmatch(r"[A-Z]{2}", str(body["usageLocation"])):
            raise bad_request("Invalid value specified for property 'usageLocation' of resource 'User'.")

    def _check_unique(self, body: Doc, own_id: str | None) -> None:
        for prop, index in self._unique.items():
            value = body.get(prop)
            if value is None:
                continue
            holder = index.get(str(value).lower())
            if holder is not None and holder != own_id:
                raise bad_request(
                    f"Another object with the same value for property {prop} already exists.",
                    [{"target": prop, "code": "ObjectConflict"}],
                )

    # -- licences and mailboxes --------------------------------------------------------------
    def skus(self) -> list[Doc]:
        return [{**sku, "consumedUnits": self._consumed.get(sku["skuId"], 0)}
                for sku in self.store.values("skus")]

    def assign_license(self, key: str, body: Doc) -> Doc:
        doc = self.find_user(key)

        def may_add(add: Doc, sku: Doc, current: dict[str, Doc]) -> None:
            if not doc.get("usageLocation"):
                raise bad_request("License assignment cannot be done for user with invalid usage"
                                  " location.")
            # Fault: after this many assignments another admin takes every seat left.
            taken = int(self.config.get("seats_taken_after") or 0)
            full = sku["consumedUnits"] >= sku["prepaidUnits"]["enabled"] or (
                bool(taken) and self.store.counters["licence assignments"] >= taken)
            if add["skuId"] not in current and full:
                raise bad_request(f"Subscription {sku['skuPartNumber']} does not have any licenses"
                                  " available.")

        current = self._licences(doc.get("assignedLicenses", []), body, "User", may_add)
        new = {**doc, "assignedLicenses": list(current.values())}
        self.store.count("licence assignments", len(body["addLicenses"] or []))
        if self._has_exchange(new) and not doc.get("_mailboxRequestedAt"):
            new["_mailboxRequestedAt"] = self.clock()
        self._save("users", new, doc)
        return self.view_user(new)

    def _licences(self, held: list[Doc], body: Doc, holder: str,
                  may_add: Any = None) -> dict[str, Doc]:
        """assignLicense's body (user-assignlicense, group-assignlicense) applied to what a user
        or group holds: skuId → the assignedLicense it will hold."""
        if set(body) != {"addLicenses", "removeLicenses"}:
            raise bad_request("Invalid request body: addLicenses and removeLicenses are required.")
        skus = {s["skuId"]: s for s in self.skus()}
        current = {lic["skuId"]: lic for lic in held}
        for add in body["addLicenses"] or []:
            sku = skus.get(add.get("skuId"))
            if sku is None:
                raise bad_request(f"License {add.get('skuId')} does not correspond to a valid"
                                  " company License.")
            if may_add is not None:
                may_add(add, sku, current)
            plan_ids = {p["servicePlanId"] for p in sku["servicePlans"]}
            for plan in add.get("disabledPlans") or []:
                if plan not in plan_ids:
                    raise bad_request(f"Service plan {plan} is not part of license {add['skuId']}.")
            current[add["skuId"]] = {"skuId": add["skuId"],
                                     "disabledPlans": list(add.get("disabledPlans") or [])}
        for sku_id in body["removeLicenses"] or []:
            if sku_id not in current:
                raise bad_request(f"{holder} does not have a corresponding license {sku_id}.")
            current.pop(sku_id)
        return current

    def _exchange_plans(self) -> dict[str, frozenset[str]]:
        """Each SKU's Exchange service plan ids, worked out again only when a SKU changes (a
        page of users asks once per user)."""
        skus = list(self.store.values("skus"))
        seen, plans = self._exchange
        if len(seen) != len(skus) or any(a is not b for a, b in zip(seen, skus, strict=True)):
            plans = {s["skuId"]: frozenset(p["servicePlanId"] for p in s["servicePlans"]
                                           if p["servicePlanName"] in EXCHANGE_PLANS) for s in skus}
            self._exchange = (skus, plans)
        return plans

    def _has_exchange(self, doc: Doc) -> bool:
        plans = self._exchange_plans()
        return any(plans.get(lic["skuId"], frozenset()).difference(lic.get("disabledPlans", []))
                   for lic in doc.get("assignedLicenses", []))

    def mailbox_ready(self, doc: Doc) -> bool:
        requested = doc.get("_mailboxRequestedAt")
        if requested is None or not self._has_exchange(doc):
            return False
        return self.clock() >= requested + self.scaled(float(self.config.get("mailbox_delay", 0)))

    def _mailbox(self, key: str) -> Doc:
        doc = self.find_user(key)
        if not self.mailbox_ready(doc):
            raise ApiError(404, "MailboxNotEnabledForRESTAPI",
                           "REST API is not yet supported for this mailbox.")
        return doc

    def get_mailbox_settings(self, key: str) -> Doc:
        doc = self._mailbox(key)
        return {**default_mailbox_settings(), **doc.get("_mailboxSettings", {})}

    def update_mailbox_settings(self, key: str, body: Doc) -> Doc:
        doc = self._mailbox(key)
        for k in body:
            if k not in MAILBOX_SETTINGS_KEYS and not k.startswith("@odata"):
                raise ApiError(400, "RequestBodyRead",
                               f"The property '{k}' does not exist on type"
                               " 'Microsoft.OutlookServices.MailboxSettings'. Make sure to only use"
                               " property names that are defined by the type or mark the type as"
                               " open type.")
        if "timeZone" in body and body["timeZone"] not in TIME_ZONES:
            raise ApiError(400, "InvalidTimeZone",
                           f"The specified time zone '{body['timeZone']}' is not valid.")
        locale = (body.get("language") or {}).get("locale") if "language" in body else None
        if "language" in body and not (isinstance(locale, str)
                                       and re.fullmatch(r"[a-z]{2}-[A-Z]{2}", locale)):
            raise ApiError(400, "ErrorInvalidArgument", "The language locale is not valid.")
        settings = {**doc.get("_mailboxSettings", {}), **{k: v for k, v in body.items()
                                                           if not k.startswith("@odata")}}
        self.store.put("users", {**doc, "_mailboxSettings": settings})
        return {**default_mailbox_settings(), **settings}

    # -- groups ----------------------------------------------------------------------------
    def find_group(self, gid: str) -> Doc:
        group = self.store.all("groups").get(gid)
        if group is None:
            raise not_found(gid)
        return group

    @staticmethod
    def view_group(doc: Doc) -> Doc:
        return {k: v for k, v in doc.items() if not k.startswith("_")}

    def create_group(self, body: Doc) -> Doc:
        """POST /groups (group-post-groups): a security group (mailEnabled false,
        securityEnabled true) or a Microsoft 365 group (groupTypes ["Unified"]); Graph cannot
        make mail-enabled security groups or distribution lists."""
        body = {k: v for k, v in body.items() if k != "@odata.type"}
        allowed = {"displayName", "description", "mailEnabled", "mailNickname", "securityEnabled",
                   "groupTypes", "visibility", "members@odata.bind", "owners@odata.bind",
                   "isAssignableToRole", "membershipRule", "membershipRuleProcessingState"}
        for key in body:
            if key not in allowed:
                raise bad_request(f"Property '{key}' does not exist on type"
                                  " 'Microsoft.DirectoryServices.Group'.")
        for key in ("displayName", "mailEnabled", "mailNickname", "securityEnabled"):
            if body.get(key) in (None, ""):
                raise bad_request(f"Property '{key}' is required when creating the resource.")
        unified = "Unified" in (body.get("groupTypes") or [])
        if body["mailEnabled"] and not unified:
            raise bad_request("Cannot create a mail-enabled security groups and or distribution list.")
        nick = str(body["mailNickname"])
        if len(nick) > 64 or not _NICK.match(nick) or set(nick) & _NICK_BAD:
            raise bad_request("Invalid value specified for property 'mailNickname' of resource 'Group'.")
        is_dynamic = "DynamicMembership" in (body.get("groupTypes") or [])
        if is_dynamic:
            self._check_dynamic(body)
        elif body.get("membershipRule"):
            raise bad_request("Property 'membershipRule' is only valid on a group of type DynamicMembership.")
        members = [str(r).rstrip("/").rsplit("/", 1)[-1] for r in body.pop("members@odata.bind", [])]
        body.pop("owners@odata.bind", None)
        for oid in members:
            if not self._known_member(oid):
                raise not_found(oid)
        domain = next((d["id"] for d in self.store.values("domains") if d.get("isDefault")), "")
        doc: Doc = {"id": str(uuid.uuid4()), "createdDateTime": _now_iso(), "description": None,
                    "groupTypes": [], "assignedLicenses": [], "visibility": "Private" if unified else None,
                    "mail": f"{nick}@{domain}" if unified else None, "proxyAddresses": [],
                    "renewedDateTime": _now_iso(),
                    "securityIdentifier": f"S-1-12-1-{uuid.uuid4().int % 10**9}",
                    **body, "_members": members}
        self.store.put("groups", doc)
        if is_dynamic:  # every user is evaluated against the new rule, after the processing delay
            for uid in self.users:
                self._evaluate_later(uid)
        return self.view_group(doc)

    # -- dynamic membership ----------------------------------------------------------------
    def _check_dynamic(self, body: Doc) -> None:
        """A dynamic group needs Entra ID P1 (groups-create-rule), a rule (membershipRule and
        its processing state on POST /groups: group-post-groups), and a rule that parses."""
        if not self.has_premium():
            raise bad_request("Creating a dynamic membership group requires a Microsoft Entra ID P1"
                              " license in the tenant.")
        if body.get("members@odata.bind"):
            raise bad_request("Members of a group with dynamic membership cannot be added by hand.")
        rule = body.get("membershipRule")
        if not isinstance(rule, str) or not rule.strip():
            raise bad_request("Property 'membershipRule' is required for a group of type DynamicMembership.")
        try:
            dynamic.parse(rule)
        except ValueError as exc:
            raise bad_request(f"Invalid membership rule: the expression '{exc}' is not valid.") from None
        body.setdefault("membershipRuleProcessingState", "On")

    @staticmethod
    def is_dynamic(group: Doc) -> bool:
        return "DynamicMembership" in (group.get("groupTypes") or [])

    def _evaluate_later(self, uid: str) -> None:
        """Entra evaluates a changed user against every dynamic group on its own time: the
        config's ``dynamic_delay`` seconds (scaled) later."""
        due = self.clock() + self.scaled(float(self.config.get("dynamic_delay", 0)))
        heapq.heappush(self._dynamic_due, (due, uid))

    def process_dynamic(self) -> None:
        """Apply the membership changes whose processing time has come."""
        now = self.clock()
        if not self._dynamic_due or self._dynamic_due[0][0] > now:
            return
        groups = [g for g in self.store.values("groups") if self.is_dynamic(g)
                  and g.get("membershipRuleProcessingState", "On") == "On"]
        rules = {g["id"]: dynamic.parse(g["membershipRule"]) for g in groups}
        while self._dynamic_due and self._dynamic_due[0][0] <= now:
            _, uid = heapq.heappop(self._dynamic_due)
            user = self.users.get(uid)
            for g in groups:
                group = self.store.all("groups")[g["id"]]
                inside = uid in group["_members"]
                wanted = user is not None and "deletedDateTime" not in user and \
                    dynamic.selects(rules[g["id"]], user)
                if wanted and not inside:
                    self.store.put("groups", {**group, "_members": [*group["_members"], uid]})
                    self._group_licences(group, uid, +1)
                elif inside and not wanted:
                    rest = [m for m in group["_members"] if m != uid]
                    self.store.put("groups", {**group, "_members": rest})
                    self._group_licences(group, uid, -1)

    def delete_group(self, gid: str) -> None:
        """DELETE /groups/{id} (group-delete): a Microsoft 365 group goes to deleted items for
        30 days and can be restored; a security group is deleted for good."""
        group = self.find_group(gid)
        self.store.remove("groups", gid)
        for oid in group["_members"]:
            self._group_licences(group, oid, -1)
        if "Unified" in (group.get("groupTypes") or []):
            self.store.put("deletedGroups", {**group, "deletedDateTime": _now_iso()})

    def assign_group_license(self, gid: str, body: Doc) -> Doc:
        """POST /groups/{id}/assignLicense (group-assignlicense): the group's licences change,
        and Entra gives (or takes) them to every member on its own; 202 with the group."""
        group = self.find_group(gid)
        current = self._licences(group.get("assignedLicenses") or [], body, "Group")
        new = {**group, "assignedLicenses": list(current.values())}
        self.store.put("groups", new)
        for oid in group["_members"]:
            self._group_licences(new, oid, +1)
        return self.view_group(new)

    def deleted_groups(self) -> list[Doc]:
        return [self.view_group(d) for d in self.store.values("deletedGroups")]

    def restore_group(self, gid: str) -> Doc:
        doc = self.store.all("deletedGroups")[gid]
        restored = {k: v for k, v in doc.items() if k != "deletedDateTime"}
        self.store.remove("deletedGroups", gid)
        self.store.put("groups", restored)
        return self.view_group(restored)

    def members(self, gid: str) -> list[Doc]:
        group = self.find_group(gid)
        users, devices = self.users, self.store.all("devices")
        out = []
        for m in group["_members"]:
            if m in users:
                out.append({"@odata.type": "#microsoft.graph.user", **self.view_user(users[m])})
            elif m in devices:
                out.append({"@odata.type": "#microsoft.graph.device", **devices[m]})
        return out

    def add_member(self, gid: str, body: Doc) -> None:
        group = self.find_group(gid)
        self._by_hand(group)
        ref = body.get("@odata.id") if isinstance(body, dict) else None
        if not isinstance(ref, str) or set(body) != {"@odata.id"}:
            raise bad_request("Invalid request body: '@odata.id' is required.")
        oid = ref.rstrip("/").rsplit("/", 1)[-1]
        if not self._known_member(oid):
            raise not_found(oid)
        if oid in group["_members"]:
            raise bad_request("One or more added object references already exist for the"
                              " following modified properties: 'members'.")
        self.store.put("groups", {**group, "_members": [*group["_members"], oid]})
        self._group_licences(group, oid, +1)

    def bind_members(self, gid: str, body: Doc) -> None:
        """PATCH /groups/{id} with members@odata.bind: up to 20 in one write; if any of them
        fails, none is added."""
        group = self.find_group(gid)
        if "members@odata.bind" in body:
            self._by_hand(group)
        if body.get("@odata.type", "#microsoft.graph.group") != "#microsoft.graph.group":
            raise bad_request("Invalid @odata.type for a group.")
        body = {k: v for k, v in body.items() if k != "@odata.type"}
        if set(body) != {"members@odata.bind"} or not isinstance(body["members@odata.bind"], list):
            raise bad_request("Only 'members@odata.bind' can be changed here.")
        refs = body["members@odata.bind"]
        if len(refs) > 20:
            raise bad_request("Too many members to add in one request: at most 20.")
        oids = [str(r).rstrip("/").rsplit("/", 1)[-1] for r in refs]
        for oid in oids:
            if not self._known_member(oid):
                raise not_found(oid)
            if oid in group["_members"] or oids.count(oid) > 1:
                raise bad_request("One or more added object references already exist for the"
                                  " following modified properties: 'members'.")
        self.store.put("groups", {**group, "_members": [*group["_members"], *oids]})
        for oid in oids:
            self._group_licences(group, oid, +1)

    def _by_hand(self, group: Doc) -> None:
        """Entra alone changes a dynamic group's members (groups-dynamic-membership: "you can't
        manually add or remove members")."""
        if self.is_dynamic(group):
            raise bad_request("Insufficient privileges to complete the operation: the group has"
                              " dynamic membership; its members cannot be changed by hand.")

    def _known_member(self, oid: str) -> bool:
        user = self.users.get(oid)
        return self.replicated(user) if user is not None else oid in self.store.all("devices")

    def _group_licences(self, group: Doc, oid: str, sign: int) -> None:
        """Group-based licensing: a member of a licensed group gets its licences, and a
        mailbox follows as for a direct Exchange licence."""
        user = self.users.get(oid)
        if user is None or not group.get("assignedLicenses"):
            return
        current = [lic for lic in user.get("assignedLicenses", [])
                   if lic.get("_viaGroup") != group["id"]]
        errors = [e for e in user.get("_licenseErrors", []) if e["group"] != group["id"]]
        if sign > 0:
            # Entra processes group licences on its own: with no seat left the membership
            # stands, and the user shows the error in licenseAssignmentStates.
            held, skus = {lic["skuId"] for lic in current}, {s["skuId"]: s for s in self.skus()}
            for lic in group["assignedLicenses"]:
                sku = skus.get(lic["skuId"])
                full = sku is not None and sku["consumedUnits"] >= sku["prepaidUnits"]["enabled"]
                if full and lic["skuId"] not in held:
                    errors.append({"skuId": lic["skuId"], "group": group["id"], "error": "CountViolation"})
                else:
                    current.append({**lic, "_viaGroup": group["id"]})
        new = {**user, "assignedLicenses": current, "_licenseErrors": errors}
        if sign > 0 and self._has_exchange(new) and not user.get("_mailboxRequestedAt"):
            new["_mailboxRequestedAt"] = self.clock()
        self._save("users", new, user)

    def remove_member(self, gid: str, oid: str) -> None:
        group = self.find_group(gid)
        self._by_hand(group)
        if oid not in group["_members"]:
            raise not_found(oid)
        self.store.put("groups", {**group, "_members": [m for m in group["_members"] if m != oid]})
        self._group_licences(group, oid, -1)

    def member_of(self, key: str) -> list[Doc]:
        uid = self.find_user(key)["id"]
        return [{"@odata.type": "#microsoft.graph.group", **self.view_group(g)}
                for g in self.store.values("groups") if uid in g["_members"]]


class AuthMethods:
    """Temporary Access Passes: one per user (a new one replaces the old); the pass itself is
    returned once, at creation, and never stored."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant

    def create(self, key: str, body: Doc) -> Doc:
        """POST .../temporaryAccessPassMethods, bounded by the tenant's policy
        (authentication-post-temporaryaccesspassmethods; temporaryAccessPassAuthenticationMethod-
        Configuration: state, includeTargets, minimum/maximum/default lifetime, isUsableOnce)."""
        import secrets

        user = self.tenant.find_user(key)
        unknown = set(body) - {"lifetimeInMinutes", "isUsableOnce", "startDateTime", "@odata.type"}
        if unknown:
            raise bad_request(f"Property '{sorted(unknown)[0]}' does not exist on type"
                              " 'microsoft.graph.temporaryAccessPassAuthenticationMethod'.")
        policy = self.tenant.access_pass_policy()
        if policy["state"] != "enabled" or not self.tenant.targeted(user, policy):
            raise ApiError(400, "badRequest", "Temporary Access Pass authentication method is not"
                           " enabled for the user by the authentication methods policy.")
        lifetime = body.get("lifetimeInMinutes", policy["defaultLifetimeInMinutes"])
        low, high = policy["minimumLifetimeInMinutes"], policy["maximumLifetimeInMinutes"]
        if not isinstance(lifetime, int) or not low <= lifetime <= high:
            raise ApiError(400, "badRequest", f"The lifetime of the Temporary Access Pass ({lifetime}"
                           f" minutes) is outside the range the policy allows ({low} to {high} minutes).")
        once = bool(body.get("isUsableOnce", policy["isUsableOnce"]))
        if policy["isUsableOnce"] and not once:
            raise ApiError(400, "badRequest", "The authentication methods policy allows one-time"
                           " Temporary Access Passes only.")
        start = body.get("startDateTime") or _now_iso()
        try:
            starts = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        except ValueError:
            raise bad_request("Invalid value specified for property 'startDateTime'.") from None
        if starts.tzinfo is None:
            raise bad_request("Invalid value specified for property 'startDateTime'.")
        usable = starts <= dt.datetime.now(dt.UTC)
        method = {"id": str(uuid.uuid4()), "createdDateTime": _now_iso(),
                  "startDateTime": starts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "lifetimeInMinutes": lifetime, "isUsableOnce": once,
                  "isUsable": usable, "methodUsabilityReason": "EnabledByPolicy" if usable
                  else "NotYetValid"}
        self.tenant.store.put("users", {**user, "_tap": method})
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%&*+-=?@"
        return {**method, "temporaryAccessPass": "".join(secrets.choice(alphabet) for _ in range(16))}

    def list(self, key: str) -> list[Doc]:
        user = self.tenant.find_user(key)
        return [user["_tap"]] if user.get("_tap") else []

    def delete(self, key: str, method_id: str) -> None:
        user = self.tenant.find_user(key)
        if (user.get("_tap") or {}).get("id") != method_id:
            raise not_found(method_id)
        self.tenant.store.put("users", {k: v for k, v in user.items() if k != "_tap"})


def send_mail(tenant: Tenant, sender: str, body: Doc) -> None:
    """Accept a message from a mailbox. Only its envelope is kept: the sandbox's state must not
    hold what a guide says (it may carry a Temporary Access Pass)."""
    import hashlib

    user = tenant.find_user(sender)
    if not tenant.mailbox_ready(user):
        raise ApiError(404, "MailboxNotEnabledForRESTAPI",
                       "REST API is not yet supported for this mailbox.")
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict) or not message.get("toRecipients"):
        raise bad_request("Invalid request body: message.toRecipients is required.")
    to = [r["emailAddress"]["address"] for r in message["toRecipients"]]
    content = str((message.get("body") or {}).get("content", ""))
    tenant.store.put("sentMail", {"id": str(uuid.uuid4()), "from": user["userPrincipalName"],
                                  "to": to, "subject": message.get("subject"), "sent": _now_iso(),
                                  "bodySha256": hashlib.sha256(content.encode()).hexdigest(),
                                  "bodyBytes": len(content.encode())})


def default_access_pass_policy() -> Doc:
    """As a tenant has it out of the box (temporaryaccesspassauthenticationmethodconfiguration:
    minimum 60 and maximum 480 minutes, default 60, not one-time only), enabled for all users."""
    return {"@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration",
            "id": "TemporaryAccessPass", "state": "enabled", "defaultLifetimeInMinutes": 60,
            "defaultLength": 8, "minimumLifetimeInMinutes": 60, "maximumLifetimeInMinutes": 480,
            "isUsableOnce": False, "excludeTargets": [],
            "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": False}]}


def default_method_configurations() -> dict[str, Doc]:
    """The other methods a person can register after a pass, as a tenant migrated to the
    authentication methods policy has them: Microsoft Authenticator enabled for all users in
    any mode (push and passwordless phone sign-in;
    microsoftauthenticatorauthenticationmethodconfiguration); FIDO2 security keys
    (fido2authenticationmethodconfiguration), software OATH tokens, SMS and voice off, as a
    region that standardised on Authenticator has them."""
    return {
        "MicrosoftAuthenticator": {
            "@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethodConfiguration",
            "id": "MicrosoftAuthenticator", "state": "enabled", "isSoftwareOathEnabled": False,
            "excludeTargets": [],
            "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": False,
                                "authenticationMode": "any"}]},
        **{method: {"@odata.type": f"#microsoft.graph.{odata}AuthenticationMethodConfiguration",
                    "id": method, "state": "disabled", "excludeTargets": [],
                    "includeTargets": [{"targetType": "group", "id": "all_users",
                                        "isRegistrationRequired": False}]}
           for method, odata in (("SoftwareOath", "softwareOath"), ("Sms", "sms"), ("Voice", "voice"))},
        "Fido2": {
            "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
            "id": "Fido2", "state": "disabled", "isSelfServiceRegistrationAllowed": True,
            "isAttestationEnforced": False, "excludeTargets": [],
            "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": False}]},
    }


def default_mailbox_settings() -> Doc:
    return {
        "@odata.context": f"{GRAPH}/$metadata#users('id')/mailboxSettings",
        "archiveFolder": None,
        "timeZone": "UTC",
        "language": {"locale": "en-US", "displayName": "English (United States)"},
        "dateFormat": "M/d/yyyy",
        "timeFormat": "h:mm tt",
        "userPurpose": "user",
        "automaticRepliesSetting": {"status": "disabled", "externalAudience": "all",
                                    "internalReplyMessage": "", "externalReplyMessage": ""},
        "workingHours": {"daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                         "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
                         "timeZone": {"name": "UTC"}},
    }


def _ext_attrs(values: Doc) -> Doc:
    out: Doc = {f"extensionAttribute{i}": None for i in range(1, 16)}
    for k, v in values.items():
        if k not in out:
            raise bad_request(f"Property '{k}' does not exist on type"
                              " 'Microsoft.DirectoryServices.OnPremisesExtensionAttributes'.")
        out[k] = v
    return out
