"""The sandbox page: what a `dispatcher sandbox capture` receiver (at
`console.sandbox_capture_url`) received at this tenant's endpoints, newest first,
each with its signature verdict against the endpoint's own secret; and a button
that sends a signed sample event of a catalogue type to one of the endpoints,
exactly as `dispatcher sandbox send` does (through the guarded HTTP client)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from dispatcher.api.context import CATALOGUE, CONFIG, POOL, SECRET_BOX, TENANT, TRANSPORT
from dispatcher.console.access import FORM
from dispatcher.console.render import render
from dispatcher.errors import NotFound, ValidationError
from dispatcher.sandbox.capture import REQUESTS_PATH, make_verifier
from dispatcher.sandbox.forward import deliver
from dispatcher.sandbox.samples import SigningKey, build_event, event_data
from dispatcher.signing import COBO
from dispatcher.store import endpoints as store
from dispatcher.store.delivery_options import endpoint_delivery_options
from dispatcher.store.endpoints import Endpoint
from dispatcher.store.pool import Conn
from dispatcher.store.secrets import reveal_endpoint_secret, tenant_signing_key

FETCH_TIMEOUT = aiohttp.ClientTimeout(total=3)
MAX_ENDPOINTS = 500


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def _signing_secret(conn: Conn, request: web.Request, ep: Endpoint) -> str:
    box = request.app[SECRET_BOX]
    if ep.signing_scheme == COBO:
        return await tenant_signing_key(conn, box, ep.tenant_id)
    return await reveal_endpoint_secret(conn, box, ep.id, tenant_id=ep.tenant_id)


async def _fetch(capture_url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=FETCH_TIMEOUT) as http, \
            http.get(capture_url + REQUESTS_PATH) as resp:
        resp.raise_for_status()
        body = await resp.json()
    data = body.get("data") if isinstance(body, dict) else None
    return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []


async def captures(request: web.Request) -> tuple[list[dict[str, Any]], str]:
    """The tenant's captured requests, newest first, and a problem to show (or "")."""
    capture_url = request.app[CONFIG].console.sandbox_capture_url.rstrip("/")
    if not capture_url:
        return [], ""
    try:
        found = await _fetch(capture_url)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return [], f"The capture receiver at {capture_url} did not answer: {exc}"
    tenant_id = request[TENANT]
    out = []
    async with request.app[POOL].acquire() as conn:
        mine = await store.list_endpoints(conn, tenant_id, state=None, after=None,
                                          limit=MAX_ENDPOINTS)
        by_target = {_target(ep.url): ep for ep in mine
                     if ep.url == capture_url or ep.url.startswith(capture_url + "/")}
        for c in reversed(found):
            ep = by_target.get(str(c.get("path", "")))
            if ep is None:  # another tenant's, or not sent to an endpoint
                continue
            out.append(await _verdict(conn, request, ep, c))
    return out, ""


async def _verdict(conn: Conn, request: web.Request, ep: Endpoint,
                   c: dict[str, Any]) -> dict[str, Any]:
    text = c.get("body")
    raw = text.encode() if isinstance(text, str) else base64.b64decode(
        str(c.get("body_base64", "")))
    headers = c.get("headers") if isinstance(c.get("headers"), dict) else {}
    received = c.get("received_timestamp")
    try:
        verifier = make_verifier(ep.signing_scheme, await _signing_secret(conn, request, ep),
                                 None)
        why = None if verifier is None else verifier.check(
            CIMultiDict(headers), raw,
            now=received / 1000 if isinstance(received, int) else None)
    except (NotFound, ValidationError) as exc:
        why = exc.message
    return {**c, "endpoint_id": str(ep.id), "endpoint_url": ep.url,
            "body_text": raw.decode("utf-8", "replace"), "verified": why is None,
            "verification_error": why}


async def sandbox_page(request: web.Request, *, message: str = "",
                       chosen: dict[str, str] | None = None) -> web.StreamResponse:
    found, problem = await captures(request)
    async with request.app[POOL].acquire() as conn:
        mine = await store.list_endpoints(conn, request[TENANT], state=None, after=None,
                                          limit=MAX_ENDPOINTS)
    catalogue = request.app[CATALOGUE]
    return render(request, "sandbox.html", captures=found, problem=problem, message=message,
                  capture_url=request.app[CONFIG].console.sandbox_capture_url,
                  endpoints=mine, types=sorted(catalogue), chosen=chosen or {})


async def captures_fragment(request: web.Request) -> web.StreamResponse:
    """The list alone, fetched every few seconds by the page's script."""
    found, problem = await captures(request)
    return render(request, "_captures.html", captures=found, problem=problem)


async def send_sample(request: web.Request) -> web.StreamResponse:
    form = request[FORM]
    type_ = form.get("type", "")
    try:
        endpoint_id = UUID(form.get("endpoint_id", ""))
    except ValueError as exc:
        raise ValidationError("choose an endpoint", field="endpoint_id") from exc
    catalogue = request.app[CATALOGUE]
    data = event_data(catalogue, type_)
    async with request.app[POOL].acquire() as conn:
        ep = await store.get_endpoint(conn, request[TENANT], endpoint_id)
        if ep is None:
            raise NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")
        secret = await _signing_secret(conn, request, ep)
        options = await endpoint_delivery_options(conn, request.app[SECRET_BOX], ep.tenant_id,
                                                  ep.id)
    attempt = await deliver(request.app[TRANSPORT], ep.url, SigningKey(ep.signing_scheme, secret),
                            build_event(type_, data), timeout=ep.timeout_seconds,
                            options=options)
    return await sandbox_page(
        request, message=f"Sent a sample {type_} to {ep.url}: {attempt.summary()}.",
        chosen={"type": type_, "endpoint_id": str(ep.id)})
