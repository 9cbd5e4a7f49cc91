"""How objects look on the wire. Times are Unix milliseconds, ids are strings,
statuses are Cobo's labels (Pending, Retrying, Success, Failed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from dispatcher.clock import to_ms
from dispatcher.config import HealthConfig
from dispatcher.store.endpoints import Endpoint
from dispatcher.store.events import PublishedEvent
from dispatcher.store.health import EndpointHealth
from dispatcher.store.lookup import AttemptView, DeliveryView, EventView, event_data
from dispatcher.transport.validate import rfc3339


def ms(when: datetime | None) -> int | None:
    return None if when is None else to_ms(when)


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
