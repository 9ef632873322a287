"""Preflight: is the tenant ready for the next cohort? Every failure says what to fix.

Run by `provisioner preflight`, reported by `plan`, and run by `apply`, which does not start
while one stands: the story's wrong setting is caught before anyone is locked out.
"""

from __future__ import annotations

import asyncio

from .checks import Check, CheckStatus, fail, ok
from .errors import GraphError, PreflightError
from .graph.client import client_id as app_id
from .graph.gateway import Graph
from .model import Plan
from .permissions import GRAPH_APP_ID, missing, required, roles
from .playbook import Playbook
from .roster import Person
from .signin import (
    PlannedPredictions,
    Prediction,
    predict_from_what_if,
    problems,
    report_only,
    switched,
    ways,
    what_if_body,
)
from .snapshot import ADOPTED, Snapshot, owner_prefix, read_conditional_access, signin_gate
from .steps import enrolled_device, group_ids, needed_groups, used
from .steps.base import Planned
from .steps.groups import dynamic, rule_selects, rule_terms, static_groups

OK, FAIL, SKIP = CheckStatus


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status is FAIL]


async def tenant_checks(graph: Graph, playbook: Playbook, persons: list[Person],
                        snapshot: Snapshot) -> list[Check]:
    """The checks that need no plan: domain, groups, permissions, and each step's own (their
    reads go together: against Graph each is a round trip of its own)."""
    domain, permissions, *steps = await asyncio.gather(
        _domain(graph, playbook), permissions_check(graph, playbook),
        *(step.tenant_preflight(graph, playbook, snapshot) for step in used(playbook)))
    checks = [domain, _groups(playbook, persons, snapshot), permissions]
    if dynamic(playbook):
        checks.append(_dynamic_groups(playbook, persons, snapshot))
    return checks + [check for found in steps for check in found]


def plan_checks(playbook: Playbook, plan: Plan, snapshot: Snapshot, cohort: str | None) -> list[Check]:
    """The checks on what the next cohort would do: each step's (seats, usage location, names,
    adoption, synced accounts), and the sign-in gate's licence."""
    planned = Planned(playbook, snapshot, plan, plan.only(cohort) if cohort else plan, cohort)
    return [c for step in used(playbook) for c in step.preflight(planned)] + [
        _sign_in_logs(playbook, snapshot)]


async def _domain(graph: Graph, playbook: Playbook) -> Check:
    try:
        domains = {d["id"].lower(): d for d in await graph.domains()}
    except GraphError as exc:
        if exc.status != 403:
            raise
        return fail("domain", f"cannot read the tenant's domains ({exc.code}): see permissions")
    found = domains.get(playbook.domain.lower())
    if found is None:
        return fail("domain", f"{playbook.domain} is not a domain of the tenant: add it in"
                     " Entra (Domain names) and verify it before the first cohort")
    if not found.get("isVerified"):
        return fail("domain", f"{playbook.domain} is not verified: add the DNS TXT record"
                     " Entra shows and verify it; accounts on it cannot be created until then")
    return ok("domain", f"{playbook.domain} is a verified domain")


def _groups(playbook: Playbook, persons: list[Person], snapshot: Snapshot) -> Check:
    needed = needed_groups(playbook, persons)
    if not needed:
        return ok("groups", "no groups needed")
    missing = [n for n in sorted(needed) if not snapshot.groups.get(n)]
    doubled = [n for n in sorted(needed) if len(snapshot.groups.get(n, [])) > 1]
    if missing or doubled:
        parts = [f"missing: {', '.join(missing)} (create them, or fix the names in the playbook)"] \
            if missing else []
        parts += [f"more than one group named {', '.join(doubled)} (rename all but one)"] if doubled else []
        return fail("groups", "; ".join(parts))
    planned = [n for n in sorted(needed) if snapshot.groups[n][0].planned]
    if planned:
        return ok("groups", f"{len(needed) - len(planned)} groups exist, once each; apply makes"
                  f" {len(planned)} (groups.create): {', '.join(planned)}")
    return ok("groups", f"all {len(needed)} groups exist, once each")


