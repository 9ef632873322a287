"""``provisioner init``: a playbook, an empty roster (and an Excel-ready copy) and a decisions
file for one organisation, commented like the example, that ``validate`` accepts and that runs
as written once the roster is filled in (the playbook owns its groups: ``groups.create``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .naming import slug

DELIVERIES = ("print", "email")
# The roster's columns as the example has them (the secretariat's export; `;` as Swedish Excel).
INIT_COLUMNS = ("person_id", "given_name", "surname", "role", "body", "mobile", "private_email",
                "employee_id", "personal_number")


@dataclass(frozen=True, slots=True)
class Answers:
    organisation: str   # "Solbacka kommun"
    domain: str         # the officials' addresses: politiker.solbacka.se
    sku: str            # EXCHANGESTANDARD, "Office 365 E3", ...
    bodies: tuple[str, ...]  # the committees, in the order they go
    delivery: str = "print"
    sender: str | None = None  # the service mailbox that e-mails guides
    support: str | None = None  # the help line the guides give

    @property
    def slug(self) -> str:
        return slug(self.organisation, 40) or "organisation"

    @property
    def default_sender(self) -> str:
        return f"lathundar@{self.mail_domain}"

    @property
    def mail_domain(self) -> str:
        """The organisation's own domain: politiker.solbacka.se → solbacka.se."""
        parts = self.domain.split(".")
        return ".".join(parts[1:]) if len(parts) > 2 else self.domain


def files(answers: Answers) -> dict[str, str]:
    """file name → content."""
    slug = answers.slug
    roster = f"{slug}-roster.csv"
    header = ";".join(INIT_COLUMNS) + "\n"
    return {
        f"{slug}-epost.yaml": playbook(answers, roster, f"{slug}-dual-role-decisions.csv"),
        roster: header,
        f"{slug}-roster-excel.csv": "\ufeff" + header,
        f"{slug}-dual-role-decisions.csv": "person_id,decision,user_id,decided_by,note\n",
    }


def write(answers: Answers, folder: Path) -> list[Path]:
    """The files, into ``folder``; nothing is overwritten (one error lists what exists)."""
    wanted = {folder / name: text for name, text in files(answers).items()}
    there = [str(p) for p in wanted if p.exists()]
    if there:
        raise InputError(f"init writes nothing over existing files: {', '.join(there)}")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in wanted.items():
        path.write_text(text, encoding="utf-8", newline="\n" if path.suffix == ".yaml" else "")
    return list(wanted)


def _q(text: str) -> str:
    """A YAML scalar for any text (a JSON string is a YAML double-quoted scalar)."""
    return json.dumps(text, ensure_ascii=False)


def _cohorts(answers: Answers) -> str:
    """The first body with canary accounts and an approval, then one body at a time, the rest
    last: the rollout goes gradually, together with the officials."""
    out = ["cohorts:"]
    bodies = list(answers.bodies)
    if not bodies:
        out += ["  - name: alla", "    select: {rest: true}", "    canary: true", "    gates:",
                "      max_failure_ratio: 0", "      verify: {timeout: 10m, interval: 15s}"]
        return "\n".join(out)
    used: set[str] = set()
    for i, body in enumerate(bodies):
        name = slug(body, 40) or f"kohort-{i + 1}"
        while name in used:
            name += "-2"
        used.add(name)
        out += [f"  - name: {name}", f"    select: {{body: {_q(body)}}}"]
        if i == 0:
            out += ["    canary: true", "    gates:", "      max_failure_ratio: 0",
                    "      verify: {timeout: 10m, interval: 15s}", "      approval: true"]
        else:
            out += ["    gates:", "      max_failure_ratio: 0.02", "      verify: {timeout: 10m}"]
    out += ["  - name: ovriga", "    select: {rest: true}", "    gates:", "      verify: {timeout: 10m}"]
    return "\n".join(out)


def playbook(answers: Answers, roster: str, decisions: str) -> str:
    org, domain, mail = answers.organisation, answers.domain, answers.mail_domain
    support = answers.support or f"IT-supporten för förtroendevalda: support@{mail}"
    sender = answers.sender or answers.default_sender
    delivery = (f"  delivery: email\n  sender: {sender}" if answers.delivery == "email"
                else "  delivery: print")
    return f"""\
# {org}: the officials (förtroendevalda) get their own e-mail address, cohort by cohort.
# Made by `provisioner init`. Fill in {roster} (or the Excel copy, saved as "CSV UTF-8"
# over it), then
#   provisioner validate {answers.slug}-epost.yaml
#   provisioner plan {answers.slug}-epost.yaml
# to see every change before anything is made.
name: {answers.slug}-epost
description: {_q(f"E-mail for the officials of {org}, with Swedish mailbox settings.")}

# `sandbox` runs against the built-in sandbox tenant (rehearse first:
#   provisioner sandbox reset
#   provisioner sandbox add-domain {domain}
#   provisioner sandbox grant Group.ReadWrite.All
# ). For your tenant:
# tenant:
#   tenant_id: 00000000-0000-0000-0000-000000000000
#   client_id: 00000000-0000-0000-0000-000000000000
#   certificate:
#     path: C:\\provisioner\\app.pfx
#     password_env: PROVISIONER_PFX_PASSWORD
tenant: sandbox

roster: {roster}
domain: {domain}

naming:
  upn: "{{given}}.{{surname}}"
  display_name: "{{given}} {{surname}} (förtroendevald)"
  # Employees already hold "given.surname" aliases: keep officials' aliases apart.
  mail_nickname: "pol.{{upn_local}}"

account:
  usage_location: SE
  department_from: body
  job_title_from: role

# The licence comes with membership of the licensing group (group-based licensing).
license:
  sku: {_q(answers.sku)}
  via_group: {_q(f"Licens förtroendevalda {org}")}

# The playbook owns its groups: apply makes the ones the tenant lacks (security groups, and the
# licensing group with its licence) before the first cohort; rollback removes the ones it made
# once no one else is a member. The app needs Group.ReadWrite.All for it.
groups:
  create: true
  names:
    - {_q(f"Förtroendevalda {org}")}
    - "Politiker {{body}}"

mailbox_settings:
  language: sv-SE
  time_zone: W. Europe Standard Time
  date_format: yyyy-MM-dd
  time_format: HH:mm
  wait_seconds: 60

# First sign-in without a password in the open: a one-time Temporary Access Pass, only in the
# person's printed guide (lathund). A default tenant allows passes of 1 to 8 hours.
access_pass:
  lifetime_minutes: 480
  usable_once: true
guide:
  language: sv
{delivery}
  organisation: {_q(org)}
  help: {_q(support)}

steps: [account, license, groups, mailbox_settings, access_pass, guide]
concurrency: 8

# Someone no longer in the roster: their mailbox answers at once where to write instead.
leavers:
  auto_reply: {_q(f"Jag har lämnat mitt uppdrag i {org}. Skriv till registrator@{mail} i stället.")}

# Officials who are also employees keep their employee account and get an official's account
# of their own, linked to it. Unclear cases wait for a decision in {decisions}.
dual_role:
  policy: separate_account
  personal_number_attribute: extensionAttribute1   # HMAC of the personnummer, from HR's sync
  personal_number_key_env: PROVISIONER_PNR_KEY
  link_attribute: extensionAttribute14
  decisions: {decisions}

# Gradually, together with the officials: the first committee with canary test accounts and
# an approval, then one committee at a time, everyone else last.
{_cohorts(answers)}
"""
