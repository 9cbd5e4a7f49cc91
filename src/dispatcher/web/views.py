"""How operation results look on the wire (the API answers these) and in the
console's pages (which render the same shapes). Times are Unix milliseconds, ids
are strings, statuses are Cobo's labels (Pending, Retrying, Success, Failed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from dispatcher.clock import to_ms
from dispatcher.config import HealthConfig
from dispatcher.model import DeliveryStatus, EndpointState
from dispatcher.operations.endpoints import Changed
from dispatcher.operations.pages import Page
from dispatcher.operations.secrets import Rotated, SecretMaterial
from dispatcher.operations.tenants import PortalLink, TenantStats
from dispatcher.store.audit import Entry
from dispatcher.store.callbacks import CallbackView
from dispatcher.store.endpoints import Endpoint
from dispatcher.store.events import PublishedEvent
from dispatcher.store.health import EndpointHealth
from dispatcher.store.lookup import AttemptView, DeliveryView, EventView, event_data
from dispatcher.store.tenants import Tenant
from dispatcher.transport.validate import rfc3339

T = TypeVar("T")


def ms(when: datetime | None) -> int | None:
    return None if when is None else to_ms(when)


def page_json(page: Page[T], shape: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    return {"data": [shape(item) for item in page.items], "next_cursor": page.next_cursor}


def material_json(m: SecretMaterial) -> dict[str, Any]:
    """The signing material as answered once: `secret`, or `public_key` and PEM."""
    if m.secret is not None:
        return {"secret": m.secret}
    return {"public_key": m.public_key, "public_key_pem": m.public_key_pem}


def changed_json(changed: Changed) -> dict[str, Any]:
    """An endpoint after a create or update, with the material the change made."""
    shown = endpoint_json(changed.endpoint)
    if changed.material is not None:
        shown.update(material_json(changed.material))
    return shown


def rotated_json(r: Rotated) -> dict[str, Any]:
    return {"signing_scheme": r.material.signing_scheme, **material_json(r.material),
            "previous_secret_expires_timestamp": ms(r.previous_expires_at)}


def endpoint_json(ep: Endpoint) -> dict[str, Any]:
    return {
        "id": str(ep.id),
        "kind": ep.kind,
        "url": ep.url,
        "description": ep.description,
        "event_types": list(ep.event_types),
        "signing_scheme": ep.signing_scheme,
        "retry_policy": ep.retry_policy,
        "timeout_seconds": ep.timeout_seconds,
        "max_in_flight": ep.max_in_flight,
        "metadata": ep.metadata,
        "pause_window_threshold": ep.pause_window_threshold,
        "pause_total_threshold": ep.pause_total_threshold,
        "state": ep.state,
        "state_reason": ep.state_reason,
        "state_changed_timestamp": ms(ep.state_changed_at),
        "created_timestamp": to_ms(ep.created_at),
        "updated_timestamp": to_ms(ep.updated_at),
        "effective_max_in_flight": min(ep.effective_max_in_flight or ep.max_in_flight,
                                       ep.max_in_flight),
        "rate_limited_until_timestamp": ms(ep.rate_limited_until),
        "headers": {name: value for name, value in ep.headers},
        "auth": ep.auth,
        "tls": ep.tls,
        "propagate_trace_context": ep.propagate_trace_context,
        "channels": list(ep.channels),
    }


# A client certificate this close to its expiry (or past it) is warned about.
CERTIFICATE_WARNING = timedelta(days=30)


def health_warnings(h: EndpointHealth, now: datetime) -> list[dict[str, Any]]:
    """What will stop deliveries soon unless someone acts: an expiring or expired
    client certificate."""
    not_after = h.client_certificate_not_after
    if not_after is None or not_after - now > CERTIFICATE_WARNING:
        return []
    shown = rfc3339(not_after)
    if not_after <= now:
        return [{"code": "client_certificate_expired", "not_after": shown,
                 "message": f"the TLS client certificate expired at {shown}; receivers "
                            "that require it refuse deliveries until a new one is set"}]
    days = (not_after - now).days
    return [{"code": "client_certificate_expiring", "not_after": shown,
             "message": f"the TLS client certificate expires at {shown} (in {days} "
                        "days); set a new one before then"}]


def health_json(h: EndpointHealth, cfg: HealthConfig, now: datetime) -> dict[str, Any]:
    return {
        "endpoint_id": str(h.endpoint_id),
        "state": str(h.state),
        "state_reason": h.state_reason,
        "state_changed_timestamp": ms(h.state_changed_at),
        "failures_in_window": h.failures_in_window,
        "window_seconds": cfg.window_seconds,
        "window_threshold": h.window_threshold or cfg.window_threshold,
        "failures_since_resume": h.failures_since_resume,
        "total_threshold": h.total_threshold or cfg.total_threshold,
        "held": h.held,
        "redrive_pending": h.redrive_pending,
        "warnings": health_warnings(h, now),
    }


def published_json(ev: PublishedEvent) -> dict[str, Any]:
    return {
        "id": str(ev.id),
        "type": ev.type,
        "created_timestamp": to_ms(ev.created_at),
        "deliveries": [{"endpoint_id": str(endpoint_id), "status": status.label}
                       for endpoint_id, status in ev.deliveries],
        "duplicate": ev.duplicate,
    }


def _delivery_state(d: DeliveryView) -> dict[str, Any]:
    return {
        "status": d.status.label,
        "next_retry_timestamp": ms(d.next_retry_at),
        "retries_left": d.retries_left,
        "attempts": d.attempts,
        "last_attempt_timestamp": ms(d.last_attempt_at),
        "failure_reason": d.failure_reason,
        "held": d.held_since is not None,
        "ordering_key": d.ordering_key,
        "blocked_by": None if d.blocked_by is None else str(d.blocked_by),
    }


def event_status_json(d: DeliveryView) -> dict[str, Any]:
    """One event at one endpoint, shaped like Cobo's webhook event record."""
    return {
        "event_id": str(d.event_id),
        "endpoint_id": str(d.endpoint_id),
        "url": d.url,
        "created_timestamp": to_ms(d.created_at),
        "type": d.type,
        "data": d.data,
        **_delivery_state(d),
    }