def _dynamic_groups(playbook: Playbook, persons: list[Person], snapshot: Snapshot) -> Check:
    """groups.dynamic: Entra ID P1 in the tenant (groups-create-rule: "Using Dynamic groups
    requires Microsoft Entra ID P1"), and each rule selecting exactly the playbook's people:
    no account in the directory that is not theirs, and none of theirs it cannot see."""
    premium = _premium(snapshot)
    if not premium:
        return fail("dynamic groups", "groups.dynamic needs Microsoft Entra ID P1, and the tenant has"
                    f" no subscription with it (subscriptions: {', '.join(sorted(snapshot.skus)) or 'none'}):"
                    " buy one (Microsoft 365 E3 includes it), or drop `dynamic`")
    terms = rule_terms(playbook, persons)
    people = {p.person_id for p in persons}
    prefix, problems = owner_prefix(playbook), []
    for user in snapshot.users.values():
        tag = user.owner_tag or ""
        # The tool makes cloud accounts on the playbook's domain: one synced from AD, or on
        # another domain, carries the mark by someone's hand.
        made_here = tag.startswith(prefix) and not user.synced and \
            user.upn.lower().endswith("@" + playbook.domain.lower())
        for name, rule in terms.items():
            if rule_selects(rule, user.attributes) and not made_here and not user.adopted:
                problems.append(f"the rule of {name!r} would also select {user.upn}, whose account is"
                                " not the playbook's: clear the mark someone copied onto it")
        if user.adopted and tag.startswith(prefix) and tag[len(prefix):-len(ADOPTED)] in people:
            problems.append(f"{user.upn} is adopted (dual role): its mark is where no rule looks, so"
                            " Entra would leave it out of the groups; give it a separate account, or"
                            " drop `dynamic`")
    if problems:
        return fail("dynamic groups", "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)"
                                                                  if len(problems) > 5 else ""))
    return ok("dynamic groups", f"{len(terms)} rules select exactly the playbook's people;"
              f" Entra ID P1 through {', '.join(premium)}")


