"""Graph operations the steps need, as plain JSON in and out.

Requests are built by msgraph-sdk's request builders and sent through its request adapter
(auth, middleware); responses come back raw through a NativeResponseHandler and are parsed
as JSON (DESIGN.md decision 6: typed deserialisation costs ~8 ms an object). Writes carry
their JSON as a ``Body``, so what is sent is exactly what the plan shows; the sandbox, like
Graph, rejects a property name it does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog

from ..errors import AmbiguousOutcome, GraphError, NotReplicatedError, ThrottledError, TransportError
from ..heap import collector_off
from .batch import MAX_ITEMS, Item, batch_request
from .batch import payload as batch_payload
from .client import Target, build_adapter
from .pace import BUSY, OK, THROTTLED, AdaptiveLimit, WritePacer, service_of
from .retry import RetryPolicy
from .urls import expand

log = structlog.get_logger("provisioner.graph")
Json = dict[str, Any]
RETRYABLE = {429, 503, 504}  # for a batch's items (reads)
# Which answers are asked again, by kind of request. Reads, PUT, PATCH and DELETE are
# idempotent: any 5xx that may pass is retried. A POST whose repeat the tool recognises
# (a duplicate UPN, an existing member) is retried when Graph was busy or the answer was lost.
# A POST whose effect cannot be read back (sendMail, a new pass) only when Graph says it did
# not take it (429, 503); anything else is ambiguous and goes to a human.
IDEMPOTENT = frozenset({429, 500, 502, 503, 504})
REPEATABLE = frozenset({429, 503, 504})
ONCE = frozenset({429, 503})
AMBIGUOUS = frozenset({500, 502, 504})
# How long after this process creates an object a 404 about it is taken for replication lag
# (Entra's replicas usually catch up within seconds).
REPLICATION_WINDOW = 120.0
PAGE = 999
MEMBERS_PER_WRITE = 20  # members@odata.bind's limit
SIGNIN_USERS_PER_QUERY = 10  # people per auditLogs/signIns $filter (a short or-chain)


class Body:
    """A request body as the plain JSON the plan shows, for msgraph-sdk's request builders.
    The typed models (``User(additional_data=...)``) would send the same JSON, but building
    one sets each of a hundred-odd properties through the backing store: about a millisecond
    of CPU per account created, the largest share of a write's cost on our side."""

    def __init__(self, data: Json) -> None:
        self.additional_data = data

    def serialize(self, writer: Any) -> None:
        writer.write_additional_data_value(self.additional_data)

    def get_field_deserializers(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class BatchResult:
    status: int
    body: Any
    headers: dict[str, str]


class Graph:
    def __init__(self, target: Target, *, retry: RetryPolicy | None = None,
                 timeout: float = 60.0, concurrency: int = 8) -> None:
        from msgraph import GraphServiceClient

        self.adapter, self._transport = build_adapter(target, timeout=timeout,
                                                      max_connections=max(32, 3 * concurrency))
        self.client = GraphServiceClient(request_adapter=self.adapter)
        self.retry = retry or RetryPolicy()
        self.stats: Counter[str] = Counter()
        # Requests in flight per service: at most ``concurrency``, fewer under pressure.
        self.limits = {name: AdaptiveLimit(concurrency) for name in ("entra", "exchange", "intune")}
        # Entra's write quota is documented: writes are paced to it (the limits above remain
        # for what is not documented, and for answers that say otherwise).
        self.pacer = WritePacer()
        # ids and UPNs (lower case) of users this process created or tried to, with when
        self._fresh: dict[str, float] = {}
        # Per-request metadata, set on a view (``for_change``): which requests go first when
        # the adaptive limit makes them queue, and where the answers' request-ids are kept.
        self.priority = 0
        self.request_ids: list[str] | None = None
        self._together: _Coalesced | None = None  # set on a view: see ``coalescing``

    def for_change(self, priority: int, request_ids: list[str] | None = None) -> Graph:
        """This Graph (same connections, limits and counters) with the metadata of one change's
        requests: the apply loop puts a person's later changes before other people's first
        ones, and keeps the request-ids Graph answered with for the journal."""
        view = copy.copy(self)
        view.priority, view.request_ids = priority, request_ids
        return view

    def coalescing(self) -> Graph:
        """This Graph, except that requests of one kind started together go to Graph together:
        up to 20 in one $batch, the batches concurrent. The kinds are user reads, account
        creates and deletes, and mailbox settings (a repeated create is answered ObjectConflict,
        which the account step resolves; a repeated delete 404; the others are idempotent).
        For many independent requests at once: the undo of a whole rollout is judged from one
        read per account, apply creates a wave's accounts and sets their mailboxes this way,
        and rollback deletes them. Each request keeps its own
        answer and its own error; one that Graph may not have seen is sent again alone."""
        view = copy.copy(self)
        view._together = _Coalesced(self)
        return view

    async def _coalesced(self, kind: str, info: Any) -> BatchResult | None:
        """``info``'s answer from a $batch with the requests of its kind started in this turn of
        the event loop; None when it is to go alone (no coalescing, or nothing to go with)."""
        if self._together is None:
            return None
        result = await self._together.call(kind, info, self)
        if result is not None and self.request_ids is not None and result.headers.get("request-id"):
            self.request_ids.append(result.headers["request-id"])
        return result

    def _again(self, result: BatchResult, info: Any) -> bool:
        """Is this $batch answer one that a request sent alone would be asked again for (Graph
        was busy after the batch's own rounds, or a 404 about an object made moments ago)? It
        is then sent alone, with the retry policy: every kind coalesced may be repeated."""
        if result.status in (REPEATABLE if info.http_method.name == "POST" else IDEMPOTENT):
            return True
        return result.status == 404 and self._about_fresh(dict(info.path_parameters or {}), info.content)

    def _item(self, result: BatchResult, info: Any) -> Any:
        """A $batch item's body, or its error raised as ``send`` would raise it."""
        if result.status < 400:
            return result.body
        method = info.http_method.name
        raise _error(result.status, result.body, result.headers, "", method, _path(info), frozenset())

    async def _json_together(self, kind: str, request: Callable[[], Any]) -> Any:
        """``request()``'s answer: coalesced with others of ``kind`` where this view coalesces,
        else (or when the batch's answer says so) alone."""
        info = request()
        together = await self._coalesced(kind, info)
        if together is None or self._again(together, info):
            return await self.json(info if together is None else request())
        return self._item(together, info)

    async def __aenter__(self) -> Graph:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.adapter._http_client.aclose()
        await self._transport.aclose()

    # -- sending ---------------------------------------------------------------------------
    async def send(self, request_info: Any, *, once: bool = False,
                   quota: tuple[str, int] | None = None) -> httpx.Response:
        """Send one request with retries; raise GraphError for an error answer. ``once``: the
        request's effect cannot be read back, so an ambiguous answer is never repeated."""
        from kiota_abstractions.native_response_handler import NativeResponseHandler
        from kiota_http.middleware.options import ResponseHandlerOption

        request_info.add_request_options([ResponseHandlerOption(NativeResponseHandler())])
        params = _expand_once(request_info, self.adapter.base_url)
        method = request_info.http_method.name
        retryable = ONCE if once else REPEATABLE if method == "POST" else IDEMPOTENT

        service, writes = quota or _service(request_info)  # a $batch's: from its items (``batch``)
        limit = self.limits[service]

        async def attempt() -> httpx.Response:
            self.stats["requests"] += 1
            if writes:
                await self.pacer.take(writes)
            started, signal = await limit.acquire(self.priority), BUSY
            try:
                response: httpx.Response = await self.adapter.send_primitive_async(
                    request_info, "bytes", {})
                signal = _signal(response)
                if writes:
                    self.pacer.observe(response.status_code,
                                       response.headers.get("x-ms-throttle-limit-percentage"))
            except httpx.TransportError as exc:
                self.stats["transport_errors"] += 1
                if once:
                    raise AmbiguousOutcome(0, f"{method} {_path(request_info)}: no answer"
                                           f" ({type(exc).__name__})") from exc
                raise TransportError(f"{method} {_path(request_info)}: {type(exc).__name__}:"
                                     f" {exc}") from exc
            finally:
                limit.release(started, signal)
                if writes:
                    self.pacer.answered()
            seen = self.request_ids
            if seen is not None and response.headers.get("request-id"):
                seen.append(response.headers["request-id"])
            if once and response.status_code in AMBIGUOUS:
                raise AmbiguousOutcome(response.status_code, f"{method} {_path(request_info)}:"
                                       f" {response.status_code} {response.reason_phrase}")
            if response.status_code >= 400:
                error = _response_error(response, method, _path(request_info), retryable)
                if error.status == 404 and self._about_fresh(params, request_info.content):
                    raise NotReplicatedError(404, error.code, error.message, request_id=error.request_id,
                                             method=method, path=error.path)
                raise error
            return response

        def on_retry(exc: BaseException, wait: float) -> None:
            self.stats["retries"] += 1
            if isinstance(exc, ThrottledError) and exc.status == 429:
                self.stats["throttled"] += 1
            if isinstance(exc, NotReplicatedError):
                self.stats["not_replicated"] += 1
            log.debug("graph.retry", method=method, path=_path(request_info),
                      error=getattr(exc, "code", type(exc).__name__), wait=round(wait, 3))

        return await self.retry.run(attempt, on_retry)

    def _about_fresh(self, params: dict[str, Any], content: bytes | None) -> bool:
        """Does the request name (in its path or body) an object made here moments ago?"""
        now = time.monotonic()
        for key in [k for k, t in self._fresh.items() if now - t >= REPLICATION_WINDOW]:
            del self._fresh[key]  # in place: views of this Graph share the dict
        if not self._fresh:
            return False
        text = " ".join(str(v).lower() for v in params.values()) + " " + \
            (content or b"").decode("utf-8", "replace").lower()
        return any(key in text for key in self._fresh)

    async def json(self, request_info: Any) -> Any:
        response = await self.send(request_info)
        return orjson.loads(response.content) if response.content else None

    async def pages(self, request_info: Any, builder: Any) -> AsyncIterator[list[Json]]:
        """Follow @odata.nextLink whole until it is absent. The next page is asked for as soon
        as its link is in hand (`_next_link`, from the reply's bytes), and this page decoded and
        used while Graph makes that one: pages come one after another, and the time Graph takes
        for a page is no longer added to the time the tool takes for the one before."""
        response = await self.send(request_info)
        ahead: asyncio.Future[httpx.Response] | None = None
        try:
            while True:
                guess = _next_link(response.content)
                if guess:
                    ahead = self._read_ahead(builder, guess)
                    await _let_it_go(ahead)
                body = orjson.loads(response.content) if response.content else {}
                link = body.get("@odata.nextLink")
                if link != guess:  # the reply's bytes said otherwise than its JSON (never seen)
                    await _cancel(ahead)
                    ahead = self._read_ahead(builder, link) if link else None
                yield list(body.get("value", []))
                if ahead is None:
                    return
                response, ahead = await ahead, None
        finally:
            await _cancel(ahead)

    def _read_ahead(self, builder: Any, link: str) -> asyncio.Future[httpx.Response]:
        return asyncio.ensure_future(self.send(builder.with_url(link).to_get_request_information()))

    async def collect(self, request_info: Any, builder: Any) -> list[Json]:
        """Every item of a collection, all pages. The cycle collector is off meanwhile: a
        directory's pages build a million objects and no cycles, and it would look through
        all of them again each time a few thousand more came (a seventh of reading 50,000)."""
        items: list[Json] = []
        with collector_off():
            async for page in self.pages(request_info, builder):
                items.extend(page)
        return items

    async def batch(self, requests: Sequence[Any]) -> list[BatchResult]:
        """Independent requests in $batch (20 a time); throttled items are sent again in a
        new batch after the longest Retry-After, as Graph asks. Items are built by
        ``batch.py``, not msgraph-core (its item URLs are absolute: see there)."""
        results: dict[int, BatchResult] = {}
        quotas = [_service(r) for r in requests]
        pending = list(range(len(requests)))
        for _round in range(self.retry.attempts):
            if not pending:
                break
            retry_wait = 0.0
            for start in range(0, len(pending), MAX_ITEMS):
                chunk = pending[start:start + MAX_ITEMS]
                body = batch_payload([(str(i), Item(requests[i])) for i in chunk])
                self.stats["batches"] += 1
                response = await self.send(batch_request(body), quota=_together([quotas[i] for i in chunk]))
                outer = response.headers.get("request-id")
                for entry in orjson.loads(response.content).get("responses", []):
                    headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
                    if outer:  # an item's own request-id if Graph gave one, else the batch's
                        headers.setdefault("request-id", outer)
                    if quotas[int(entry["id"])][1]:  # an Entra write: what the pacer learns
                        self.pacer.observe(entry["status"], headers.get("x-ms-throttle-limit-percentage"))
                    results[int(entry["id"])] = BatchResult(entry["status"], entry.get("body"), headers)
                    if entry["status"] in RETRYABLE:
                        self.stats["throttled" if entry["status"] == 429 else "retries"] += 1
                        retry_wait = max(retry_wait, _retry_after(headers) or self.retry.initial)
            pending = [i for i in pending if results[i].status in RETRYABLE]
            if pending:
                await asyncio.sleep(min(retry_wait, self.retry.maximum))
        return [results[i] for i in range(len(requests))]

    # -- users -----------------------------------------------------------------------------
    def _user(self, key: str) -> Any:
        return self.client.users.by_user_id(key)

    async def list_users(self, select: Sequence[str], filter: str | None = None) -> list[Json]:
        return await self.collect(self._users_request(select, filter), self.client.users)

    def user_pages(self, select: Sequence[str]) -> AsyncIterator[list[Json]]:
        """Every user, page by page (`pages`: the next is read while the caller uses this one)."""
        return self.pages(self._users_request(select), self.client.users)

    def _users_request(self, select: Sequence[str], filter: str | None = None) -> Any:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.users_request_builder import UsersRequestBuilder

        params = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            select=list(select), filter=filter, top=PAGE)
        return self.client.users.to_get_request_information(RequestConfiguration(query_parameters=params))

    async def create_user(self, body: Json) -> Json:
        if body.get("userPrincipalName"):
            self._fresh[str(body["userPrincipalName"]).lower()] = time.monotonic()
        created = dict(await self._json_together("create_user", lambda: self.client.users
                                                 .to_post_request_information(Body(dict(body)))))
        self._fresh[created["id"].lower()] = time.monotonic()
        return created

    def user_request(self, key: str, select: Sequence[str]) -> Any:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

        params = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=list(select))
        return self._user(key).to_get_request_information(RequestConfiguration(query_parameters=params))

    async def get_user(self, key: str, select: Sequence[str]) -> Json | None:
        try:
            return dict(await self._json_together("get_user",
                                                  lambda: self.user_request(key, select)))
        except GraphError as exc:
            if exc.status == 404:
                return None
            raise

    async def update_user(self, user_id: str, body: Json) -> None:
        await self.send(self._user(user_id).to_patch_request_information(
            Body(dict(body))))

    async def delete_user(self, user_id: str) -> None:
        """A soft delete (the account waits 30 days in deleted items). Coalesced like creates
        (a rollback deletes a wave's accounts together): a repeat is answered 404, gone."""
        await self._json_together("delete_user", lambda: self._user(user_id).to_delete_request_information())

    async def restore_user(self, user_id: str) -> Json:
        builder = self.client.directory.deleted_items.by_directory_object_id(user_id).restore
        return dict(await self.json(builder.to_post_request_information()))

    # -- licences and mailboxes --------------------------------------------------------------
    async def subscribed_skus(self) -> list[Json]:
        return list((await self.json(self.client.subscribed_skus.to_get_request_information()))["value"])

    async def assign_license(self, user_id: str, add: Sequence[Json], remove: Sequence[str]) -> None:
        body = Body({"addLicenses": list(add), "removeLicenses": list(remove)})
        await self.send(self._user(user_id).assign_license.to_post_request_information(body))

    def mailbox_settings_request(self, user_id: str) -> Any:
        return self._user(user_id).mailbox_settings.to_get_request_information()

    async def get_mailbox_settings(self, user_id: str) -> Json:
        return dict(await self.json(self.mailbox_settings_request(user_id)))

    async def update_mailbox_settings(self, user_id: str, body: Json) -> None:
        await self._json_together("update_mailbox_settings", lambda: self._user(user_id).mailbox_settings
                                  .to_patch_request_information(Body(dict(body))))

    # -- first sign-in and guides -----------------------------------------------------------
    def _taps(self, user_id: str) -> Any:
        return self._user(user_id).authentication.temporary_access_pass_methods

    async def create_access_pass(self, user_id: str, lifetime_minutes: int, usable_once: bool,
                                 start: str | None = None) -> Json:
        """A Temporary Access Pass, valid from ``start`` (ISO 8601, UTC) or now; the pass is in
        the answer, once, and nowhere else."""
        data: Json = {"lifetimeInMinutes": lifetime_minutes, "isUsableOnce": usable_once}
        if start:
            data["startDateTime"] = start
        body = Body(data)
        info = self._taps(user_id).to_post_request_information(body)
        return dict((await self.send(info, once=True)).json())

    async def access_pass_policy(self) -> Json:
        """The tenant's Temporary Access Pass policy (authentication methods policy)."""
        return await self.method_configuration("TemporaryAccessPass")

    async def method_configuration(self, method: str) -> Json:
        """One method's configuration in the authentication methods policy (MicrosoftAuthenticator,
        Fido2, TemporaryAccessPass, ...)."""
        builder = (self.client.policies.authentication_methods_policy.authentication_method_configurations
                   .by_authentication_method_configuration_id(method))
        return dict(await self.json(builder.to_get_request_information()))

    async def access_passes(self, user_id: str) -> list[Json]:
        """The user's passes; none when the user is gone (404)."""
        try:
            return list((await self.json(self._taps(user_id).to_get_request_information()))["value"])
        except GraphError as exc:
            if exc.status == 404:
                return []
            raise

    async def delete_access_pass(self, user_id: str, method_id: str) -> None:
        builder = self._taps(user_id).by_temporary_access_pass_authentication_method_id(method_id)
        await self.send(builder.to_delete_request_information())

    # -- Conditional Access ------------------------------------------------------------------
    async def conditional_access_policies(self) -> list[Json]:
        builder = self.client.identity.conditional_access.policies
        return await self.collect(builder.to_get_request_information(), builder)

    async def named_locations(self) -> list[Json]:
        builder = self.client.identity.conditional_access.named_locations
        return await self.collect(builder.to_get_request_information(), builder)

    async def what_if(self, body: Json) -> list[Json]:
        """Conditional Access What If for one sign-in: every policy with policyApplies."""

        info = self.client.identity.conditional_access.evaluate.to_post_request_information(
            Body(body))
        return list((await self.json(info)).get("value", []))

    async def send_mail(self, sender: str, to: str, subject: str, html: str) -> None:
        body = Body({
            "message": {"subject": subject, "body": {"contentType": "HTML", "content": html},
                        "toRecipients": [{"emailAddress": {"address": to}}]},
            "saveToSentItems": False})
        await self.send(self._user(sender).send_mail.to_post_request_information(body), once=True)

    # -- groups ----------------------------------------------------------------------------
    async def list_groups(self, select: Sequence[str]) -> list[Json]:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder

        params = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
            select=list(select), top=PAGE)
        request_info = self.client.groups.to_get_request_information(
            RequestConfiguration(query_parameters=params))
        return await self.collect(request_info, self.client.groups)

    async def create_group(self, body: Json) -> Json:
        return dict(await self.json(self.client.groups.to_post_request_information(
            Body(dict(body)))))

    async def get_group(self, group_id: str, select: Sequence[str]) -> Json | None:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder

        params = GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(select=list(select))
        try:
            return dict(await self.json(self.client.groups.by_group_id(group_id).to_get_request_information(
                RequestConfiguration(query_parameters=params))))
        except GraphError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete_group(self, group_id: str) -> None:
        await self.send(self.client.groups.by_group_id(group_id).to_delete_request_information())

    async def assign_group_license(self, group_id: str, add: Sequence[Json], remove: Sequence[str]) -> None:
        """Group-based licensing: every member gets the group's licences (group-assignlicense)."""

        body = Body({"addLicenses": list(add), "removeLicenses": list(remove)})
        await self.send(self.client.groups.by_group_id(group_id).assign_license
                        .to_post_request_information(body))

    async def group_member_ids(self, group_id: str) -> list[str]:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.groups.item.members.members_request_builder import (
            MembersRequestBuilder,
        )

        builder = self.client.groups.by_group_id(group_id).members
        params = MembersRequestBuilder.MembersRequestBuilderGetQueryParameters(select=["id"], top=PAGE)
        request_info = builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        return [m["id"] for m in await self.collect(request_info, builder)]

    def member_of_request(self, user_id: str) -> Any:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.member_of.member_of_request_builder import (
            MemberOfRequestBuilder,
        )

        params = MemberOfRequestBuilder.MemberOfRequestBuilderGetQueryParameters(select=["id"], top=PAGE)
        return self._user(user_id).member_of.to_get_request_information(
            RequestConfiguration(query_parameters=params))

    async def member_of_ids(self, user_id: str) -> set[str]:
        builder = self._user(user_id).member_of
        return {m["id"] for m in await self.collect(self.member_of_request(user_id), builder)}

    # -- Intune --------------------------------------------------------------------------------
    async def list_managed_devices(self, select: Sequence[str]) -> list[Json]:
        """Every managed device. Intune ignores a $filter it does not support and returns all
        devices, so we never rely on one: callers index and re-check on our side."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.device_management.managed_devices.managed_devices_request_builder import (
            ManagedDevicesRequestBuilder,
        )

        builder = self.client.device_management.managed_devices
        params = ManagedDevicesRequestBuilder.ManagedDevicesRequestBuilderGetQueryParameters(
            select=list(select), top=PAGE)
        request_info = builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        return await self.collect(request_info, builder)

    async def list_devices(self, select: Sequence[str]) -> list[Json]:
        """Entra device objects (what device groups hold as members)."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.devices.devices_request_builder import DevicesRequestBuilder

        params = DevicesRequestBuilder.DevicesRequestBuilderGetQueryParameters(select=list(select), top=PAGE)
        request_info = self.client.devices.to_get_request_information(
            RequestConfiguration(query_parameters=params))
        return await self.collect(request_info, self.client.devices)

    async def device_categories(self) -> list[Json]:
        builder = self.client.device_management.device_categories
        return list((await self.json(builder.to_get_request_information()))["value"])

    def _managed(self, device_id: str) -> Any:
        return self.client.device_management.managed_devices.by_managed_device_id(device_id)

    async def get_managed_device(self, device_id: str) -> Json | None:
        try:
            return dict(await self.json(self._managed(device_id).to_get_request_information()))
        except GraphError as exc:
            if exc.status == 404:
                return None
            raise

    async def sync_device(self, device_id: str) -> None:
        await self.send(self._managed(device_id).sync_device.to_post_request_information())

    async def set_device_category(self, device_id: str, category_id: str | None) -> None:
        """PUT (or DELETE) beta's managedDevices/{id}/deviceCategory/$ref: v1.0 documents no way
        to set a device's category (microsoft-graph-docs-contrib #9142); this is the form Intune
        admins use. msgraph-sdk is v1.0 only, so the request is built here."""
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation

        template = "{+baseurl}/deviceManagement/managedDevices/{id}/deviceCategory/$ref"
        info = RequestInformation(Method.DELETE if category_id is None else Method.PUT, template)
        beta = self.adapter.base_url.rsplit("/", 1)[0] + "/beta"
        info.url = f"{beta}/deviceManagement/managedDevices/{device_id}/deviceCategory/$ref"
        if category_id is not None:
            info.headers.try_add("Content-Type", "application/json")
            info.content = json.dumps({"@odata.id": "https://graph.microsoft.com/beta/deviceManagement"
                                       f"/deviceCategories/{category_id}"}).encode()
        await self.send(info)

    # -- tenant readiness ------------------------------------------------------------------
    async def domains(self) -> list[Json]:
        return list((await self.json(self.client.domains.to_get_request_information()))["value"])

    async def _service_principal(self, app_id: str, select: Sequence[str]) -> Json | None:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.service_principals.service_principals_request_builder import (
            ServicePrincipalsRequestBuilder,
        )

        from .odata import eq

        params = ServicePrincipalsRequestBuilder.ServicePrincipalsRequestBuilderGetQueryParameters(
            filter=eq("appId", app_id), select=list(select))
        body = await self.json(self.client.service_principals.to_get_request_information(
            RequestConfiguration(query_parameters=params)))
        found = body.get("value", [])
        return dict(found[0]) if found else None

    async def granted_app_permissions(self, client_id: str, resource_app_id: str) -> set[str] | None:
        """Names of the application permissions (app roles) of ``resource_app_id`` granted to the
        app ``client_id``; None when the app has no service principal in the tenant."""
        mine, resource = await asyncio.gather(self._service_principal(client_id, ("id", "appId")),
                                              self._service_principal(resource_app_id,
                                                                      ("id", "appId", "appRoles")))
        if mine is None:
            return None
        if resource is None:
            return set()
        roles = {r["id"]: r["value"] for r in resource.get("appRoles") or []}
        builder = self.client.service_principals.by_service_principal_id(mine["id"]).app_role_assignments
        granted: set[str] = set()
        async for page in self.pages(builder.to_get_request_information(), builder):
            granted.update(roles[a["appRoleId"]] for a in page
                           if a.get("resourceId") == resource["id"] and a.get("appRoleId") in roles)
        return granted

    async def extension_properties(self, app_id: str) -> set[str]:
        """Names of the directory extensions registered on the app ``app_id``; none when the
        tenant has no such application."""
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation

        # msgraph-sdk's applications_with_app_id() builder has no extensionProperties.
        info = RequestInformation(Method.GET, "{+baseurl}/applications(appId='{appId}')/extensionProperties",
                                  {"appId": app_id})
        info.headers.try_add("Accept", "application/json")
        try:
            return {e["name"] for e in (await self.json(info)).get("value", [])}
        except GraphError as exc:
            if exc.status == 404:
                return set()
            raise

    async def app_directory_roles(self, client_id: str) -> set[str] | None:
        """Display names of the directory roles the app ``client_id`` holds; None when it has
        no service principal in the tenant."""
        mine = await self._service_principal(client_id, ("id", "appId"))
        if mine is None:
            return None
        builder = self.client.service_principals.by_service_principal_id(mine["id"]).member_of
        found = await self.collect(builder.to_get_request_information(), builder)
        return {o.get("displayName", "") for o in found
                if o.get("@odata.type") == "#microsoft.graph.directoryRole"}

    # -- sign-in logs ----------------------------------------------------------------------
    async def sign_ins(self, since: str, upns: Sequence[str]) -> list[Json]:
        """These people's sign-ins from ``since`` (ISO 8601, UTC) on: Graph's auditLogs/signIns,
        filtered by user a few at a time and paged, never the whole tenant's log."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.audit_logs.sign_ins.sign_ins_request_builder import (
            SignInsRequestBuilder,
        )

        from .odata import eq

        builder = self.client.audit_logs.sign_ins
        out: list[Json] = []
        for start in range(0, len(upns), SIGNIN_USERS_PER_QUERY):
            who = " or ".join(eq("userPrincipalName", u) for u in upns[start:start + SIGNIN_USERS_PER_QUERY])
            params = SignInsRequestBuilder.SignInsRequestBuilderGetQueryParameters(
                filter=f"createdDateTime ge {since} and ({who})", top=PAGE)
            out += await self.collect(builder.to_get_request_information(
                RequestConfiguration(query_parameters=params)), builder)
        return out

    async def add_member(self, group_id: str, member_id: str) -> None:
        from msgraph.generated.models.reference_create import ReferenceCreate

        ref = ReferenceCreate(odata_id=f"https://graph.microsoft.com/v1.0/directoryObjects/{member_id}")
        await self.send(self.client.groups.by_group_id(group_id).members.ref
                        .to_post_request_information(ref))

    async def bind_members(self, group_id: str, member_ids: Sequence[str]) -> None:
        """Up to 20 members in one write (PATCH members@odata.bind); all or none are added."""

        if not 0 < len(member_ids) <= MEMBERS_PER_WRITE:
            raise ValueError(f"bind_members: 1 to {MEMBERS_PER_WRITE} members, not {len(member_ids)}")
        refs = [f"https://graph.microsoft.com/v1.0/directoryObjects/{m}" for m in member_ids]
        await self.send(self.client.groups.by_group_id(group_id).to_patch_request_information(
            Body({"members@odata.bind": refs})))

    async def remove_member(self, group_id: str, member_id: str) -> None:
        # Always through /$ref: without it Graph deletes the user itself.
        builder = self.client.groups.by_group_id(group_id).members.by_directory_object_id(member_id)
        await self.send(builder.ref.to_delete_request_information())


class _Coalesced:
    """Requests queued in one turn of the event loop, by kind and priority, sent as $batch
    requests of 20; a request with nothing to go with is left to go alone."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.queues: dict[tuple[str, int], list[tuple[Any, asyncio.Future[BatchResult | None]]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def call(self, kind: str, info: Any, view: Graph) -> BatchResult | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchResult | None] = loop.create_future()
        if not self.queues:
            loop.call_soon(self._flush)  # after every request started in this turn has queued
        self.queues.setdefault((kind, view.priority), []).append((info, future))
        return await future

    def _flush(self) -> None:
        queues, self.queues = self.queues, {}
        for (_, priority), queued in queues.items():
            if len(queued) == 1:
                queued[0][1].set_result(None)
                continue
            for start in range(0, len(queued), MAX_ITEMS):
                task = asyncio.ensure_future(self._send(queued[start:start + MAX_ITEMS], priority))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _send(self, items: list[tuple[Any, asyncio.Future[BatchResult | None]]], priority: int) -> None:
        try:
            results = await self.graph.for_change(priority).batch([info for info, _ in items])
        except BaseException as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(items, results, strict=True):
            if not future.done():
                future.set_result(result)


