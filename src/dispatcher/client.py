"""Python client of the management API for the operator's services and the CLI:
`Client` (async, aiohttp) and `SyncClient` (the same calls, blocking). Answers are
typed dataclasses (each keeps the API's JSON as `raw`); every API error is raised as
`ApiError` carrying the API's code, message and field and the HTTP status.

Publishing is safe to repeat: each publish carries an `Idempotency-Key` (generated
when none is given) that is reused when the call is retried after a connection error
or a 503, so a retry never publishes twice."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import aiohttp

from dispatcher import __version__

T = TypeVar("T")
TENANT_HEADER = "Dispatcher-Tenant"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Pauses before the 2nd, 3rd and 4th try of a call that is safe to repeat.
RETRY_DELAYS = (0.2, 0.5, 1.0)
UNREACHABLE = "unreachable"  # ApiError.code when no answer came (status 0)
MAX_WAIT = 30  # the longest `?wait=` the daemon accepts on a callback


class ApiError(Exception):
    """An error answered by the API ({"error": {code, message, field}} with its HTTP
    status), or status 0 / code "unreachable" when the daemon could not be reached."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.message}{where} ({self.status} {self.code})"


# --- typed answers --------------------------------------------------------------------


def _from_json(cls: type[T], raw: Mapping[str, Any], **extra: Any) -> T:
    """Build a dataclass from the API's JSON: fields by name, the JSON itself as raw."""
    names = {f.name for f in dataclasses.fields(cls)} - {"raw"}  # type: ignore[arg-type]
    values = {name: raw.get(name) for name in names}
    return cls(**{**values, **extra, "raw": dict(raw)})


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    description: str
    event_types: list[str]
    signing_scheme: str
    retry_policy: str
    timeout_seconds: float
    max_in_flight: int
    metadata: dict[str, Any]
    state: str
    state_reason: str | None
    state_changed_timestamp: int | None
    created_timestamp: int
    updated_timestamp: int
    kind: str = "webhook"  # or "callback": receives approval callbacks, never events
    secret: str | None = None  # answered only on create, or when the scheme changes
    public_key: str | None = None
    # Delivery options as the API shows them: custom headers (name -> value), the
    # receiver auth's type and non-secret fields, the client certificate's description.
    headers: dict[str, str] | None = None
    auth: dict[str, Any] | None = None
    tls: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class EndpointSecret:
    signing_scheme: str
    secret: str | None = None
    public_key: str | None = None
    public_key_pem: str | None = None
    previous_secret_expires_timestamp: int | None = None  # after a rotation
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DeliveryRef:
    endpoint_id: str
    status: str


@dataclass(frozen=True)
class PublishedEvent:
    id: str
    type: str
    created_timestamp: int
    deliveries: list[DeliveryRef]
    duplicate: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PublishedEvent:
        return _from_json(cls, raw, deliveries=[
            DeliveryRef(d["endpoint_id"], d["status"]) for d in raw.get("deliveries", [])])


@dataclass(frozen=True)
class Delivery:
    """An event at one endpoint: status Pending, Retrying, Success or Failed."""

    event_id: str
    endpoint_id: str
    url: str
    status: str
    next_retry_timestamp: int | None
    retries_left: int
    attempts: int
    last_attempt_timestamp: int | None
    failure_reason: str | None
    held: bool
    type: str | None = None
    data: Any = None
    created_timestamp: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    created_timestamp: int
    data: Any
    deliveries: list[Delivery] | None = None  # given by get_event, not by list_events
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Event:
        deliveries = None
        if raw.get("deliveries") is not None:
            deliveries = [_from_json(Delivery, {**d, "event_id": raw["id"], "type": raw["type"]})
                          for d in raw["deliveries"]]
        return _from_json(cls, raw, deliveries=deliveries)


@dataclass(frozen=True)
class Attempt:
    attempt: int
    timestamp: int
    duration_ms: float
    request_headers: dict[str, str]
    request_body: str
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    failure_reason: str | None
    error: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Attempt:
        response = raw.get("response") or {}
        return _from_json(cls, raw, request_headers=raw["request"]["headers"],
                          request_body=raw["request"]["body"],
                          response_status=response.get("status"),
                          response_headers=response.get("headers"),
                          response_body=response.get("body"))


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    group: str
    source: str
    sample: Any
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