async def permissions_check(graph: Graph, playbook: Playbook) -> Check:
    client_id = app_id(playbook.tenant)
    try:
        granted, held = await asyncio.gather(graph.granted_app_permissions(client_id, GRAPH_APP_ID),
                                             graph.app_directory_roles(client_id))
    except GraphError as exc:
        return fail("permissions", f"cannot read the permissions granted to app {client_id}"
                     f" ({exc.code}): grant Application.Read.All")
    if granted is None or held is None:
        return fail("permissions", f"no service principal for app {client_id} in the tenant:"
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
        return fail("permissions", "; ".join(problems))
    return ok("permissions", f"the {len(required(playbook))} permissions the steps need are granted")


PREMIUM_PLANS = ("AAD_PREMIUM", "AAD_PREMIUM_P2")


def _premium(snapshot: Snapshot) -> list[str]:
    """The subscriptions with seats that bring Microsoft Entra ID P1 or P2."""
    return sorted(s.part_number for s in snapshot.skus.values()
                  if s.enabled > 0 and set(s.plans) & set(PREMIUM_PLANS))


def _sign_in_logs(playbook: Playbook, snapshot: Snapshot) -> Check:
    """The sign-in gate reads auditLogs/signIns, which needs Microsoft Entra ID P1 or P2."""
    if not signin_gate(playbook):
        return ok("sign-in logs", "no sign-in gate")
    premium = _premium(snapshot)
    if not premium:
        return fail("sign-in logs", "a cohort has a sign-in gate, but Graph's sign-in logs need"
                     " Microsoft Entra ID P1 or P2 and the tenant has neither (subscriptions: "
                     f"{', '.join(sorted(snapshot.skus)) or 'none'}): buy one, or drop the gate")
    return ok("sign-in logs", f"Entra ID P1/P2 through {', '.join(premium)}")


async def predict_signins(graph: Graph, playbook: Playbook, persons: list[Person], plan: Plan,
                          snapshot: Snapshot) -> list[Prediction]:
    """Each person's first sign-in, way by way: What If for an account that exists, the
    policies' conditions (with the groups the playbook gives them) for one not made yet."""
    access = snapshot.conditional_access or await read_conditional_access(graph)
    if access.unreadable is not None:
        raise access.unreadable
    planned = PlannedPredictions(access.policies, access.locations)
    limit = asyncio.Semaphore(4)

    async def ask(person: Person, upn: str, user_id: str, managed: bool) -> Prediction:
        async with limit:
            return await ask_what_if(graph, person, upn, user_id, managed_device=managed)

    out: list[Prediction] = []
    asked: dict[int, tuple[Person, str, str, bool]] = {}  # place in ``out`` -> What If's question
    for person in persons:
        target = plan.people.get(person.person_id)
        upn = target.upn if target else person.person_id
        managed = enrolled_device(playbook, person)
        if target is not None and target.user_id:
            asked[len(out)] = (person, upn, target.user_id, managed)
            out.append(Prediction(person.person_id, upn, "what-if"))  # replaced by the answer below
        else:
            out.append(planned(person, upn, group_ids(playbook, person, snapshot), managed_device=managed))
    for i, answer in zip(asked, await asyncio.gather(*(ask(*q) for q in asked.values())), strict=True):
        out[i] = answer
    return out


async def signin_check(graph: Graph, playbook: Playbook, persons: list[Person], plan: Plan,
                       snapshot: Snapshot) -> Check:
    """Would Conditional Access let the next cohort sign in the ways the guide tells them?"""
    if not persons:
        return ok("sign-in", "nobody to sign in")
    try:
        predictions = await predict_signins(graph, playbook, persons, plan, snapshot)
    except GraphError as exc:
        if exc.status != 403:
            raise
        return fail("sign-in", f"cannot read the tenant's Conditional Access policies ({exc.code}:"
                    f" {exc.message}): grant Policy.Read.ConditionalAccess, so that a policy that would"
                    " lock the officials out is found before their accounts are made")
    blocked = problems(predictions, static_groups(playbook))
    if blocked:
        return fail("sign-in", "; ".join(blocked) + " (`provisioner signin-check` lists everyone)")
    watched = switched(predictions) + report_only(predictions)
    ways_count = sum(len(p.ways) for p in predictions)
    return ok("sign-in", f"Conditional Access lets all {len(predictions)} people sign in ({ways_count}"
              " ways: the first sign-in and mail as the guide says)"
              + "".join(f"; {line}" for line in watched))


async def canary_signins(graph: Graph, canaries: list[Person], upns: dict[str, str]) -> list[Prediction]:
    """The canary accounts, just made, asked of What If the ways their people will sign in:
    a policy added or changed since preflight (or that preflight could not see) shows here,
    before a real person is touched."""
    predictions = []
    for person in canaries:
        found = await graph.get_user(upns[person.person_id], ("id",))
        if found is None:
            continue  # not made: the canary's verify check says so
        predictions.append(await ask_what_if(graph, person, upns[person.person_id], found["id"],
                                             managed_device=False))
    return predictions


async def ask_what_if(graph: Graph, person: Person, upn: str, user_id: str, *,
                      managed_device: bool) -> Prediction:
    """An existing account's prediction: What If, once for each way the person signs in."""
    answers = {way: await graph.what_if(what_if_body(user_id, way)) for way in ways(person)}
    return predict_from_what_if(person, upn, answers, managed_device=managed_device)


def raise_if_failed(checks: list[Check]) -> None:
    failed = failures(checks)
    if failed:
        raise PreflightError("preflight failed; apply does not start until this is fixed:\n"
                             + "\n".join(c.line() for c in failed))

