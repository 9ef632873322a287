"""Provisioning at Graph's throttling ceiling, against what admins write by hand.

    python benchmarks/provisioning.py [--people 2000] [--time-scale 0.5] [--baseline-people 40]

The sandbox is served on 127.0.0.1 by its own process with Entra's documented quotas (8,000
resource units per 10 s, 3,000 writes per 150 s), 80 ms of latency per request, and its write
window primed: as if the app had been writing at its ceiling already, so that the steady rate
of 20 writes/s binds rather than a fresh window's burst of 3,000. ``--time-scale`` multiplies
every window, Retry-After, mailbox delay and the latency, keeping every ratio (our own CPU
time is not scaled, so a smaller scale is harsher on us).

Then ``provisioner apply`` provisions the officials (account, licence through group-based
licensing, the Förtroendevalda group, Swedish mailbox settings; `--direct-licence` assigns
licences one by one instead). Reported: people per second, Entra writes per person (counted
by the sandbox), the share of the write quota used, 429s, wall time against the floor
(writes ÷ 20 per second), and the client's own peak memory.

Baseline, in the same run on a fresh tenant: the sequential script admins write with
msgraph-sdk's typed models (create, assignLicense, add member; then mailbox settings, waiting
for each mailbox), over ``--baseline-people`` people, extrapolated to all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._served import busy, http_counters, run_measured, served
from provisioner.graph.pace import SCALE_ENV
from provisioner.sandbox import open_tenant, reset_tenant
from provisioner.sandbox.region import officials, roster_csv
from provisioner.sandbox.throttle import WRITE_LIMIT, WRITE_WINDOW

DOMAIN = "politiker.example-region.se"
PLAYBOOK = """\
name: bench
tenant: sandbox
roster: roster.csv
domain: {domain}
naming: {{mail_nickname: "pol.{{upn_local}}"}}
license: {license}
groups: {groups}
mailbox_settings: {{wait_seconds: {wait}}}
steps: [account, license, groups, mailbox_settings]
dual_role: {{policy: separate_account, decisions: decisions.csv}}
concurrency: 32
"""
LICENSING_GROUP = "Licens E3 förtroendevalda"
# --dynamic-groups: groups the playbook makes, with membership rules (groups.dynamic)
DYNAMIC_GROUPS = "{create: true, dynamic: true, names: [Förtroendevalda dynamisk]}"
DYNAMIC_LICENSING_GROUP = "Licens E3 dynamisk"
# The generated roster ends with two dual-role cases that need a human's decision (two
# candidate accounts; a disabled one): decided as in the example playbook's decisions file.
DECISIONS = """person_id,decision,user_id,decided_by,note
P{a:05d},new,,benchmark,neither candidate
P{b:05d},separate_account,,benchmark,the employee account is disabled
"""


def make_tenant(state: Path, people: int, scale: float, latency_ms: float, lost: float = 0.0) -> None:
    """A region of 2,000 employees (over 500 users: Entra's largest quota tier) with seats for
    every official, served with the documented quotas."""
    tenant = reset_tenant(state, employees=2000, seed=1, time_scale=scale,
                          latency_ms=latency_ms * scale, quota_primed=True, lost_reply_rate=lost)
    for sku in tenant.store.values("skus"):
        if sku["skuPartNumber"] == "ENTERPRISEPACK":
            units = sku["prepaidUnits"]
            tenant.store.put("skus", {**sku, "prepaidUnits": {**units, "enabled": units["enabled"] + people}})
    tenant.store.close()


def counters(state: Path, requests: dict[str, int]) -> dict[str, int]:
    """The sandbox's request counters (read over HTTP before it stopped), how many officials'
    accounts it now holds, and how many of those are a second account for the same person (by
    the tool's ownership mark)."""
    tenant = open_tenant(state)
    try:
        ours = [u for u in tenant.users.values() if u["userPrincipalName"].endswith("@" + DOMAIN)]
        marks = [(u.get("onPremisesExtensionAttributes") or {}).get("extensionAttribute15") for u in ours]
        tagged = [m for m in marks if m]
        return {**requests, "accounts": len(ours), "duplicates": len(tagged) - len(set(tagged))}
    finally:
        tenant.store.close()


def rejected(c: dict[str, int]) -> dict[str, int]:
    """Error answers other than throttling (429) and 'the mailbox is not there yet'."""
    return {k: n for k, n in c.items() if k[:1] in "45" and k[:3].isdigit() and k[:3] != "429"
            and "MailboxNotEnabledForRESTAPI" not in k}


def provision(work: Path, people: int, scale: float, latency_ms: float, direct: bool,
              lost: float, busy_cores: int, dynamic: bool = False) -> dict[str, Any]:
    state = work / "tenant"
    make_tenant(state, people, scale, latency_ms, lost)
    if dynamic:  # the playbook makes its groups: the app needs the permission to
        from provisioner.sandbox.prepare import grant

        tenant = open_tenant(state)
        grant(tenant, "Group.ReadWrite.All")
        tenant.store.close()
    (work / "roster.csv").write_text(roster_csv(officials(people, 2026)), encoding="utf-8")
    (work / "decisions.csv").write_text(DECISIONS.format(a=people - 1, b=people), encoding="utf-8")
    via = DYNAMIC_LICENSING_GROUP if dynamic else LICENSING_GROUP
    licence = "{sku: ENTERPRISEPACK}" if direct else f"{{sku: ENTERPRISEPACK, via_group: {via}}}"
    (work / "playbook.yaml").write_text(PLAYBOOK.format(
        domain=DOMAIN, license=licence, wait=600, groups=DYNAMIC_GROUPS if dynamic else "[Förtroendevalda]"),
        encoding="utf-8")
    with served(state) as url, busy(busy_cores):
        run = run_measured(
            [sys.executable, "-m", "provisioner", "--graph-url", url, "--state-dir",
             str(work / "client"), "apply", "--yes", str(work / "playbook.yaml")],
            env={SCALE_ENV: str(scale)})  # the client's pacer knows the sandbox's windows
        requests = http_counters(url)
    if run.code != 0:
        raise SystemExit(f"apply failed ({run.code}):\n{run.out[-3000:]}")
    c = counters(state, requests)
    wall = run.wall
    summary = next((line for line in run.out.splitlines() if line.startswith("Apply complete")), "")
    writes, made = c.get("entra writes", 0), c["accounts"]
    floor = writes / (WRITE_LIMIT / WRITE_WINDOW) * scale
    return {
        "people": people, "accounts_made": made, "wall_seconds": round(wall, 2),
        "floor_seconds": round(floor, 2),
        "wall_over_floor": round(wall / floor, 3) if floor else None,
        "people_per_second_at_graph_speed": round(made / (wall / scale), 2),
        "entra_writes": writes, "entra_writes_per_person": round(writes / made, 4),
        "write_quota_share": round(writes / (wall / scale * WRITE_LIMIT / WRITE_WINDOW), 3),
        "throttled_429": c.get("throttled", 0), "rejected_other": rejected(c),
        "lost_replies": c.get("lost replies", 0), "duplicate_accounts": c["duplicates"],
        "mailbox_not_ready_answers": sum(n for k, n in c.items() if "MailboxNotEnabledForRESTAPI" in k),
        "requests": sum(c.get(m, 0) for m in ("GET", "POST", "PATCH", "DELETE", "PUT")),
        "client_cpu_ms_per_person": round(run.cpu / made * 1000, 2), "busy_cores": busy_cores,
        "client": run.figures(), "client_described": run.describe(),
        "licence": "assignLicense per person" if direct
        else f"group-based licensing ({via}{', dynamic' if dynamic else ''})", "apply_summary": summary,
    }


# -- the baseline: what admins write by hand ---------------------------------------------------
async def baseline_client(url: str, people: int, scale: float) -> dict[str, Any]:
    """Sequential, typed models, msgraph-sdk's default middleware (its RetryHandler honours
    Retry-After): create, assignLicense, add member, one after another; then mailbox
    settings, waiting for each mailbox."""
    from uuid import UUID

    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.authentication import BaseBearerTokenAuthenticationProvider
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
    from msgraph.generated.models.assigned_license import AssignedLicense
    from msgraph.generated.models.locale_info import LocaleInfo
    from msgraph.generated.models.mailbox_settings import MailboxSettings
    from msgraph.generated.models.password_profile import PasswordProfile
    from msgraph.generated.models.reference_create import ReferenceCreate
    from msgraph.generated.models.user import User
    from msgraph.generated.users.item.assign_license.assign_license_post_request_body import (
        AssignLicensePostRequestBody,
    )

    from provisioner.graph.auth import StaticTokenProvider
    from provisioner.steps.account import generate_password

    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticTokenProvider("baseline-app")))
    adapter.base_url = url + "/v1.0"
    graph = GraphServiceClient(request_adapter=adapter)
    skus = await graph.subscribed_skus.get()
    sku = next(s.sku_id for s in skus.value if s.sku_part_number == "ENTERPRISEPACK")
    query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
        filter="displayName eq 'Förtroendevalda'")
    group = (await graph.groups.get(RequestConfiguration(query_parameters=query))).value[0]

    start = time.perf_counter()
    ids = []
    for person in officials(people, 2026):
        user = await graph.users.post(User(
            account_enabled=True, display_name=f"{person.given} {person.surname}",
            mail_nickname=f"pol.{person.person_id.lower()}", usage_location="SE",
            user_principal_name=f"{person.person_id.lower()}@{DOMAIN}",
            password_profile=PasswordProfile(password=generate_password(),
                                             force_change_password_next_sign_in=True)))
        await graph.users.by_user_id(user.id).assign_license.post(AssignLicensePostRequestBody(
            add_licenses=[AssignedLicense(sku_id=UUID(str(sku)), disabled_plans=[])], remove_licenses=[]))
        await graph.groups.by_group_id(group.id).members.ref.post(
            ReferenceCreate(odata_id=f"https://graph.microsoft.com/v1.0/directoryObjects/{user.id}"))
        ids.append(user.id)
    settings = MailboxSettings(language=LocaleInfo(locale="sv-SE"), time_zone="W. Europe Standard Time",
                               date_format="yyyy-MM-dd", time_format="HH:mm")
    waits = 0
    for uid in ids:
        while True:
            try:
                await graph.users.by_user_id(uid).mailbox_settings.patch(settings)
                break
            except APIError as exc:
                if exc.response_status_code != 404:
                    raise
                waits += 1
                await asyncio.sleep(1.0 * scale)  # the mailbox is not there yet
    return {"people": people, "seconds": time.perf_counter() - start, "mailbox_waits": waits}


