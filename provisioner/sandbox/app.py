"""HTTP face of the sandbox tenant: a Starlette app speaking the Graph v1.0 subset we use.

Every request is authenticated (any bearer token; each token is one app + tenant pair for
throttling), delayed by the configured latency, may fail with the configured 5xx fault
rate, is charged against Entra's resource-unit and write quotas (429 with Retry-After and
Graph's error body when over), and is counted by method so tests can prove plan purity.
``$batch`` runs each item through the same path, so items are throttled one by one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import authz, devices
from . import conditional_access as ca
from .odata_filter import FilterError, compile_filter
from .signins import SIGNIN_FILTERABLE
from .tenant import (
    DIRECTORY_EXTENSION,
    GROUP_FILTERABLE,
    USER_DEFAULT_SELECT,
    USER_FILTERABLE,
    USER_READONLY,
    USER_WRITABLE,
    ApiError,
    AuthMethods,
    Tenant,
    bad_request,
    not_found,
    send_mail,
)
from .throttle import WRITE_LIMIT, Limiter, Verdict, is_entra, request_cost, ru_limit_for, service_of

MUTATING = ("POST", "PATCH", "PUT", "DELETE")
# POSTs that only read (conditionalaccessroot-evaluate needs only Policy.Read.ConditionalAccess):
# never counted as writes, never made-but-unanswered.
READ_ACTIONS = ("/identity/conditionalAccess/evaluate",)
USER_PROPERTIES = USER_WRITABLE | USER_READONLY | {"mail"}
GROUP_PROPERTIES = {"id", "displayName", "description", "mailNickname", "mailEnabled",
                    "securityEnabled", "groupTypes", "assignedLicenses", "createdDateTime", "mail",
                    "visibility", "proxyAddresses", "renewedDateTime", "securityIdentifier",
                    "membershipRule", "membershipRuleProcessingState",
                    "deletedDateTime", "isAssignableToRole"}
MAX_BATCH = 20


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str  # relative to /v1.0, e.g. "/users/abc"
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any
    base: str  # absolute ".../v1.0" for @odata.nextLink


Handler = Callable[[Call, re.Match[str]], Reply]
# The properties asked for (None: all) -> how a stored object shows them.
View = Callable[["list[str] | None"], Callable[[dict[str, Any]], dict[str, Any]]]


def _as_stored(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


class Sandbox:
    """The ASGI app plus the routing table; ``tenant`` holds the state."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self._limiters: dict[str, Limiter] = {}
        # Every successful write, as (method, path, body without secrets): lets a test prove
        # that no completed write was ever repeated. In memory only; cleared with the app.
        self.writes: list[tuple[str, str, str]] = []
        self._rng = random.Random(tenant.config.get("seed", 0))
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            (m, re.compile(f"^{p}/?$", re.IGNORECASE), h) for m, p, h in self._table()
        ]
        # The store keeps its request counters in memory between writes; flush them when the
        # server shuts down (uvicorn re-raises SIGTERM after the lifespan ends, so nothing
        # after uvicorn.run would run).
        self.app = Starlette(routes=[Route("/_sandbox/counters", self._counters, methods=["GET"]),
                                     Route("/{path:path}", self._endpoint,
                                           methods=["GET", "POST", "PATCH", "PUT", "DELETE"])],
                             lifespan=self._lifespan)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        yield
        self.tenant.store.flush()

    # -- HTTP ----------------------------------------------------------------------------
    async def _counters(self, request: Request) -> Response:
        """The sandbox's own request counters (not a Graph endpoint): what a benchmark reads
        before it stops the server."""
        return Response(json.dumps(dict(self.tenant.store.counters)), media_type="application/json")

    async def _endpoint(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        path = "/" + request.path_params["path"]
        version = path.split("/")[1]
        if version not in ("v1.0", "beta"):
            return self._render(Reply(404, ApiError(404, "BadRequest", "Invalid version.").body(
                request_id)), request_id)
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or len(auth) < 8:
            err = ApiError(401, "InvalidAuthenticationToken", "Access token is empty.")
            return self._render(Reply(401, err.body(request_id)), request_id)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            err = bad_request("Unable to read JSON request payload. Please ensure Content-Type"
                              " header is set and payload is of valid JSON format.")
            return self._render(Reply(400, err.body(request_id)), request_id)
        base = f"{request.url.scheme}://{request.url.netloc}/{version}"
        call = Call(request.method, path[len(version) + 1:] or "/", dict(request.query_params),
                    {k.lower(): v for k, v in request.headers.items()}, body, base)
        latency = float(self.tenant.config.get("latency_ms", 0)) / 1000
        if latency:
            await asyncio.sleep(latency)
        if call.path.rstrip("/") == "/$batch" and call.method == "POST":
            self.tenant.store.count("BATCH")
            reply = await self._batch(call, auth)
        else:
            reply = self.handle(call, auth)
        return self._render(reply, request_id)

    def _render(self, reply: Reply, request_id: str) -> Response:
        headers = {"request-id": request_id, "client-request-id": request_id, **reply.headers}
        if reply.body is None:
            return Response(status_code=reply.status, headers=headers)
        if isinstance(reply.body, dict) and "error" in reply.body:
            ids = {"request-id": request_id, "client-request-id": request_id}
            reply.body["error"]["innerError"].update(ids)
        return Response(orjson.dumps(reply.body, option=orjson.OPT_NON_STR_KEYS), status_code=reply.status,
                        headers=headers,
                        media_type="application/json;odata.metadata=minimal;charset=utf-8")

    # -- one request (also one $batch item) ----------------------------------------------
    def handle(self, call: Call, token: str) -> Reply:
        store = self.tenant.store
        self.tenant.process_dynamic()  # Entra's own work, due by now
        fault_rate = float(self.tenant.config.get("fault_rate", 0))
        if fault_rate and self._rng.random() < fault_rate:
            store.count("faults")
            err = ApiError(503, "serviceNotAvailable", "The service is temporarily unavailable.")
            return Reply(503, err.body(""), {"Retry-After": self._seconds(1)})
        cost, is_write = request_cost(call.method, call.path, call.query)
        entra = is_entra(call.path)
        verdict = self._limiter(token).admit(cost, is_write) if entra else Verdict({})
        if verdict.retry_after is not None:
            store.count("throttled")
            err = ApiError(429, "TooManyRequests", "Please retry again later.")
            headers = {**verdict.headers, "Retry-After": _num(verdict.retry_after),
                       "x-ms-throttle-scope": "Tenant_Application/ReadWrite/sandbox/provisioner"}
            return Reply(429, err.body(""), headers)
        denial = self._denied(call)
        if denial is not None:
            store.count("403 denied")
            return denial
        store.count(call.method)
        try:
            reply = self._route(call)
        except ApiError as err:
            reply = Reply(err.status, err.body(""), dict(err.headers))
        except FilterError as err:
            reply = Reply(400, ApiError(400, "Request_UnsupportedQuery", str(err)).body(""))
        reply.headers.update(verdict.headers)
        if entra and is_write:
            store.count("entra writes")
        if reply.status >= 400:
            code = reply.body.get("error", {}).get("code", "") if isinstance(reply.body, dict) else ""
            store.count(f"{reply.status} {code}".strip())
        lost = float(self.tenant.config.get("lost_reply_rate", 0))
        mutating = call.method in MUTATING and call.path not in READ_ACTIONS
        if mutating and reply.status < 300 and lost and self._rng.random() < lost:
            # The write is made, but the answer is a 504: the client cannot know it succeeded.
            self._record_write(call)
            store.count("mutating")
            store.count("lost replies")
            err = ApiError(504, "GatewayTimeout", "The gateway did not receive a timely response.")
            return Reply(504, err.body(""), {"Retry-After": self._seconds(1)})
        if mutating:
            store.count("mutating")
            self._late_policy()
            if reply.status < 300:
                self._record_write(call)
        return reply

    def _late_policy(self) -> None:
        """The fault ``conditional_access_after`` ("N:NAME"): after N writes an admin enables a
        policy requiring a compliant device of all users, as one might between preflight and
        the first real person."""
        after, _, name = str(self.tenant.config.get("conditional_access_after") or "").partition(":")
        if not name or self.tenant.store.counters.get("mutating", 0) < int(after):
            return
        if not any(p["displayName"] == name for p in ca.policies(self.tenant)):
            ca.add_policy(self.tenant, ca.policy(name, controls=["compliantDevice"]))

    def _denied(self, call: Call) -> Reply | None:
        """403 when the app lacks the permission or directory role the endpoint documents."""
        granted, roles = authz_grants(self.tenant)
        denial = authz.check(call.method, call.path, call.body, granted, roles,
                             lambda ref: _is_device_ref(self.tenant, ref))
        if denial is None:
            return None
        service = service_of(call.path)
        if service == "exchange":
            err = ApiError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        elif service == "intune":
            err = ApiError(403, "Forbidden", "Application is not authorized to perform this operation:"
                           f" {denial.reason}.")
        else:
            err = ApiError(403, "Authorization_RequestDenied",
                           "Insufficient privileges to complete the operation.")
        return Reply(403, err.body(""))

    def _record_write(self, call: Call) -> None:
        body = {k: v for k, v in (call.body or {}).items() if k != "passwordProfile"} \
            if isinstance(call.body, dict) else call.body
        self.writes.append((call.method, call.path, json.dumps(body, sort_keys=True)))

    def _limiter(self, token: str) -> Limiter:
        limiter = self._limiters.get(token)
        if limiter is None:
            cfg = self.tenant.config
            limiter = Limiter(
                int(cfg.get("ru_limit") or ru_limit_for(len(self.tenant.users))),
                int(cfg.get("write_limit") or WRITE_LIMIT),
                float(cfg.get("time_scale", 1.0)),
                primed=bool(cfg.get("quota_primed", False)),
            )
            self._limiters[token] = limiter
        return limiter

    def _seconds(self, seconds: float) -> str:
        return _num(self.tenant.scaled(seconds))

    def _route(self, call: Call) -> Reply:
        matched_path = False
        for method, pattern, handler in self._routes:
            m = pattern.match(call.path)
            if m:
                matched_path = True
                if method == call.method:
                    return handler(call, m)
        if matched_path:
            raise ApiError(405, "Request_BadRequest",
                           f"The HTTP method '{call.method}' is not supported for this resource.")
        raise ApiError(400, "BadRequest",
                       f"Resource not found for the segment '{call.path.strip('/').split('/')[0]}'.")

    async def _batch(self, call: Call, token: str) -> Reply:
        requests = (call.body or {}).get("requests") if isinstance(call.body, dict) else None
        if not isinstance(requests, list) or not requests:
            return Reply(400, bad_request("Invalid batch payload format.").body(""))
        if len(requests) > MAX_BATCH:
            err = ApiError(400, "BadRequest",
                           f"Number of batch requests exceeds the maximum of {MAX_BATCH}.")
            return Reply(400, err.body(""))
        if any(not isinstance(r, dict) or _absolute(str(r.get("url", ""))) for r in requests):
            # Item URLs are relative to the version: https://learn.microsoft.com/graph/json-batching
            return Reply(400, bad_request("Invalid batch payload format.").body(""))
        ids = [str(r.get("id")) for r in requests]
        if len(set(ids)) != len(ids):
            err = ApiError(400, "BadRequest", "Batch request contains duplicate ids.")
            return Reply(400, err.body(""))
        statuses: dict[str, int] = {}
        responses = []
        for item in requests:
            iid = str(item.get("id"))
            deps = [str(d) for d in item.get("dependsOn") or []]
            if any(d not in ids for d in deps):
                err = ApiError(400, "BadRequest", f"Request {iid} depends on an unknown id.")
                return Reply(400, err.body(""))
            if any(statuses.get(d, 0) >= 400 for d in deps):
                status, body, headers = 424, ApiError(424, "FailedDependency",
                                                      "Failed dependency.").body(""), {}
            else:
                url = urlsplit(str(item.get("url", "")))
                inner = Call(str(item.get("method", "GET")).upper(), unquote(url.path),
                             _item_query(url.query),
                             {k.lower(): v for k, v in (item.get("headers") or {}).items()},
                             item.get("body"), call.base)
                reply = self.handle(inner, token)
                status, body, headers = reply.status, reply.body, reply.headers
            statuses[iid] = status
            entry: dict[str, Any] = {"id": iid, "status": status,
                                     "headers": {k: v for k, v in headers.items()}}
            if body is not None:
                entry["body"] = body
                entry["headers"].setdefault("Content-Type", "application/json")
            responses.append(entry)
        return Reply(200, {"responses": responses})

    # -- routes --------------------------------------------------------------------------
    def _table(self) -> list[tuple[str, str, Handler]]:
        t = self.tenant
        seg = r"(?P<id>[^/]+)"
        return [
            ("GET", "/users", lambda c, m: self._collection(
                c, t.visible_users(), USER_FILTERABLE, "User", USER_DEFAULT_SELECT, view=t.user_view)),
            ("POST", "/users", lambda c, m: Reply(201, _ctx(
                {**dict.fromkeys(USER_DEFAULT_SELECT), **t.create_user(_obj(c))}, "users"))),
            ("GET", f"/users/{seg}", lambda c, m: Reply(200, _one_user(t, m["id"], c.query))),
            ("PATCH", f"/users/{seg}", lambda c, m: _no_content(t.update_user(m["id"], _obj(c)))),
            ("DELETE", f"/users/{seg}", lambda c, m: _no_content(t.delete_user(m["id"]))),
            ("POST", f"/users/{seg}/assignLicense",
             lambda c, m: Reply(200, t.assign_license(m["id"], _obj(c)))),
            ("GET", f"/users/{seg}/mailboxSettings",
             lambda c, m: Reply(200, t.get_mailbox_settings(m["id"]))),
            ("PATCH", f"/users/{seg}/mailboxSettings",
             lambda c, m: Reply(200, t.update_mailbox_settings(m["id"], _obj(c)))),
            ("GET", f"/users/{seg}/memberOf", lambda c, m: self._collection(
                c, t.member_of(m["id"]), GROUP_FILTERABLE, "Group", None)),
            ("POST", f"/users/{seg}/authentication/temporaryAccessPassMethods",
             lambda c, m: Reply(201, AuthMethods(t).create(m["id"], _obj(c)))),
            ("GET", f"/users/{seg}/authentication/temporaryAccessPassMethods",
             lambda c, m: Reply(200, {"value": AuthMethods(t).list(m["id"])})),
            ("DELETE", f"/users/{seg}/authentication/temporaryAccessPassMethods/(?P<method>[^/]+)",
             lambda c, m: _no_content(AuthMethods(t).delete(m["id"], m["method"]))),
            ("POST", f"/users/{seg}/sendMail", lambda c, m: _accepted(send_mail(t, m["id"], _obj(c)))),
            ("GET", "/subscribedSkus", lambda c, m: Reply(200, {"value": t.skus()})),
            ("GET", "/groups", lambda c, m: self._collection(
                c, [t.view_group(g) for g in t.store.values("groups")], GROUP_FILTERABLE,
                "Group", None)),
            ("POST", "/groups", lambda c, m: Reply(201, _ctx(t.create_group(_obj(c)), "groups"))),
            ("DELETE", f"/groups/{seg}", lambda c, m: _no_content(t.delete_group(m["id"]))),
            ("POST", f"/groups/{seg}/assignLicense",
             lambda c, m: Reply(202, t.assign_group_license(m["id"], _obj(c)))),
            ("GET", "/directory/deletedItems/microsoft.graph.group", lambda c, m: self._collection(
                c, t.deleted_groups(), GROUP_FILTERABLE, "Group", None)),
            ("PATCH", f"/groups/{seg}", lambda c, m: _no_content(t.bind_members(m["id"], _obj(c)))),
            ("GET", f"/groups/{seg}", lambda c, m: Reply(
                200, _select(t.view_group(t.find_group(m["id"])), _selected(c.query, None)))),
            ("GET", f"/groups/{seg}/members", lambda c, m: self._collection(
                c, t.members(m["id"]), USER_FILTERABLE, "User", USER_DEFAULT_SELECT)),
            ("POST", rf"/groups/{seg}/members/\$ref",
             lambda c, m: _no_content(t.add_member(m["id"], _obj(c)))),
            ("DELETE", rf"/groups/{seg}/members/(?P<member>[^/]+)/\$ref",
             lambda c, m: _no_content(t.remove_member(m["id"], m["member"]))),
            # Graph deletes the *user* for DELETE .../members/{id} without /$ref when the app
            # also holds User.ReadWrite.All; the sandbox does the same so tests catch it.
            ("DELETE", rf"/groups/{seg}/members/(?P<member>[^/$]+)",
             lambda c, m: _no_content(t.delete_user(m["member"]))),
            ("GET", "/directory/deletedItems/microsoft.graph.user", lambda c, m: self._collection(
                c, t.deleted_users(), USER_FILTERABLE, "User", USER_DEFAULT_SELECT)),
            ("POST", f"/directory/deletedItems/{seg}/restore",
             lambda c, m: Reply(200, t.restore(m["id"]))),
            ("DELETE", f"/directory/deletedItems/{seg}", lambda c, m: _no_content(t.purge(m["id"]))),
            ("GET", "/auditLogs/signIns", lambda c, m: t.require_premium() or self._sign_ins(c)),
            ("GET", "/deviceManagement/managedDevices", lambda c, m: self._collection(
                replace(c, query={k: v for k, v in c.query.items() if k != "$filter"}),
                devices.list_managed(t, c.query), set(), "managedDevice", None)),
            ("GET", f"/deviceManagement/managedDevices/{seg}",
             lambda c, m: Reply(200, devices.view(t, devices.find(t, m["id"])))),
            ("POST", f"/deviceManagement/managedDevices/{seg}/syncDevice",
             lambda c, m: _no_content(devices.sync(t, m["id"]))),
            # v1.0 documents no way to set a device's category (docs-contrib #9142); the
            # form that works is beta's deviceCategory/$ref.
            ("PUT", rf"/deviceManagement/managedDevices/{seg}/deviceCategory/\$ref", _beta_only(
                lambda c, m: _no_content(devices.set_category(t, m["id"], c.body)))),
            ("DELETE", rf"/deviceManagement/managedDevices/{seg}/deviceCategory/\$ref", _beta_only(
                lambda c, m: _no_content(devices.clear_category(t, m["id"])))),
            ("GET", "/deviceManagement/deviceCategories", lambda c, m: Reply(
                200, {"value": list(t.store.values("deviceCategories"))})),
            ("GET", "/deviceManagement/deviceConfigurations", lambda c, m: Reply(
                200, {"value": [{k: v for k, v in d.items() if not k.startswith("_")}
                                for d in t.store.values("deviceConfigurations")]})),
            ("GET", f"/deviceManagement/deviceConfigurations/{seg}/assignments",
             lambda c, m: Reply(200, {"value": devices.assignments(t, m["id"])})),
            ("POST", f"/deviceManagement/deviceConfigurations/{seg}/assign",
             lambda c, m: Reply(200, {"value": devices.assign(t, m["id"], c.body) or
                                      devices.assignments(t, m["id"])})),
            ("GET", "/devices", lambda c, m: self._collection(
                c, list(t.store.values("devices")), {"id", "deviceId", "displayName"}, "Device", None)),
            ("GET", f"/devices/{seg}", lambda c, m: Reply(200, _device(t, m["id"]))),
            ("GET", "/domains", lambda c, m: Reply(200, {"value": list(t.store.values("domains"))})),
            ("GET", "/servicePrincipals", lambda c, m: self._collection(
                c, [{k: v for k, v in sp.items() if not k.startswith("_")}
                    for sp in t.store.values("servicePrincipals")],
                {"id", "appId", "displayName"}, "ServicePrincipal", None)),
            ("GET", f"/servicePrincipals/{seg}/appRoleAssignments", lambda c, m: Reply(
                200, {"value": _app_role_assignments(t, m["id"])})),
            ("GET", f"/servicePrincipals/{seg}/memberOf", lambda c, m: Reply(
                200, {"value": _directory_roles(t, m["id"])})),
            ("GET", r"/applications\(appId='(?P<app>[^']*)'\)/extensionProperties", lambda c, m: Reply(
                200, {"value": t.extension_properties(m["app"])})),
            ("GET", "/identity/conditionalAccess/policies",
             lambda c, m: ca.require_license(t) or Reply(200, {"value": ca.policies(t)})),
            ("GET", f"/identity/conditionalAccess/policies/{seg}",
             lambda c, m: ca.require_license(t) or Reply(200, _one(ca.policies(t), m["id"]))),
            ("GET", "/identity/conditionalAccess/namedLocations",
             lambda c, m: ca.require_license(t) or Reply(200, {"value": ca.named_locations(t)})),
            ("POST", "/identity/conditionalAccess/evaluate",
             lambda c, m: ca.require_license(t) or Reply(200, ca.evaluate(t, c.body))),
            ("GET", "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/"
                    "(?P<method>[^/]+)", lambda c, m: Reply(200, t.method_configuration(m["method"]))),
            ("GET", "/organization", lambda c, m: Reply(
                200, {"value": list(t.store.values("organization"))})),
        ]

    def _sign_ins(self, call: Call) -> Reply:
        """auditLogs/signIns, newest first; counts the events it hands out, so a test can see
        that a gate read its cohort's and not the tenant's whole log."""
        events = sorted(self.tenant.store.values("signIns"), key=lambda x: x["createdDateTime"], reverse=True)
        reply = self._collection(call, events, SIGNIN_FILTERABLE, "SignIn", None)
        self.tenant.store.count("signIns returned", len(reply.body["value"]))
        return reply

    def _collection(self, call: Call, items: list[dict[str, Any]], filterable: set[str],
                    resource: str, default_select: tuple[str, ...] | None,
                    view: View = lambda wanted: _as_stored) -> Reply:
        """One page of a collection; ``view`` turns a stored object into what Graph shows
        (the properties asked for, or all), and is only paid for the objects a filter looks
        at or a page returns."""
        q = call.query
        advanced = call.headers.get("consistencylevel", "").lower() == "eventual"
        if "$filter" in q:
            pred = compile_filter(q["$filter"], filterable, advanced=advanced, resource=resource)
            whole = view(None)
            items = [i for i in items if pred(whole(i))]
        top = _top(q.get("$top"))
        offset = _decode_skiptoken(q.get("$skiptoken"))
        wanted = _selected(q, default_select)
        shown = view(wanted)
        page = [shown(i) for i in items[offset: offset + top]]
        body: dict[str, Any] = {"@odata.context": f"{call.base}/$metadata#{call.path.strip('/')}"}
        if q.get("$count", "").lower() == "true":
            if not advanced:
                raise bad_request("$count is not currently supported.")
            body["@odata.count"] = len(items)
        body["value"] = [_select(i, wanted, default_select is not None) for i in page]
        if offset + top < len(items):
            rest = {k: v for k, v in q.items() if k != "$skiptoken"}
            rest["$skiptoken"] = _encode_skiptoken(offset + top)
            body["@odata.nextLink"] = f"{call.base}{call.path}?{urlencode(rest)}"
        return Reply(200, body)


def _one_user(tenant: Tenant, key: str, query: dict[str, str]) -> dict[str, Any]:
    wanted = _selected(query, USER_DEFAULT_SELECT)
    return _select(tenant.view_user(tenant.find_user(key), wanted), wanted, user=True)


def _app_role_assignments(tenant: Tenant, sp_id: str) -> list[dict[str, Any]]:
    sp = tenant.store.all("servicePrincipals").get(sp_id)
    if sp is None:
        raise not_found(sp_id)
    return [{"id": f"{sp_id}-{role}", "appRoleId": role, "principalId": sp_id,
             "resourceId": resource} for resource, role in sp.get("_granted", [])]


def _directory_roles(tenant: Tenant, sp_id: str) -> list[dict[str, Any]]:
    """The directory roles a service principal holds, as its memberOf lists them
    (serviceprincipal-list-memberof: directoryRole objects)."""
    sp = tenant.store.all("servicePrincipals").get(sp_id)
    if sp is None:
        raise not_found(sp_id)
    return [{"@odata.type": "#microsoft.graph.directoryRole", "id": authz.role_id(f"role:{name}"),
             "displayName": name, "roleTemplateId": authz.role_id(f"template:{name}")}
            for name in sp.get("_directoryRoles", [])]


def authz_grants(tenant: Tenant) -> tuple[set[str], set[str]]:
    """The application permissions granted to the sandbox's app, and its directory roles."""
    sps = list(tenant.store.values("servicePrincipals"))
    names = {r["id"]: r["value"] for sp in sps for r in sp.get("appRoles") or []}
    app = next((sp for sp in sps if sp.get("appId") == authz.SANDBOX_APP_ID), {})
    return ({names[rid] for _, rid in app.get("_granted", []) if rid in names},
            set(app.get("_directoryRoles", [])))


def _is_device_ref(tenant: Tenant, ref: Any) -> bool:
    return isinstance(ref, str) and ref.rstrip("/").rsplit("/", 1)[-1] in tenant.store.all("devices")


def _device(tenant: Tenant, oid: str) -> dict[str, Any]:
    doc = tenant.store.all("devices").get(oid)
    if doc is None:
        raise not_found(oid)
    return dict(doc)


def _obj(call: Call) -> dict[str, Any]:
    if not isinstance(call.body, dict):
        raise bad_request("Empty Payload. JSON content expected.")
    return call.body


def _ctx(doc: dict[str, Any], set_name: str) -> dict[str, Any]:
    return {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#{set_name}/$entity", **doc}


def _one(docs: list[dict[str, Any]], oid: str) -> dict[str, Any]:
    found = next((d for d in docs if d["id"] == oid), None)
    if found is None:
        raise not_found(oid)
    return found


def _no_content(_: None) -> Reply:
    return Reply(204)


def _accepted(_: None) -> Reply:
    return Reply(202)


def _select(doc: dict[str, Any], fields: list[str] | None, user: bool = False) -> dict[str, Any]:
    """``doc`` showing ``fields`` (from `_selected`; None: all), each a property of its type."""
    if fields is None:
        return doc
    kind = "user" if user else "group" if "securityEnabled" in doc else ""
    unknown = _unknown_property(kind, tuple(fields))
    if unknown:
        raise bad_request(f"Could not find a property named '{unknown}' on type 'microsoft.graph.{kind}'.")
    if list(doc) == fields:
        return doc  # a view that showed just these (`Tenant.user_view`)
    out = {f: doc.get(f) for f in fields}
    if "@odata.type" in doc:
        out = {"@odata.type": doc["@odata.type"], **out}
    return out


@functools.lru_cache(maxsize=64)
def _unknown_property(kind: str, fields: tuple[str, ...]) -> str | None:
    """The first of ``fields`` that is no property of ``kind`` (user, group; "": not checked)."""
    known = {"user": USER_PROPERTIES, "group": GROUP_PROPERTIES}.get(kind)
    return next((f for f in fields if known is not None and f not in known
                 and not DIRECTORY_EXTENSION.match(f)), None)


def _selected(query: dict[str, str], default: tuple[str, ...] | None) -> list[str] | None:
    """The properties a reply shows: $select's, else the resource's default (None: all)."""
    raw = query.get("$select")
    if raw:
        return [f.strip() for f in raw.split(",") if f.strip()]
    return None if default is None else list(default)


def _top(raw: str | None) -> int:
    if raw is None:
        return 100
    if not raw.isdigit() or not 1 <= int(raw) <= 999:
        raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive.")
    return int(raw)


def _encode_skiptoken(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _decode_skiptoken(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["o"])
    except (ValueError, KeyError, TypeError):
        raise bad_request("Invalid $skiptoken.") from None


def _beta_only(handler: Handler) -> Handler:
    """A route that exists in beta only: under /v1.0 Graph does not know the segment."""
    def route(call: Call, m: re.Match[str]) -> Reply:
        if not call.base.endswith("/beta"):
            raise ApiError(400, "BadRequest", "Resource not found for the segment 'deviceCategory'.")
        return handler(call, m)
    return route


def _absolute(url: str) -> bool:
    return bool(urlsplit(url).scheme) or url.startswith("//")


def _item_query(query: str) -> dict[str, str]:
    """A batch item's query as Graph reads it: names are taken as written, so a
    percent-encoded ``%24select`` is not ``$select`` (an unknown parameter, ignored)."""
    out = {}
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            out[name] = unquote(value.replace("+", " "))
    return out


def _num(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}"

