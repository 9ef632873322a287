"""Steps against the sandbox, for what the end-to-end tests cannot provoke."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from provisioner.errors import GraphError
from provisioner.graph.client import Target
from provisioner.graph.gateway import Graph
from provisioner.model import Action, Change, Outcome
from provisioner.sandbox import Sandbox
from provisioner.steps import PersonRun
from provisioner.steps.account import AccountStep, generate_password

UPN = "bo.ek@politiker.example-region.se"
TAG = {"extensionAttribute15": "provisioner:test:P1"}
AFTER = {"accountEnabled": True, "userPrincipalName": UPN, "mailNickname": "pol.bo.ek",
         "displayName": "Bo Ek", "usageLocation": "SE", "onPremisesExtensionAttributes": TAG}


def apply(app: Sandbox, change: Change, run: PersonRun) -> Outcome:
    async def go() -> Outcome:
        async with Graph(Target(sandbox_app=app)) as graph:
            return await AccountStep().apply(graph, change, run)
    return asyncio.run(go())


def existing(app: Sandbox, tag: dict[str, Any]) -> str:
    doc = app.tenant.create_user({**AFTER, "onPremisesExtensionAttributes": tag,
                                  "passwordProfile": {"password": generate_password()}})
    return str(doc["id"])


def test_a_create_that_already_happened_is_recognised_as_ours(memory_sandbox: Sandbox) -> None:
    """A retried POST, or a run killed after the write: the account is there, with our tag."""
    user_id = existing(memory_sandbox, TAG)
    run = PersonRun("P1", UPN, None)
    change = Change("account", "P1", Action.CREATE, f"user:{UPN}", None, AFTER)
    assert apply(memory_sandbox, change, run) is Outcome.UNCHANGED
    assert run.user_id == user_id
    assert sum(1 for u in memory_sandbox.tenant.users.values() if u["userPrincipalName"] == UPN) == 1


def test_someone_elses_account_on_the_address_is_an_error(memory_sandbox: Sandbox) -> None:
    existing(memory_sandbox, {"extensionAttribute15": None})
    change = Change("account", "P1", Action.CREATE, f"user:{UPN}", None, AFTER)
    with pytest.raises(GraphError) as err:
        apply(memory_sandbox, change, PersonRun("P1", UPN, None))
    assert err.value.has_detail("ObjectConflict", "userPrincipalName")


def test_generated_passwords_meet_entras_complexity() -> None:
    for _ in range(50):
        pw = generate_password()
        assert len(pw) == 24
        assert any(c.islower() for c in pw) and any(c.isupper() for c in pw)
        assert any(c.isdigit() for c in pw) and any(not c.isalnum() for c in pw)