def baseline(work: Path, people: int, all_people: int, scale: float, latency_ms: float) -> dict[str, Any]:
    state = work / "baseline-tenant"
    make_tenant(state, people, scale, latency_ms)
    with served(state) as url:
        run = run_measured([sys.executable, __file__, "--baseline-client", url,
                            "--people", str(people), "--time-scale", str(scale)])
        requests = http_counters(url)
    if run.code != 0:
        raise SystemExit(f"baseline failed ({run.code}):\n{run.out[-3000:]}")
    result = json.loads(run.out.strip().splitlines()[-1])
    c = counters(state, requests)
    writes = c.get("entra writes", 0)
    per_person = result["seconds"] / people
    extrapolated = per_person * all_people
    floor = writes / people * all_people / (WRITE_LIMIT / WRITE_WINDOW) * scale
    return {
        "measured_people": people, "measured_seconds": round(result["seconds"], 2),
        "extrapolated_people": all_people, "extrapolated_seconds": round(extrapolated, 1),
        "floor_seconds_for_its_writes": round(floor, 2),
        "people_per_second_at_graph_speed": round(people / (result["seconds"] / scale), 2),
        "entra_writes_per_person": round(writes / people, 3),
        "throttled_429": c.get("throttled", 0), "rejected_other": rejected(c),
        "mailbox_waits": result["mailbox_waits"], "client_peak_rss_mb": round(run.rss_mb, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--time-scale", type=float, default=0.5)
    ap.add_argument("--latency-ms", type=float, default=80.0, help="before the time scale")
    ap.add_argument("--baseline-people", type=int, default=40)
    ap.add_argument("--direct-licence", action="store_true",
                    help="assignLicense per person instead of group-based licensing")
    ap.add_argument("--lost-reply-rate", type=float, default=0.0,
                    help="share of writes the sandbox makes but answers 504 (the reply is lost)")
    ap.add_argument("--dynamic-groups", action="store_true",
                    help="groups.dynamic: the playbook makes its groups with membership rules")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="run N CPU-bound processes beside the client (a machine with other work)")
    ap.add_argument("--baseline-client", metavar="URL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_client:
        print(json.dumps(asyncio.run(baseline_client(args.baseline_client, args.people, args.time_scale))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours = provision(work / "ours", args.people, args.time_scale, args.latency_ms,
                         args.direct_licence, args.lost_reply_rate, args.busy, args.dynamic_groups)
        base = baseline(work / "base", min(args.baseline_people, args.people), args.people,
                        args.time_scale, args.latency_ms)
    s = args.time_scale
    figures = {"benchmark": "provisioning", "time_scale": s, "latency_ms": args.latency_ms,
               "provisioner": ours, "baseline": base,
               "speedup": round(base["extrapolated_seconds"] / ours["wall_seconds"], 1)}
    print(f"provisioning {ours['people']} officials; sandbox served on 127.0.0.1, Entra quotas as"
          f" documented (write window primed: 20 writes/s), {args.latency_ms:.0f} ms latency,"
          f" time scale {s} (every figure in seconds below is scaled; divide by {s} for Graph's)")
    print(f"  provisioner: {ours['wall_seconds']:.1f} s wall against a floor of"
          f" {ours['floor_seconds']:.1f} s ({ours['wall_over_floor']:.2f}x);"
          f" {ours['people_per_second_at_graph_speed']:.1f} people/s at Graph's speed;"
          f" {ours['accounts_made']} accounts made with {ours['entra_writes']} Entra writes ="
          f" {ours['entra_writes_per_person']:.4f} per person"
          f" (licence: {ours['licence']}); write quota used {ours['write_quota_share']:.0%};"
          f" 429s: {ours['throttled_429']}; other rejections: {ours['rejected_other'] or 'none'};"
          f" replies lost after a write: {ours['lost_replies']}, duplicate accounts:"
          f" {ours['duplicate_accounts']}")
    print(f"  client: {ours['client_cpu_ms_per_person']:.1f} ms of CPU per person"
          f" ({args.busy} busy processes beside it); {ours['client_described']}")
    print(f"  baseline (sequential typed script): {base['measured_people']} people in"
          f" {base['measured_seconds']:.1f} s, extrapolated to {args.people}:"
          f" {base['extrapolated_seconds']:.0f} s ({base['people_per_second_at_graph_speed']:.1f}"
          f" people/s at Graph's speed); {base['entra_writes_per_person']:.2f} Entra writes per person;"
          f" 429s: {base['throttled_429']};"
          f" floor for its writes {base['floor_seconds_for_its_writes']:.0f} s")
    print(f"  speed-up over the baseline: {figures['speedup']}x")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
