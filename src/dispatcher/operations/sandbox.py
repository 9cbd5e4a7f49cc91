"""The console's sandbox: send a sample event, signed as a real delivery, to one of
the tenant's endpoints, and check the signatures of what a capture receiver caught
for the tenant's endpoints (only requests to the tenant's own endpoints are shown)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from multidict import CIMultiDict

from dispatcher.errors import Forbidden, NotFound, ValidationError
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.sandbox.capture import make_verifier
from dispatcher.sandbox.forward import Attempt, deliver
from dispatcher.sandbox.samples import SigningKey, build_event, event_data
from dispatcher.signing import COBO
from dispatcher.store import endpoints as store
from dispatcher.store.delivery_options import endpoint_delivery_options
from dispatcher.store.endpoints import Endpoint
from dispatcher.store.pool import Conn
from dispatcher.store.secrets import reveal_endpoint_secret, tenant_signing_key
from dispatcher.transport import Transport

MAX_ENDPOINTS = 500


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def _signing_secret(svc: Services, conn: Conn, ep: Endpoint) -> str:
    if ep.signing_scheme == COBO:
        return await tenant_signing_key(conn, svc.secret_box, ep.tenant_id)
    return await reveal_endpoint_secret(conn, svc.secret_box, ep.id, tenant_id=ep.tenant_id)


def may_use_sandbox(caller: Caller) -> None:
    """The sandbox is the provider's test bench (a capture receiver it runs, samples of
    its whole catalogue): a customer's portal has no use for it."""
    if caller.scope.kind == "portal":
        raise Forbidden("the sandbox is not part of a tenant's portal", field="Authorization")


async def sandbox_endpoints(svc: Services, caller: Caller) -> list[Endpoint]:
    may_use_sandbox(caller)
    async with svc.pool.acquire() as conn:
        return await store.list_endpoints(conn, caller.tenant, state=None, after=None,
                                          limit=MAX_ENDPOINTS)


async def send_sample(svc: Services, caller: Caller, transport: Transport, endpoint_id: UUID,
                      type_: str) -> tuple[Endpoint, Attempt]:
    """One sample of `type_`, signed with the endpoint's secret and sent with its
    delivery options; what the receiver answered."""
    may_use_sandbox(caller)
    caller.may_write()
    data = event_data(svc.catalogue, type_)
    async with svc.pool.acquire() as conn:
        ep = await store.get_endpoint(conn, caller.tenant, endpoint_id)
        if ep is None:
            raise NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")
        secret = await _signing_secret(svc, conn, ep)
        options = await endpoint_delivery_options(conn, svc.secret_box, ep.tenant_id, ep.id)
    attempt = await deliver(transport, ep.url, SigningKey(ep.signing_scheme, secret),
                            build_event(type_, data), timeout=ep.timeout_seconds,
                            options=options)
    return ep, attempt


async def verify_captures(svc: Services, caller: Caller, capture_url: str,
                          found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The captured requests (as the capture receiver lists them, oldest first) sent
    to the tenant's endpoints, newest first, each with its signature checked."""
    out = []
    mine = await sandbox_endpoints(svc, caller)
    by_target = {_target(ep.url): ep for ep in mine
                 if ep.url == capture_url or ep.url.startswith(capture_url + "/")}
    async with svc.pool.acquire() as conn:
        for c in reversed(found):
            ep = by_target.get(str(c.get("path", "")))
            if ep is None:  # another tenant's, or not sent to an endpoint
                continue
            out.append(await _verdict(svc, conn, ep, c))
    return out


async def _verdict(svc: Services, conn: Conn, ep: Endpoint,
                   c: dict[str, Any]) -> dict[str, Any]:
    text = c.get("body")
    raw = text.encode() if isinstance(text, str) else base64.b64decode(
        str(c.get("body_base64", "")))
    headers = c.get("headers") if isinstance(c.get("headers"), dict) else {}
    received = c.get("received_timestamp")
    try:
        verifier = make_verifier(ep.signing_scheme, await _signing_secret(svc, conn, ep), None)
        why = None if verifier is None else verifier.check(
            CIMultiDict(headers), raw,
            now=received / 1000 if isinstance(received, int) else None)
    except (NotFound, ValidationError) as exc:
        why = exc.message
    return {**c, "endpoint_id": str(ep.id), "endpoint_url": ep.url,
            "body_text": raw.decode("utf-8", "replace"), "verified": why is None,
            "verification_error": why}
