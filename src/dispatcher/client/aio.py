"""`Client`: every call of the management API, async (aiohttp)."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import aiohttp

from dispatcher import __version__
from dispatcher.client.models import (
    IDEMPOTENCY_HEADER,
    MAX_WAIT,
    RETRY_DELAYS,
    TENANT_HEADER,
    UNREACHABLE,
    ApiError,
    Attempt,
    AuditEntry,
    Callback,
    CallbackRequest,
    Delivery,
    Endpoint,
    EndpointSecret,
    Event,
    EventType,
    Page,
    PortalLink,
    PublishedEvent,
    Tenant,
    TenantKey,
    TenantStats,
    _from_json,
    _page,
    _params,
)


def _why_unreachable(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"nothing is listening on {exc.host}:{exc.port}"
        return exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__} {exc}".rstrip()


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
                               f"{_why_unreachable(exc)}") from exc
        raise AssertionError("unreachable")

    # events

    async def publish(self, type: str, data: Any, *, idempotency_key: str | None = None,
                      channels: Iterable[str] | None = None) -> PublishedEvent:
        """`channels`: only endpoints with one of them (or with none) receive it."""
        key = idempotency_key or uuid.uuid4().hex
        body: dict[str, Any] = {"type": type, "data": data}
        if channels is not None:
            body["channels"] = list(channels)
        raw = await self.request("POST", "/v1/events", body=body,
                                 headers={IDEMPOTENCY_HEADER: key}, repeatable=True)
        return PublishedEvent.from_json(raw)

    async def publish_batch(self, events: Iterable[Mapping[str, Any]]) -> list[PublishedEvent]:
        """Events as {"type", "data"[, "idempotency_key", "channels", ...]}; each gets a
        key if it has none."""
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

    async def list_audit_log(
        self, *, tenant: str | None = None, actor: str | None = None,
        action: str | None = None, target_type: str | None = None,
        target_id: str | None = None, since: int | None = None, until: int | None = None,
        limit: int | None = None, cursor: str | None = None,
    ) -> Page[AuditEntry]:
        """Newest first; a tenant key sees its tenant's entries, an operator key all
        (or `tenant`'s). `action` may be a prefix ending in "." ("endpoint.")."""
        raw = await self.request("GET", "/v1/audit-log", repeatable=True, params=_params(
            tenant=tenant, actor=actor, action=action, target_type=target_type,
            target_id=target_id, since=since, until=until, limit=limit, cursor=cursor))
        return _page(raw, lambda e: _from_json(AuditEntry, e))

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

    async def create_portal_link(self, tenant: str | None = None, *, read_only: bool = False,
                                 expires_in: int | None = None) -> PortalLink:
        """A portal link for `tenant` (an operator key), or for the key's own tenant."""
        body: dict[str, Any] = {"read_only": read_only}
        if expires_in is not None:
            body["expires_in"] = expires_in
        path = "/v1/portal-links" if tenant is None else _tenant_path(tenant) + "/portal-links"
        return _from_json(PortalLink, await self.request("POST", path, body=body))

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
