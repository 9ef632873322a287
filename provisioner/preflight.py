"""Preflight: is the tenant ready for the next cohort? Every failure says what to fix.

Run by `provisioner preflight`, reported by `plan`, and run by `apply`, which does not start
while one stands: the story's wrong setting is caught before anyone is locked out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .errors import GraphError, ProvisionerError
from .graph.client import client_id as app_id
from .graph.gateway import Graph
from .model import Action, Plan
from .permissions import GRAPH_APP_ID, missing, required, roles
from .playbook import Playbook
from .roster import Person
from .snapshot import Snapshot, adoption_property, signin_gate
from .steps.groups import needed_groups

OK, FAIL, SKIP = "ok", "FAIL", "skip"
# What Entra Connect syncs from AD: read-only through Graph on a synced user.
ON_PREMISES_MASTERED = frozenset({
    "accountEnabled", "displayName", "givenName", "surname", "userPrincipalName", "mailNickname",
    "department", "jobTitle", "mobilePhone", "businessPhones", "employeeId", "otherMails",
    "onPremisesExtensionAttributes", "passwordProfile"})


class PreflightError(ProvisionerError):
    exit_code = 5


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"  {self.status:<4}  {self.name:<15} {self.detail}"


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]


async def tenant_checks(graph: Graph, playbook: Playbook, persons: list[Person],
                        snapshot: Snapshot) -> list[Check]:
    """The checks that need no plan: domain, groups, permissions."""
    return [await _domain(graph, playbook), _groups(playbook, persons, snapshot),
            await permissions_check(graph, playbook), await _access_pass_policy(graph, playbook, snapshot)]


def plan_checks(playbook: Playbook, plan: Plan, snapshot: Snapshot, cohort: str | None) -> list[Check]:
    """The checks on what the next cohort would do: seats, usage location, names."""
    part = plan.only(cohort) if cohort else plan
    return [_seats(playbook, part, snapshot, cohort), _usage_location(part, snapshot),
            _naming(plan, snapshot), _adoption(playbook, part, snapshot), _synced(part, snapshot),
            _sign_in_logs(playbook, snapshot)]


async def _domain(graph: Graph, playbook: Playbook) -> Check:
    try:
        domains = {d["id"].lower(): d for d in await graph.domains()}
    except GraphError as exc:
        if exc.status != 403:
            raise
        return Check("domain", FAIL, f"cannot read the tenant's domains ({exc.code}): see permissions")
    found = domains.get(playbook.domain.lower())
    if found is None:
        return Check("domain", FAIL, f"{playbook.domain} is not a domain of the tenant: add it in"
                     " Entra (Domain names) and verify it before the first cohort")
    if not found.get("isVerified"):
        return Check("domain", FAIL, f"{playbook.domain} is not verified: add the DNS TXT record"
                     " Entra shows and verify it; accounts on it cannot be created until then")
    return Check("domain", OK, f"{playbook.domain} is a verified domain")


async def _access_pass_policy(graph: Graph, playbook: Playbook, snapshot: Snapshot) -> Check:
    """The tenant's Temporary Access Pass policy must let every pass the playbook asks for be
    issued: enabled, covering the officials, the lifetime inside its bounds."""
    spec = playbook.access_pass
    if "access_pass" not in playbook.steps or spec is None or spec.method != "temporary_access_pass":
        return Check("access pass", OK, "no Temporary Access Pass step")
    try:
        policy = await graph.access_pass_policy()
    except GraphError as exc:
        if exc.status != 403:
            raise
        return Check("access pass", FAIL, f"cannot read the Temporary Access Pass policy ({exc.code}):"
                     " see permissions")
    where = "Entra admin center, Protection, Authentication methods, Temporary Access Pass"
    if policy.get("state") != "enabled":
        return Check("access pass", FAIL, f"Temporary Access Pass is disabled in the tenant:"
                     f" enable it ({where})")
    low, high = policy.get("minimumLifetimeInMinutes", 60), policy.get("maximumLifetimeInMinutes", 480)
    problems = []
    if not low <= spec.lifetime_minutes <= high:
        problems.append(f"access_pass.lifetime_minutes is {spec.lifetime_minutes}, the policy allows"
                        f" {low} to {high}: change one or the other")
    if policy.get("isUsableOnce") and not spec.usable_once:
        problems.append("the policy allows one-time passes only: set access_pass.usable_once: true")
    targets = {t.get("id") for t in policy.get("includeTargets") or []}
    mine = {g.id: name for name in _static_groups(playbook) for g in snapshot.groups.get(name, [])}
    if "all_users" not in targets and not targets & set(mine):
        problems.append("the policy enables passes only for groups none of which this playbook puts"
                        f" people in: add one of {', '.join(sorted(set(mine.values()))) or 'its groups'}"
                        f" to the policy's targets ({where})")
    if problems:
        return Check("access pass", FAIL, "; ".join(problems))
    return Check("access pass", OK, f"enabled for these people, {spec.lifetime_minutes} minutes"
                 f" is within {low}–{high}")


def _static_groups(playbook: Playbook) -> list[str]:
    """The groups every person of the playbook is put in (names without placeholders)."""
    return [g for g in playbook.groups if "{" not in g] if "groups" in playbook.steps else []


def _groups(playbook: Playbook, persons: list[Person], snapshot: Snapshot) -> Check:
    needed = needed_groups(playbook, persons)
    if not needed:
        return Check("groups", OK, "no groups needed")
    missing = [n for n in sorted(needed) if not snapshot.groups.get(n)]
    doubled = [n for n in sorted(needed) if len(snapshot.groups.get(n, [])) > 1]
    if missing or doubled:
        parts = [f"missing: {', '.join(missing)} (create them, or fix the names in the playbook)"] \
            if missing else []
        parts += [f"more than one group named {', '.join(doubled)} (rename all but one)"] if doubled else []
        return Check("groups", FAIL, "; ".join(parts))
    return Check("groups", OK, f"all {len(needed)} groups exist, once each")


async def permissions_check(graph: Graph, playbook: Playbook) -> Check:
    client_id = app_id(playbook.tenant)
    try:
        granted = await graph.granted_app_permissions(client_id, GRAPH_APP_ID)
        held = await graph.app_directory_roles(client_id)
    except GraphError as exc:
        return Check("permissions", FAIL, f"cannot read the permissions granted to app {client_id}"
                     f" ({exc.code}): grant Application.Read.All")
    if granted is None or held is None:
        return Check("permissions", FAIL, f"no service principal for app {client_id} in the tenant:"
                     " create the enterprise application (admin consent) first")
    problems = []
    lacking = missing(playbook, granted)
    if lacking:
        problems.append("not granted: " + "; ".join(f"{p} (to {why})" for p, why in lacking.items())
                        + ". Grant them as application permissions with admin consent"
                        " (`provisioner permissions` lists all)")
    for role, why in roles(playbook).items():
        if role not in held:
            problems.append(f"the app has no {role} role (needed to {why}): assign it to the app in"
                            " Entra, Roles and administrators")
    if problems:
        return Check("permissions", FAIL, "; ".join(problems))
    return Check("permissions", OK, f"the {len(required(playbook))} permissions the steps need are granted")


def _seats(playbook: Playbook, part: Plan, snapshot: Snapshot, cohort: str | None) -> Check:
    if playbook.license is None or "license" not in playbook.steps:
        return Check("licence", OK, "no licence step")
    sku = snapshot.skus.get(playbook.license.sku)
    if sku is None:
        known = ", ".join(sorted(snapshot.skus)) or "none"
        return Check("licence", FAIL, f"the tenant has no subscription {playbook.license.sku}"
                     f" (it has: {known}): fix license.sku or buy it")
    needed = sum(1 for c in part.changes if c.step == "license" and c.action is Action.CREATE)
    who = f"cohort {cohort}" if cohort else "the plan"
    if needed > sku.free:
        return Check("licence", FAIL, f"{sku.part_number}: {who} needs {needed} licences, {sku.free}"
                     f" are free ({sku.enabled} bought, {sku.consumed} in use): buy"
                     f" {needed - sku.free} more or free some")
    return Check("licence", OK, f"{sku.part_number}: {who} needs {needed}, {sku.free} free")


def _usage_location(part: Plan, snapshot: Snapshot) -> Check:
    """An existing account that gets a licence needs a usageLocation, or Graph refuses."""
    fixed = {c.person_id for c in part.changes if c.step == "account"
             and "usageLocation" in (c.after or {})}
    lacking = []
    for c in part.changes:
        if c.step != "license" or c.action is not Action.CREATE or c.person_id in fixed:
            continue
        target = part.people.get(c.person_id)
        user = snapshot.users.get(target.user_id) if target and target.user_id else None
        if user is not None and not user.attributes.get("usageLocation"):
            lacking.append(user.upn)
    if lacking:
        return Check("usage location", FAIL, f"{len(lacking)} accounts that get a licence have no"
                     f" usageLocation: {', '.join(sorted(lacking)[:10])}; set it (e.g. SE) first")
    return Check("usage location", OK, "every account that gets a licence has a usageLocation")


def _naming(plan: Plan, snapshot: Snapshot) -> Check:
    creates = [c.after or {} for c in plan.changes if c.step == "account" and c.action is Action.CREATE]
    upns = Counter(a.get("userPrincipalName", "").lower() for a in creates)
    nicks = Counter(a.get("mailNickname", "").lower() for a in creates)
    taken_upn, taken_nick = snapshot.names_taken()
    clashes = sorted({u for u, n in upns.items() if n > 1 or u in taken_upn}
                     | {n for n, k in nicks.items() if k > 1 or n in taken_nick})
    if clashes:
        return Check("naming", FAIL, f"the naming policy gives addresses already in use:"
                     f" {', '.join(clashes[:10])}; change naming in the playbook")
    return Check("naming", OK, f"{len(creates)} new addresses, no collision")


def _adoption(playbook: Playbook, part: Plan, snapshot: Snapshot) -> Check:
    """Adopted accounts are marked in a directory extension the region registers once."""
    prop = adoption_property(playbook)
    adopting = sum(1 for c in part.changes if c.step == "account" and prop in (c.after or {}))
    if not adopting:
        return Check("adoption", OK, "no existing account is adopted")
    if not snapshot.adoption_registered:
        return Check("adoption", FAIL, f"{adopting} existing accounts would be adopted, but the app has no"
                     f" directory extension {prop}: register it once (POST /applications/{{object id}}"
                     f"/extensionProperties with {{\"name\": \"{playbook.account.adoption_extension}\","
                     ' "dataType": "String", "targetObjects": ["User"]}; see the README, A real tenant)')
    return Check("adoption", OK, f"{adopting} adopted accounts are marked in {prop}")


PREMIUM_PLANS = ("AAD_PREMIUM", "AAD_PREMIUM_P2")


def _sign_in_logs(playbook: Playbook, snapshot: Snapshot) -> Check:
    """The sign-in gate reads auditLogs/signIns, which needs Microsoft Entra ID P1 or P2."""
    if not signin_gate(playbook):
        return Check("sign-in logs", OK, "no sign-in gate")
    premium = sorted(s.part_number for s in snapshot.skus.values()
                     if s.enabled > 0 and set(s.plans) & set(PREMIUM_PLANS))
    if not premium:
        return Check("sign-in logs", FAIL, "a cohort has a sign-in gate, but Graph's sign-in logs need"
                     " Microsoft Entra ID P1 or P2 and the tenant has neither (subscriptions: "
                     f"{', '.join(sorted(snapshot.skus)) or 'none'}): buy one, or drop the gate")
    return Check("sign-in logs", OK, f"Entra ID P1/P2 through {', '.join(premium)}")


def _synced(part: Plan, snapshot: Snapshot) -> Check:
    """Nothing the plan writes on an AD-synced account is mastered on-premises: Graph refuses
    those writes (onPremisesExtensionAttributes and the identity attributes the sync flows)."""
    users = {u.upn.lower(): u for u in snapshot.users.values() if u.synced}
    bad = sorted({c.target.split(":", 1)[1] for c in part.changes if c.step == "account"
                  and c.action is Action.UPDATE and c.target.split(":", 1)[1].lower() in users
                  and set(c.after or {}) & ON_PREMISES_MASTERED})
    if bad:
        return Check("synced accounts", FAIL, f"the plan would change on-premises attributes of"
                     f" {len(bad)} AD-synced accounts ({', '.join(bad[:5])}): change them in AD instead")
    return Check("synced accounts", OK, "nothing mastered on-premises is written")


def raise_if_failed(checks: list[Check]) -> None:
    failed = failures(checks)
    if failed:
        raise PreflightError("preflight failed; apply does not start until this is fixed:\n"
                             + "\n".join(c.line() for c in failed))