CALLBACK_DECIDED = ("Approved", "Denied", "Failed")


@dataclass(frozen=True)
class CallbackRequest:
    """The answer to request_approval: the callback is queued (status Pending)."""

    id: str
    type: str
    status: str
    endpoint_id: str
    created_timestamp: int
    deadline_timestamp: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Callback:
    """An approval callback: status Pending, Retrying, Approved, Denied or Failed (never
    approved). Act only when `approved` is true."""

    id: str
    type: str
    data: Any
    endpoint_id: str
    status: str
    decision: str | None  # "ok", "deny" or None
    decided_timestamp: int | None
    attempts: int
    retries_left: int
    next_retry_timestamp: int | None
    failure_reason: str | None
    held: bool
    created_timestamp: int
    deadline_timestamp: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def decided(self) -> bool:
        """Approved, Denied or Failed: final."""
        return self.status in CALLBACK_DECIDED

    @property
    def approved(self) -> bool:
        return self.status == "Approved"


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    metadata: dict[str, Any]
    created_timestamp: int
    updated_timestamp: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class TenantKey:
    """A new key of one tenant: `key` is shown only here."""

    key: str
    id: str
    prefix: str
    name: str
    tenant_id: str
    tenant: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class TenantStats:
    tenant_id: str
    endpoints: dict[str, int]  # by state
    deliveries: dict[str, int]  # by status
    failures_in_window: int
    window_seconds: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Page(Generic[T]):
    data: list[T]
    next_cursor: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def _page(raw: Any, item: Any) -> Page[Any]:
    return Page([item(x) for x in raw["data"]], raw.get("next_cursor"), raw)


