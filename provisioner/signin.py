"""Will they be able to sign in? Conditional Access, predicted per person and way of signing in.

The story's failure: every official's first sign-in was blocked by one setting. Here each
person's ways of signing in (the first sign-in in a browser on their device, then mail in the
client the guide names) are held against the tenant's policies: What If
(``POST /identity/conditionalAccess/evaluate``) for an account that exists, and for one not
made yet the policies' own conditions (users, groups, applications, client app types,
platforms, locations) with the groups the playbook will put them in. A policy that applies and
whose grant an official cannot meet (block; a compliant or domain-joined device they do not
have; an approved app they will not use) blocks them; report-only policies are reported, not
counted. MFA is met: a Temporary Access Pass is strong authentication, and without one a
person registers a method when asked.
Docs: learn.microsoft.com/graph/api/resources/conditionalaccesspolicy,
graph/api/conditionalaccessroot-evaluate, graph/api/resources/whatifanalysisresult.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .model import Json
from .roster import Person
from .steps.guide import device_family

EXCHANGE_ONLINE = "00000002-0000-0ff1-ce00-000000000000"
OFFICE_365 = {EXCHANGE_ONLINE, "00000003-0000-0ff1-ce00-000000000000", "cc15fd57-2c6c-4117-a88c-83b1d56b4bbe"}
COUNTRY = "SE"  # officials sign in from home, in Sweden
REPORT_ONLY = "enabledForReportingButNotEnforced"
# What a grant control needs, in words, for an error message.
NEEDS = {"block": "blocks the sign-in", "compliantDevice": "needs a compliant (Intune-enrolled) device",
         "domainJoinedDevice": "needs a hybrid-joined device", "approvedApplication": "needs an approved"
         " client app (Outlook for iOS or Android)", "compliantApplication": "needs an app protection policy"}


class Verdict(StrEnum):
    OK = "ok"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class Way:
    """One way a person signs in: what the guide tells them to use, on their device."""

    name: str              # "Outlook för iOS"
    client_app_type: str   # What If's clientAppType
    platform: str          # What If's devicePlatform
    device: str = ""       # the roster's device model, or "dator"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.device})" if self.device else self.name


def ways(person: Person) -> list[Way]:
    """The first sign-in (a browser, for the pass and a method) and mail as the guide says:
    Outlook for iOS or Android on a phone or tablet, Outlook on the web on a computer."""
    family = device_family(person.device_model) if person.device_model else "web"
    device = person.device_model or "dator"
    if family in ("ios", "android"):
        platform = "iOS" if family == "ios" else "android"
        return [Way("första inloggningen i webbläsaren", "browser", platform, device),
                Way(f"Outlook för {'iOS' if family == 'ios' else 'Android'}", "mobileAppsAndDesktopClients",
                    platform, device)]
    return [Way("Outlook på webben", "browser", "windows", device)]


@dataclass(frozen=True, slots=True)
class Hit:
    """A policy that applies to a way of signing in, and whether it would let them through."""

    policy: str
    policy_id: str
    controls: tuple[str, ...]
    blocks: bool
    report_only: bool


@dataclass(frozen=True, slots=True)
class WayVerdict:
    way: Way
    hits: tuple[Hit, ...]

    @property
    def blocked_by(self) -> list[Hit]:
        return [h for h in self.hits if h.blocks and not h.report_only]

    @property
    def verdict(self) -> Verdict:
        return Verdict.BLOCKED if self.blocked_by else Verdict.OK


@dataclass(frozen=True, slots=True)
class Prediction:
    person_id: str
    upn: str
    by: str  # "what-if" (asked Graph for an existing account) or "policies" (not made yet)
    ways: tuple[WayVerdict, ...] = field(default_factory=tuple)

    @property
    def web_mail(self) -> bool:
        """Outlook's app would be stopped but the browser is let in: the guide names Outlook on
        the web (in the device's browser) instead."""
        return len(self.ways) > 1 and self.ways[0].verdict is Verdict.OK and \
            any(w.verdict is Verdict.BLOCKED for w in self.ways[1:])

    @property
    def effective(self) -> tuple[WayVerdict, ...]:
        """The ways the guide will tell them to use."""
        return self.ways[:1] if self.web_mail else self.ways

    @property
    def verdict(self) -> Verdict:
        return Verdict.BLOCKED if any(w.verdict is Verdict.BLOCKED for w in self.effective) else Verdict.OK

    def to_json(self) -> Json:
        return {"person_id": self.person_id, "upn": self.upn, "by": self.by, "verdict": self.verdict,
                "mail_client": "web" if self.web_mail else "app" if len(self.ways) > 1 else "web",
                "ways": [{"way": w.way.label, "client_app_type": w.way.client_app_type,
                          "platform": w.way.platform, "verdict": w.verdict,
                          "policies": [{"name": h.policy, "controls": list(h.controls), "blocks": h.blocks,
                                        "report_only": h.report_only} for h in w.hits]}
                         for w in self.ways]}


# -- a policy's conditions, for an account not made yet -----------------------------------------

def applies(policy: Json, way: Way, groups: set[str], locations: Sequence[Json]) -> bool:
    """Whether the policy applies to this way of signing in for an account not made yet (so
    named by no policy's user lists), in ``groups``."""
    if policy.get("state") == "disabled":
        return False
    cond = policy.get("conditions") or {}
    users = cond.get("users") or {}
    included = ("All" in (users.get("includeUsers") or [])
                or bool(groups & set(users.get("includeGroups") or [])))
    if not included or groups & set(users.get("excludeGroups") or []):
        return False
    apps = cond.get("applications") or {}
    if not _names_app(apps.get("includeApplications") or [], EXCHANGE_ONLINE) \
            or _names_app(apps.get("excludeApplications") or [], EXCHANGE_ONLINE):
        return False
    types = cond.get("clientAppTypes") or ["all"]
    if "all" not in types and way.client_app_type not in types:
        return False
    platforms = cond.get("platforms")
    if platforms:
        inc, exc = platforms.get("includePlatforms") or [], platforms.get("excludePlatforms") or []
        if not ("all" in inc or way.platform in inc) or way.platform in exc:
            return False
    where = cond.get("locations")
    if where:
        inc, exc = where.get("includeLocations") or [], where.get("excludeLocations") or []
        if not _at(inc, locations) or _at(exc, locations):
            return False
    return True


def _names_app(listed: Iterable[str], app_id: str) -> bool:
    listed = set(listed)
    return "All" in listed or app_id in listed or ("Office365" in listed and app_id in OFFICE_365)


def _at(listed: Sequence[str], locations: Sequence[Json], country: str = COUNTRY) -> bool:
    if "All" in listed:
        return True
    return any((loc.get("id") in listed or ("AllTrusted" in listed and loc.get("isTrusted")))
               and country in (loc.get("countriesAndRegions") or []) for loc in locations)


def grant_met(policy: Json, way: Way, *, managed_device: bool) -> bool:
    """Whether an official signing in this way meets the policy's grant controls."""
    grant = policy.get("grantControls") or {}
    controls = grant.get("builtInControls") or []
    if not controls:
        return True

    def met(control: str) -> bool:
        if control == "block":
            return False
        if control == "compliantDevice":
            return managed_device
        if control == "domainJoinedDevice":
            return False
        if control in ("approvedApplication", "compliantApplication"):
            return way.client_app_type == "mobileAppsAndDesktopClients" and way.platform in ("iOS", "android")
        return True  # mfa, passwordChange: met at the first sign-in

    results = [met(c) for c in controls]
    return all(results) if grant.get("operator") == "AND" else any(results)


def hit(policy: Json, way: Way, *, managed_device: bool) -> Hit:
    return Hit(policy.get("displayName", "?"), policy.get("id", ""),
               tuple((policy.get("grantControls") or {}).get("builtInControls") or []),
               not grant_met(policy, way, managed_device=managed_device), policy.get("state") == REPORT_ONLY)


def predict_planned(person: Person, upn: str, policies: Sequence[Json], locations: Sequence[Json],
                    groups: set[str], *, managed_device: bool) -> Prediction:
    """An account not made yet: the policies' conditions, with the groups it will be in."""
    return Prediction(person.person_id, upn, "policies", tuple(
        WayVerdict(way, tuple(hit(p, way, managed_device=managed_device) for p in policies
                              if applies(p, way, groups, locations)))
        for way in ways(person)))


class PlannedPredictions:
    """`predict_planned` for many people against the same policies: people alike (the same
    ways of signing in, groups and device) are judged once (10,000 officials: a few dozen)."""

    def __init__(self, policies: Sequence[Json], locations: Sequence[Json]) -> None:
        self.policies, self.locations = policies, locations
        self._judged: dict[tuple[tuple[Way, ...], frozenset[str], bool], Prediction] = {}

    def __call__(self, person: Person, upn: str, groups: set[str], *, managed_device: bool) -> Prediction:
        key = (tuple(ways(person)), frozenset(groups), managed_device)
        judged = self._judged.get(key)
        if judged is None:
            judged = self._judged[key] = predict_planned(person, upn, self.policies, self.locations, groups,
                                                         managed_device=managed_device)
        return replace(judged, person_id=person.person_id, upn=upn)


def predict_from_what_if(person: Person, upn: str, answers: dict[Way, list[Json]], *,
                         managed_device: bool) -> Prediction:
    """An existing account: What If's answer per way (the policies with policyApplies)."""
    return Prediction(person.person_id, upn, "what-if", tuple(
        WayVerdict(way, tuple(hit(p, way, managed_device=managed_device) for p in results
                              if p.get("policyApplies")))
        for way, results in answers.items()))


def what_if_body(user_id: str, way: Way) -> Json:
    return {"signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": user_id},
            "signInContext": {"@odata.type": "#microsoft.graph.applicationContext",
                              "includeApplications": [EXCHANGE_ONLINE]},
            "signInConditions": {"clientAppType": way.client_app_type, "devicePlatform": way.platform,
                                 "country": COUNTRY},
            "appliedPoliciesOnly": False}