def event_json(ev: EventView, deliveries: list[DeliveryView] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(ev.id),
        "type": ev.type,
        "created_timestamp": to_ms(ev.created_at),
        "data": event_data(ev.body),
    }
    if deliveries is not None:
        out["deliveries"] = [{"endpoint_id": str(d.endpoint_id), "url": d.url,
                              **_delivery_state(d)} for d in deliveries]
    return out


def attempt_json(a: AttemptView, request_body: bytes) -> dict[str, Any]:
    return {
        "attempt": a.attempt_number,
        "timestamp": to_ms(a.started_at),
        "duration_ms": a.duration_ms,
        "request": {"headers": a.request_headers,
                    "body": request_body.decode("utf-8", errors="replace")},
        "response": None if a.response_status is None else {
            "status": a.response_status,
            "headers": a.response_headers or {},
            "body": a.response_body or "",
        },
        "failure_reason": a.failure_reason,
        "error": a.error_detail,
    }


def callback_json(c: CallbackView) -> dict[str, Any]:
    return {
        "id": str(c.id),
        "type": c.type,
        "data": c.data,
        "endpoint_id": str(c.endpoint_id),
        "status": str(c.status),
        "decision": c.decision,
        "decided_timestamp": ms(c.decided_at),
        "attempts": c.attempts,
        "retries_left": c.retries_left,
        "next_retry_timestamp": ms(c.next_retry_at),
        "failure_reason": c.failure_reason,
        "held": c.held_since is not None and not c.decided,
        "created_timestamp": to_ms(c.created_at),
        "deadline_timestamp": to_ms(c.deadline_at),
    }


def tenant_json(t: Tenant) -> dict[str, Any]:
    return {"id": str(t.id), "name": t.name, "metadata": t.metadata,
            "created_timestamp": to_ms(t.created_at), "updated_timestamp": to_ms(t.updated_at)}


def stats_json(s: TenantStats) -> dict[str, Any]:
    """A tenant's statistics as the API answers them and the console shows them."""
    return {
        "tenant_id": str(s.tenant_id),
        "endpoints": {e.value: s.counts.endpoints.get(e.value, 0) for e in EndpointState},
        "deliveries": {d.label: s.counts.deliveries.get(d.value, 0) for d in DeliveryStatus},
        "failures_in_window": s.counts.failures_in_window,
        "window_seconds": s.window_seconds,
    }


def portal_link_json(link: PortalLink) -> dict[str, Any]:
    return {"url": link.url, "token": link.token, "tenant_id": str(link.tenant_id),
            "read_only": link.read_only, "expires_timestamp": to_ms(link.expires_at)}


def audit_entry_json(e: Entry) -> dict[str, Any]:
    a = e.actor
    return {
        "seq": e.seq, "timestamp": to_ms(e.at),
        "actor": {"type": a.type, "id": a.id, "via": a.via,
                  "key_id": None if a.key_id is None else str(a.key_id),
                  "session_id": None if a.session_id is None else str(a.session_id),
                  "address": a.address},
        "tenant_id": None if e.tenant_id is None else str(e.tenant_id),
        "action": e.action, "target": {"type": e.target_type, "id": e.target_id},
        "changes": e.changes, "hash": e.hash.hex(),
    }