def _params(**values: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out[name] = str(value)
    return out


# --- delivery options, as the API takes them ----------------------------------------------


def basic_auth(username: str, password: str) -> dict[str, str]:
    """`auth` for a receiver that wants HTTP Basic authentication."""
    return {"type": "basic", "username": username, "password": password}


def bearer_auth(token: str) -> dict[str, str]:
    """`auth` for a receiver that wants `Authorization: Bearer <token>`."""
    return {"type": "bearer", "token": token}


def oauth2_auth(token_url: str, client_id: str, client_secret: str, *,
                scope: str | None = None, audience: str | None = None) -> dict[str, str]:
    """`auth` for a receiver that wants an OAuth2 access token (client credentials
    grant), fetched from `token_url` by the dispatcher."""
    out = {"type": "oauth2_client_credentials", "token_url": token_url,
           "client_id": client_id, "client_secret": client_secret}
    out.update({k: v for k, v in (("scope", scope), ("audience", audience)) if v is not None})
    return out


def client_tls(certificate: str | Path, key: str | Path,
               ca_certificate: str | Path | None = None) -> dict[str, str]:
    """`tls` for mutual TLS from PEM files (a Path) or PEM text (a str): the client
    certificate (the leaf first, then intermediates), its unencrypted key, and
    optionally a private CA to trust for this receiver."""

    def pem(value: str | Path) -> str:
        return value.read_text(encoding="ascii") if isinstance(value, Path) else value

    out = {"client_certificate": pem(certificate), "client_key": pem(key)}
    if ca_certificate is not None:
        out["ca_certificate"] = pem(ca_certificate)
    return out


# --- the async client -----------------------------------------------------------------


class Client:
    """`async with Client("http://127.0.0.1:8080", api_key) as api: await api.publish(...)`.
    `tenant` (operator keys) acts for that tenant (header Dispatcher-Tenant)."""

    def __init__(self, url: str, api_key: str, tenant: str | None = None, *,
                 timeout: float = 10.0, session: aiohttp.ClientSession | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}",
                        "User-Agent": f"dispatcher-client/{__version__}"}
        if tenant:
            self.headers[TENANT_HEADER] = tenant
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None, repeatable: bool = False,
                      timeout: float | None = None) -> Any:
        """One API call; answers the parsed JSON (None for an empty answer). A
        `repeatable` call is tried again after a connection error or a 503. `timeout`
        replaces the client's for this call (a long-polling read needs more)."""
        sent = {**self.headers, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        delays = RETRY_DELAYS if repeatable else ()
        for n in range(len(delays) + 1):
            try:
                async with self._http().request(
                        method, self.url + path, data=data, params=params, headers=sent,
                        timeout=self.timeout if timeout is None
                        else aiohttp.ClientTimeout(total=timeout)) as resp:
                    raw = await resp.read()
                    if resp.status == 503 and n < len(delays):
                        await asyncio.sleep(delays[n])
                        continue
                    return _answer(resp.status, raw)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if n < len(delays):
                    await asyncio.sleep(delays[n])
                    continue
                raise ApiError(0, UNREACHABLE, f"cannot reach {self.url}: "
                               f"{type(exc).__name__} {exc}".rstrip()) from exc
        raise AssertionError("unreachable")

    # events

    async def publish(self, type: str, data: Any, *,
                      idempotency_key: str | None = None) -> PublishedEvent:
        key = idempotency_key or uuid.uuid4().hex
        raw = await self.request("POST", "/v1/events", body={"type": type, "data": data},
                                 headers={IDEMPOTENCY_HEADER: key}, repeatable=True)
        return PublishedEvent.from_json(raw)

    async def publish_batch(self, events: Iterable[Mapping[str, Any]]) -> list[PublishedEvent]:
        """Events as {"type", "data"[, "idempotency_key"]}; each gets a key if it has none."""
        body = [{**e, "idempotency_key": e.get("idempotency_key") or uuid.uuid4().hex}
                for e in events]
        raw = await self.request("POST", "/v1/events/batch", body={"events": body},
                                 repeatable=True)
        return [PublishedEvent.from_json(p) for p in raw["data"]]

    async def get_event(self, event_id: str) -> Event:
        return Event.from_json(await self.request("GET", f"/v1/events/{event_id}",
                                                  repeatable=True))

    async def list_events(self, *, types: list[str] | None = None, since: int | None = None,
                          until: int | None = None, limit: int | None = None,
                          cursor: str | None = None) -> Page[Event]:
        raw = await self.request("GET", "/v1/events", repeatable=True, params=_params(
            type=types, since=since, until=until, limit=limit, cursor=cursor))
        return _page(raw, Event.from_json)

    async def get_delivery(self, endpoint_id: str, event_id: str) -> Delivery:
        raw = await self.request("GET", f"/v1/endpoints/{endpoint_id}/events/{event_id}",
                                 repeatable=True)
        return _from_json(Delivery, raw)

    async def list_deliveries(self, endpoint_id: str, *, statuses: list[str] | None = None,
                              types: list[str] | None = None, since: int | None = None,
                              until: int | None = None, limit: int | None = None,
                              cursor: str | None = None) -> Page[Delivery]:
        raw = await self.request("GET", f"/v1/endpoints/{endpoint_id}/events", repeatable=True,
                                 params=_params(status=statuses, type=types, since=since,
                                                until=until, limit=limit, cursor=cursor))
        return _page(raw, lambda d: _from_json(Delivery, d))

    async def list_attempts(self, endpoint_id: str, event_id: str, *, limit: int | None = None,
                            cursor: str | None = None) -> Page[Attempt]:
        raw = await self.request("GET", f"/v1/endpoints/{endpoint_id}/events/{event_id}/logs",
                                 repeatable=True, params=_params(limit=limit, cursor=cursor))
        return _page(raw, Attempt.from_json)

    async def retry(self, endpoint_id: str, event_id: str) -> None:
        """Attempt a Retrying or Failed event at the endpoint now."""
        await self.request("POST", f"/v1/endpoints/{endpoint_id}/events/{event_id}/retry")

    async def replay(self, endpoint_id: str, *, statuses: list[str] | None = None,
                     since: int | None = None, until: int | None = None) -> int:
        """Attempt again every event of the endpoint with one of the statuses (default
        Failed) created in [since, until); answers how many were queued."""
        body = {k: v for k, v in (("status", statuses), ("since", since), ("until", until))
                if v is not None}
        raw = await self.request("POST", f"/v1/endpoints/{endpoint_id}/retry", body=body)
        return int(raw["queued"])

    # endpoints

    async def create_endpoint(self, url: str, *, kind: str | None = None,
                              **fields: Any) -> Endpoint:
        """`kind` "webhook" (default) or "callback" (approval callbacks only; set on
        create only). Fields as in the API: description, event_types, signing_scheme,
        retry_policy, timeout_seconds, max_in_flight, metadata, pause_*_threshold, and
        the delivery options `headers` ({"X-Api-Key": "..."}), `auth` (e.g.
        {"type": "bearer", "token": "..."}, see `basic_auth`, `bearer_auth`,
        `oauth2_auth`) and `tls` (see `client_tls`)."""
        body = {"url": url, **fields, **({"kind": kind} if kind is not None else {})}
        raw = await self.request("POST", "/v1/endpoints", body=body)
        return _from_json(Endpoint, raw)

    async def list_endpoints(self, *, state: str | None = None, limit: int | None = None,
                             cursor: str | None = None) -> Page[Endpoint]:
        raw = await self.request("GET", "/v1/endpoints", repeatable=True,
                                 params=_params(state=state, limit=limit, cursor=cursor))
        return _page(raw, lambda e: _from_json(Endpoint, e))

    async def get_endpoint(self, endpoint_id: str) -> Endpoint:
        return _from_json(Endpoint, await self.request("GET", f"/v1/endpoints/{endpoint_id}",
                                                       repeatable=True))

    async def update_endpoint(self, endpoint_id: str, **fields: Any) -> Endpoint:
        """Fields as on create; `headers`, `auth` and `tls` are each replaced whole
        when given, and `None` removes them."""
        raw = await self.request("PATCH", f"/v1/endpoints/{endpoint_id}", body=fields)
        return _from_json(Endpoint, raw)

    async def delete_endpoint(self, endpoint_id: str) -> None:
        await self.request("DELETE", f"/v1/endpoints/{endpoint_id}")

    async def pause_endpoint(self, endpoint_id: str) -> Endpoint:
        raw = await self.request("POST", f"/v1/endpoints/{endpoint_id}/pause")
        return _from_json(Endpoint, raw)

    async def resume_endpoint(self, endpoint_id: str) -> Endpoint:
        raw = await self.request("POST", f"/v1/endpoints/{endpoint_id}/resume")
        return _from_json(Endpoint, raw)

    async def get_endpoint_health(self, endpoint_id: str) -> dict[str, Any]:
        """Failures in the window and since the last resume, thresholds, held count."""
        raw: dict[str, Any] = await self.request(
            "GET", f"/v1/endpoints/{endpoint_id}/health", repeatable=True)
        return raw

    async def rotate_secret(self, endpoint_id: str) -> EndpointSecret:
        raw = await self.request("POST", f"/v1/endpoints/{endpoint_id}/rotate-secret")
        return _from_json(EndpointSecret, raw)

    async def get_secret(self, endpoint_id: str) -> EndpointSecret:
        raw = await self.request("GET", f"/v1/endpoints/{endpoint_id}/secret", repeatable=True)
        return _from_json(EndpointSecret, raw)

    # event types

    async def list_event_types(self, *, group: str | None = None, limit: int | None = None,
                               cursor: str | None = None) -> Page[EventType]:
        raw = await self.request("GET", "/v1/event-types", repeatable=True,
                                 params=_params(group=group, limit=limit, cursor=cursor))
        return _page(raw, lambda t: _from_json(EventType, t))

    async def get_event_type(self, name: str) -> EventType:
        raw = await self.request("GET", f"/v1/event-types/{name}", repeatable=True)
        return _from_json(EventType, raw)

    async def create_event_type(self, name: str, description: str = "",
                                sample: Any = None) -> EventType:
        body: dict[str, Any] = {"name": name, "description": description}
        if sample is not None:
            body["sample"] = sample
        return _from_json(EventType, await self.request("POST", "/v1/event-types", body=body))

    async def delete_event_type(self, name: str) -> None:
        await self.request("DELETE", f"/v1/event-types/{name}")

    # approval callbacks

    async def request_approval(self, type: str, data: Mapping[str, Any], *,
                               endpoint_id: str | None = None,
                               deadline_seconds: float | None = None,
                               idempotency_key: str | None = None) -> CallbackRequest:
        """Ask the tenant's callback endpoint (the only active one unless `endpoint_id`
        names it) to approve an action; then `wait_for_decision`. Safe to repeat like
        publish: the Idempotency-Key is reused when the call is retried."""
        key = idempotency_key or uuid.uuid4().hex
        body = {"type": type, "data": data, "endpoint_id": endpoint_id,
                "deadline_seconds": deadline_seconds}
        raw = await self.request("POST", "/v1/callbacks", repeatable=True,
                                 body={k: v for k, v in body.items() if v is not None},
                                 headers={IDEMPOTENCY_HEADER: key})
        return _from_json(CallbackRequest, raw)

    async def get_callback(self, callback_id: str, wait: int | None = None) -> Callback:
        """With `wait` (1-30 s) the daemon answers as soon as the callback is decided,
        or after `wait` seconds."""
        raw = await self.request(
            "GET", f"/v1/callbacks/{callback_id}", repeatable=True, params=_params(wait=wait),
            timeout=None if not wait else wait + (self.timeout.total or 10.0))
        return _from_json(Callback, raw)

    async def wait_for_decision(self, callback_id: str, timeout: float) -> Callback:
        """The callback once Approved, Denied or Failed, or as it stands after `timeout`
        seconds, rounded up to a whole second (check `.decided`). Long-polls the daemon
        (`?wait=`, at most 30 s a call); no busy loop."""
        give_up = asyncio.get_running_loop().time() + timeout
        while True:
            left = give_up - asyncio.get_running_loop().time()
            found = await self.get_callback(callback_id,
                                            wait=max(0, min(MAX_WAIT, math.ceil(left))))
            if found.decided or asyncio.get_running_loop().time() >= give_up:
                return found

    async def list_callbacks(self, *, statuses: list[str] | None = None,
                             types: list[str] | None = None, since: int | None = None,
                             until: int | None = None, limit: int | None = None,
                             cursor: str | None = None) -> Page[Callback]:
        """Newest first."""
        raw = await self.request("GET", "/v1/callbacks", repeatable=True, params=_params(
            status=statuses, type=types, since=since, until=until, limit=limit,
            cursor=cursor))
        return _page(raw, lambda c: _from_json(Callback, c))

    async def callback_logs(self, callback_id: str, *, limit: int | None = None,
                            cursor: str | None = None) -> Page[Attempt]:
        """Every attempt to send the callback, oldest first, with the answer received."""
        raw = await self.request("GET", f"/v1/callbacks/{callback_id}/logs", repeatable=True,
                                 params=_params(limit=limit, cursor=cursor))
        return _page(raw, Attempt.from_json)

    async def retry_callback(self, callback_id: str) -> None:
        """One more attempt for a Failed callback before its deadline (409 otherwise)."""
        await self.request("POST", f"/v1/callbacks/{callback_id}/retry")

    # tenants (operator keys; a tenant is named by its name or id)

    async def create_tenant(self, name: str, metadata: Mapping[str, Any] | None = None) -> Tenant:
        body: dict[str, Any] = {"name": name}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return _from_json(Tenant, await self.request("POST", "/v1/tenants", body=body))

    async def list_tenants(self, *, name_prefix: str | None = None, limit: int | None = None,
                           cursor: str | None = None) -> Page[Tenant]:
        """By name."""
        raw = await self.request("GET", "/v1/tenants", repeatable=True, params=_params(
            name_prefix=name_prefix, limit=limit, cursor=cursor))
        return _page(raw, lambda t: _from_json(Tenant, t))

    async def get_tenant(self, tenant: str) -> Tenant:
        return _from_json(Tenant, await self.request("GET", _tenant_path(tenant),
                                                     repeatable=True))

    async def update_tenant(self, tenant: str, *, name: str | None = None,
                            metadata: Mapping[str, Any] | None = None) -> Tenant:
        body = {k: v for k, v in (("name", name), ("metadata", metadata)) if v is not None}
        return _from_json(Tenant, await self.request("PATCH", _tenant_path(tenant), body=body))

    async def delete_tenant(self, tenant: str, *, force: bool = False) -> None:
        """Refused (409) while it has endpoints unless `force`, which deletes its keys,
        endpoints, events and deliveries with it."""
        await self.request("DELETE", _tenant_path(tenant),
                           params={"force": "true"} if force else None)

    async def create_tenant_key(self, tenant: str, name: str = "") -> TenantKey:
        raw = await self.request("POST", _tenant_path(tenant) + "/keys", body={"name": name})
        return _from_json(TenantKey, raw)

    async def tenant_stats(self, tenant: str) -> TenantStats:
        raw = await self.request("GET", _tenant_path(tenant) + "/stats", repeatable=True)
        return _from_json(TenantStats, raw)


def _tenant_path(tenant: str) -> str:
    return "/v1/tenants/" + urllib.parse.quote(tenant, safe="")


def _answer(status: int, raw: bytes) -> Any:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if status < 400:
        return body
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        raise ApiError(status, str(err.get("code")), str(err.get("message")), err.get("field"))
    text = raw.decode("utf-8", "replace").strip()[:200]
    raise ApiError(status, "http_error", text or f"HTTP {status}")


# --- the blocking client --------------------------------------------------------------


class SyncClient:
    """The same calls as `Client`, blocking; use it as a context manager or close() it."""

    def __init__(self, url: str, api_key: str, tenant: str | None = None, *,
                 timeout: float = 10.0) -> None:
        self._runner = asyncio.Runner()
        self._client = Client(url, api_key, tenant, timeout=timeout)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def _run(self, coro: Any) -> Any:
        return self._runner.run(coro)

    def publish(self, type: str, data: Any, *,
                idempotency_key: str | None = None) -> PublishedEvent:
        result: PublishedEvent = self._run(
            self._client.publish(type, data, idempotency_key=idempotency_key))
        return result

    def publish_batch(self, events: Iterable[Mapping[str, Any]]) -> list[PublishedEvent]:
        result: list[PublishedEvent] = self._run(self._client.publish_batch(events))
        return result

    def get_event(self, event_id: str) -> Event:
        result: Event = self._run(self._client.get_event(event_id))
        return result

    def list_events(self, **filters: Any) -> Page[Event]:
        result: Page[Event] = self._run(self._client.list_events(**filters))
        return result

    def get_delivery(self, endpoint_id: str, event_id: str) -> Delivery:
        result: Delivery = self._run(self._client.get_delivery(endpoint_id, event_id))
        return result

    def list_deliveries(self, endpoint_id: str, **filters: Any) -> Page[Delivery]:
        result: Page[Delivery] = self._run(self._client.list_deliveries(endpoint_id, **filters))
        return result

    def list_attempts(self, endpoint_id: str, event_id: str, **page: Any) -> Page[Attempt]:
        result: Page[Attempt] = self._run(
            self._client.list_attempts(endpoint_id, event_id, **page))
        return result

    def retry(self, endpoint_id: str, event_id: str) -> None:
        self._run(self._client.retry(endpoint_id, event_id))

    def replay(self, endpoint_id: str, **filters: Any) -> int:
        result: int = self._run(self._client.replay(endpoint_id, **filters))
        return result

    def create_endpoint(self, url: str, *, kind: str | None = None, **fields: Any) -> Endpoint:
        result: Endpoint = self._run(self._client.create_endpoint(url, kind=kind, **fields))
        return result

    def list_endpoints(self, **filters: Any) -> Page[Endpoint]:
        result: Page[Endpoint] = self._run(self._client.list_endpoints(**filters))
        return result

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        result: Endpoint = self._run(self._client.get_endpoint(endpoint_id))
        return result

    def update_endpoint(self, endpoint_id: str, **fields: Any) -> Endpoint:
        result: Endpoint = self._run(self._client.update_endpoint(endpoint_id, **fields))
        return result

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._run(self._client.delete_endpoint(endpoint_id))

    def pause_endpoint(self, endpoint_id: str) -> Endpoint:
        result: Endpoint = self._run(self._client.pause_endpoint(endpoint_id))
        return result

    def resume_endpoint(self, endpoint_id: str) -> Endpoint:
        result: Endpoint = self._run(self._client.resume_endpoint(endpoint_id))
        return result

    def get_endpoint_health(self, endpoint_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._run(self._client.get_endpoint_health(endpoint_id))
        return result

    def rotate_secret(self, endpoint_id: str) -> EndpointSecret:
        result: EndpointSecret = self._run(self._client.rotate_secret(endpoint_id))
        return result

    def get_secret(self, endpoint_id: str) -> EndpointSecret:
        result: EndpointSecret = self._run(self._client.get_secret(endpoint_id))
        return result

    def list_event_types(self, **filters: Any) -> Page[EventType]:
        result: Page[EventType] = self._run(self._client.list_event_types(**filters))
        return result

    def get_event_type(self, name: str) -> EventType:
        result: EventType = self._run(self._client.get_event_type(name))
        return result

    def create_event_type(self, name: str, description: str = "",
                          sample: Any = None) -> EventType:
        result: EventType = self._run(self._client.create_event_type(name, description, sample))
        return result

    def delete_event_type(self, name: str) -> None:
        self._run(self._client.delete_event_type(name))

    def request_approval(self, type: str, data: Mapping[str, Any], *,
                         endpoint_id: str | None = None, deadline_seconds: float | None = None,
                         idempotency_key: str | None = None) -> CallbackRequest:
        result: CallbackRequest = self._run(self._client.request_approval(
            type, data, endpoint_id=endpoint_id, deadline_seconds=deadline_seconds,
            idempotency_key=idempotency_key))
        return result

    def get_callback(self, callback_id: str, wait: int | None = None) -> Callback:
        result: Callback = self._run(self._client.get_callback(callback_id, wait))
        return result

    def wait_for_decision(self, callback_id: str, timeout: float) -> Callback:
        result: Callback = self._run(self._client.wait_for_decision(callback_id, timeout))
        return result

    def list_callbacks(self, **filters: Any) -> Page[Callback]:
        result: Page[Callback] = self._run(self._client.list_callbacks(**filters))
        return result

    def callback_logs(self, callback_id: str, **page: Any) -> Page[Attempt]:
        result: Page[Attempt] = self._run(self._client.callback_logs(callback_id, **page))
        return result

    def retry_callback(self, callback_id: str) -> None:
        self._run(self._client.retry_callback(callback_id))

    def create_tenant(self, name: str, metadata: Mapping[str, Any] | None = None) -> Tenant:
        result: Tenant = self._run(self._client.create_tenant(name, metadata))
        return result

    def list_tenants(self, **filters: Any) -> Page[Tenant]:
        result: Page[Tenant] = self._run(self._client.list_tenants(**filters))
        return result

    def get_tenant(self, tenant: str) -> Tenant:
        result: Tenant = self._run(self._client.get_tenant(tenant))
        return result

    def update_tenant(self, tenant: str, *, name: str | None = None,
                      metadata: Mapping[str, Any] | None = None) -> Tenant:
        result: Tenant = self._run(self._client.update_tenant(tenant, name=name,
                                                              metadata=metadata))
        return result

    def delete_tenant(self, tenant: str, *, force: bool = False) -> None:
        self._run(self._client.delete_tenant(tenant, force=force))

    def create_tenant_key(self, tenant: str, name: str = "") -> TenantKey:
        result: TenantKey = self._run(self._client.create_tenant_key(tenant, name))
        return result

    def tenant_stats(self, tenant: str) -> TenantStats:
        result: TenantStats = self._run(self._client.tenant_stats(tenant))
        return result
