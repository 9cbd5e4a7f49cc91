"""Listeners (`GET /v1/listen`, `dispatcher listen`): a temporary endpoint of the
tenant that delivers over one connection. Opening one is creating an endpoint: it
counts against `server.max_endpoints_per_tenant` like any other (the one check,
operations/endpoints.check_endpoint_limit) and is refused to a read-only scope, as
is taking one over after a reconnect (which hands its secret out)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from uuid import UUID

from dispatcher.errors import NotFound, ValidationError
from dispatcher.operations import audit
from dispatcher.operations.endpoints import check_endpoint_limit, check_event_types
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.relay import abandoned_before
from dispatcher.signing import STANDARD_V1, generate_secret
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store.listeners import (
    mark_listener,
    remove_abandoned,
    remove_listener,
    take_over_listener,
)
from dispatcher.store.secrets import reveal_endpoint_secret, set_endpoint_secret

MAX_IN_FLIGHT = 10


@dataclass(frozen=True)
class Listener:
    endpoint_id: UUID
    secret: str
    event_types: list[str]
    signing_scheme: str = STANDARD_V1


def listen_timeout(svc: Services) -> float:
    """How long the listener may take to answer one delivery."""
    return min(max(svc.config.delivery.timeout_seconds, 1.0), 30.0)


async def open_listener(svc: Services, caller: Caller, event_types: list[str],
                        forward_to: str, owner: UUID) -> Listener:
    """A new temporary endpoint held by `owner`, subscribed to `event_types`."""
    caller.may_write()
    tenant_id = caller.tenant
    now = svc.clock.now()
    endpoint_id, secret = uuid.uuid4(), generate_secret(STANDARD_V1)
    async with svc.pool.acquire() as conn, conn.transaction():
        types = await check_event_types(svc, conn, tenant_id, event_types, "events")
        # Listeners whose holder died make room before the limit is counted.
        await remove_abandoned(conn, abandoned_before(now, svc.config.server.listen_grace_seconds))
        await check_endpoint_limit(svc, conn, tenant_id)
        await endpoint_store.create_endpoint(conn, tenant_id, endpoint_id, {
            "url": f"listen:{forward_to[:400]}", "description": "dispatcher listen (temporary)",
            "event_types": types, "signing_scheme": STANDARD_V1,
            "retry_policy": svc.config.delivery.default_retry_policy,
            "timeout_seconds": listen_timeout(svc), "max_in_flight": MAX_IN_FLIGHT,
            "metadata": {"listen": True}, "pause_window_threshold": None,
            "pause_total_threshold": None}, now)
        await set_endpoint_secret(conn, svc.secret_box, endpoint_id, secret,
                                  tenant_id=tenant_id)
        await mark_listener(conn, endpoint_id, owner, now)
        await audit.record(svc, conn, caller, "listener.open", "endpoint", endpoint_id,
                           audit.created({"event_types": types, "forward_to": forward_to[:400]}))
    return Listener(endpoint_id, secret, types)


async def take_over(svc: Services, caller: Caller, given: str, owner: UUID) -> Listener:
    """A listener reconnecting within the grace period takes its endpoint back (the
    previous connection's holder stops at its next refresh)."""
    caller.may_write()
    tenant_id = caller.tenant
    try:
        endpoint_id = uuid.UUID(given)
    except ValueError:
        raise ValidationError("endpoint_id is not a UUID", field="endpoint_id") from None
    async with svc.pool.acquire() as conn, conn.transaction():
        types = await take_over_listener(conn, endpoint_id, tenant_id, owner, svc.clock.now())
        if types is None:
            raise NotFound(f"no listener endpoint {endpoint_id} (removed after the grace "
                           "period?)", field="endpoint_id")
        secret = await reveal_endpoint_secret(conn, svc.secret_box, endpoint_id,
                                              tenant_id=tenant_id)
        await audit.record(svc, conn, caller, "listener.take_over", "endpoint", endpoint_id)
    return Listener(endpoint_id, secret, list(types))


async def close_listener(svc: Services, caller: Caller, endpoint_id: UUID,
                         owner: UUID) -> None:
    """Delete the temporary endpoint with its pending deliveries (none is retried),
    unless another connection took it over."""
    async with svc.pool.acquire() as conn, conn.transaction():
        if await remove_listener(conn, endpoint_id, owner):
            await audit.record(svc, conn, caller, "listener.close", "endpoint", endpoint_id)