def _expand_once(request_info: Any, base_url: str) -> dict[str, Any]:
    """Give the request its URL now, once (see urls.py): kiota's RequestInformation.url
    expands the URI template on every read, three a request. Setting the URL keeps it, but
    clears the path parameters: they are returned for our own use."""
    params = dict(request_info.path_parameters or {})
    # No path parameters: its URL was set already (set_device_category's beta URL).
    if request_info.url_template and params and not params.get(request_info.RAW_URL_KEY):
        request_info.url = expand(request_info, base_url)
    return params


def _path(request_info: Any) -> str:
    template = request_info.url_template or ""
    return template.replace("{+baseurl}", "").split("{")[0] or "/"


def _service(request_info: Any) -> tuple[str, int]:
    """The service whose quotas a request counts against, and how many Entra writes it makes:
    one for any method but GET (as the quota counts them)."""
    service = service_of((request_info.url_template or "").replace("{+baseurl}", ""))
    return service, int(service == "entra" and request_info.http_method.name != "GET")


def _together(quotas: Sequence[tuple[str, int]]) -> tuple[str, int]:
    """A $batch's: its items are counted one by one (learn.microsoft.com/graph/json-batching:
    each is throttled as itself), and it waits in the line of its items' service."""
    services = {service for service, _ in quotas}
    return services.pop() if len(services) == 1 else "entra", sum(writes for _, writes in quotas)


