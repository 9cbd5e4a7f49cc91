"""The sandbox page: what a `dispatcher sandbox capture` receiver (at
`console.sandbox_capture_url`) received at this tenant's endpoints, newest first,
each with its signature verdict against the endpoint's own secret; and a button
that sends a signed sample event of a catalogue type to one of the endpoints,
exactly as `dispatcher sandbox send` does (through the guarded HTTP client)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import aiohttp
from aiohttp import web

from dispatcher.console.access import FORM
from dispatcher.console.render import render
from dispatcher.errors import ValidationError
from dispatcher.operations import sandbox as ops
from dispatcher.sandbox.capture import REQUESTS_PATH
from dispatcher.web.context import CALLER, CONFIG, TRANSPORT, services

FETCH_TIMEOUT = aiohttp.ClientTimeout(total=3)


async def _fetch(capture_url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=FETCH_TIMEOUT) as http, \
            http.get(capture_url + REQUESTS_PATH) as resp:
        resp.raise_for_status()
        body = await resp.json()
    data = body.get("data") if isinstance(body, dict) else None
    return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []


async def captures(request: web.Request) -> tuple[list[dict[str, Any]], str]:
    """The tenant's captured requests, newest first, and a problem to show (or "")."""
    ops.may_use_sandbox(request[CALLER])  # before asking the capture receiver anything
    capture_url = request.app[CONFIG].console.sandbox_capture_url.rstrip("/")
    if not capture_url:
        return [], ""
    try:
        found = await _fetch(capture_url)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return [], f"The capture receiver at {capture_url} did not answer: {exc}"
    return await ops.verify_captures(services(request.app), request[CALLER], capture_url,
                                     found), ""


async def sandbox_page(request: web.Request, *, message: str = "",
                       chosen: dict[str, str] | None = None) -> web.StreamResponse:
    found, problem = await captures(request)
    svc = services(request.app)
    mine = await ops.sandbox_endpoints(svc, request[CALLER])
    return render(request, "sandbox.html", captures=found, problem=problem, message=message,
                  capture_url=request.app[CONFIG].console.sandbox_capture_url,
                  endpoints=mine, types=sorted(svc.catalogue), chosen=chosen or {})


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
    ep, attempt = await ops.send_sample(services(request.app), request[CALLER],
                                        request.app[TRANSPORT], endpoint_id, type_)
    return await sandbox_page(
        request, message=f"Sent a sample {type_} to {ep.url}: {attempt.summary()}.",
        chosen={"type": type_, "endpoint_id": str(ep.id)})