# -- the methods a person can register after the pass ------------------------------------------

# Authentication method configurations a person can sign in with after a pass (ids of
# authenticationMethodConfiguration in the authentication methods policy).
AFTER_THE_PASS = ("MicrosoftAuthenticator", "Fido2", "SoftwareOath", "Sms", "Voice")


def offered(config: Json | None, groups: set[str], *, passwordless: bool = False) -> bool:
    """Whether a method's configuration lets someone in ``groups`` register it (and, with
    ``passwordless``, use it without a password: Authenticator in mode any or
    deviceBasedPush, or a FIDO2 key)."""
    if not config or config.get("state") != "enabled":
        return False
    if groups & {t.get("id") for t in config.get("excludeTargets") or []}:
        return False
    return any((t.get("id") == "all_users" or t.get("id") in groups)
               and (not passwordless or t.get("authenticationMode", "any") in ("any", "deviceBasedPush"))
               for t in config.get("includeTargets") or [])


# -- what to tell the admin -----------------------------------------------------------------------

def problems(predictions: Iterable[Prediction], group_names: Sequence[str]) -> list[str]:
    """One line per blocking policy: the policy, what it needs, the ways and people it blocks,
    and the fix in words."""
    by_policy: dict[str, dict[str, Any]] = {}
    for p in predictions:
        for w in p.effective:
            for h in w.blocked_by:
                entry = by_policy.setdefault(h.policy, {"hit": h, "people": [], "ways": set()})
                if p.person_id not in entry["people"]:
                    entry["people"].append(p.person_id)
                entry["ways"].add(w.way.name)
    lines = []
    for name, entry in by_policy.items():
        h: Hit = entry["hit"]
        needs = "; ".join(NEEDS.get(c, c) for c in h.controls)
        people = entry["people"]
        shown = ", ".join(people[:8]) + (f" and {len(people) - 8} more" if len(people) > 8 else "")
        fix = (f"exclude the officials' group ({group_names[0]}) from it" if group_names
               else "exclude the officials from it")
        if set(h.controls) & {"approvedApplication", "compliantApplication"}:
            fix += ", or have the guide name Outlook for iOS or Android"
        lines.append(f"Conditional Access policy {name!r} {needs}: it would stop {len(people)} people"
                     f" ({shown}) signing in via {', '.join(sorted(entry['ways']))}; {fix}")
    return lines


def switched(predictions: Iterable[Prediction]) -> list[str]:
    """Policies that stop Outlook's app but not the browser: the guides name the web instead."""
    seen: dict[str, int] = {}
    for p in predictions:
        if p.web_mail:
            for name in {h.policy for w in p.ways[1:] for h in w.blocked_by}:
                seen[name] = seen.get(name, 0) + 1
    return [f"policy {name!r} stops Outlook's app for {n} people: their guides name Outlook on the web"
            for name, n in seen.items()]


def report_only(predictions: Iterable[Prediction]) -> list[str]:
    seen: dict[str, int] = {}
    for p in predictions:
        names = {h.policy for w in p.ways for h in w.hits if h.report_only and h.blocks}
        for name in names:
            seen[name] = seen.get(name, 0) + 1
    return [f"report-only policy {name!r} would stop {n} people once enabled" for name, n in seen.items()]