def _signal(response: httpx.Response) -> str:
    """What an answer says about Graph's load, for the adaptive limit."""
    if response.status_code in (429, 503):
        return THROTTLED
    usage = response.headers.get("x-ms-throttle-limit-percentage")
    try:
        return BUSY if usage is not None and float(usage) >= 0.8 else OK
    except ValueError:
        return OK


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("retry-after") if headers else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _response_error(response: httpx.Response, method: str, path: str,
                    retryable: frozenset[int] = REPEATABLE) -> GraphError:
    try:
        body = response.json()
    except (json.JSONDecodeError, AttributeError):
        body = None
    return _error(response.status_code, body, response.headers, response.reason_phrase, method, path,
                  retryable)


def _error(status: int, body: Any, headers: Any, reason: str, method: str, path: str,
           retryable: frozenset[int]) -> GraphError:
    """The error an answer (or a $batch item's) carries, as GraphError, or ThrottledError
    when it is one that is asked again."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or f"HTTP{status}")
    message = str(error.get("message") or reason or f"HTTP {status}")
    kwargs: dict[str, Any] = {"request_id": headers.get("request-id"), "details": error.get("details") or [],
                              "method": method, "path": path}
    if status in retryable:
        return ThrottledError(status, code, message, retry_after=_retry_after(headers), **kwargs)
    return GraphError(status, code, message, **kwargs)


_NEXT_LINK = re.compile(rb'"@odata\.nextLink"\s*:\s*("(?:[^"\\]|\\.)*")')


def _next_link(content: bytes) -> str | None:
    """The @odata.nextLink of a page, found in its bytes without decoding the page (a tenth of a
    millisecond for a page of 999 users, against five to decode it). Only a key is preceded by
    an unescaped quote (in a string it is ``\\"``); `pages` checks the decoded page says the same."""
    found = _NEXT_LINK.search(content, max(content.find(b'"@odata.nextLink"'), 0))
    try:
        return orjson.loads(found[1]) if found else None
    except orjson.JSONDecodeError:  # not JSON after all: the decoded page will say
        return None


async def _let_it_go(request: asyncio.Future[Any], turns: int = 20) -> None:
    """Let a request just started get onto the wire before the caller's work (decoding a
    page) keeps the event loop busy: its first steps (the pool's lock, the connection) each
    take a turn of the loop. Twenty turns (a fraction of a millisecond) were enough for the
    served sandbox; two were not (measured: reading 50,000 users, median 1.85 s with 2, 1.48 s
    with 20 or 60). A request not on the wire by then still goes, later."""
    for _ in range(turns):
        if request.done():
            return
        await asyncio.sleep(0)


async def _cancel(request: asyncio.Future[Any] | None) -> None:
    """A page read ahead and not wanted (the caller stopped, or the link was other)."""
    if request is not None and not request.done():
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await request
    elif request is not None and not request.cancelled():
        request.exception()  # retrieved: an error of a page nobody wanted is not logged as lost

