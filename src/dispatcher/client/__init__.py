"""Python client of the management API for the operator's services and the CLI:
`Client` (async, aiohttp) and `SyncClient` (the same calls, blocking). Answers are
typed dataclasses (each keeps the API's JSON as `raw`); every API error is raised as
`ApiError` carrying the API's code, message and field and the HTTP status.

Publishing is safe to repeat: each publish carries an `Idempotency-Key` (generated
when none is given) that is reused when the call is retried after a connection error
or a 503, so a retry never publishes twice."""

from __future__ import annotations

from dispatcher.client.aio import Client
from dispatcher.client.models import (
    CALLBACK_DECIDED,
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
    DeliveryRef,
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
)
from dispatcher.client.options import (
    basic_auth,
    bearer_auth,
    client_tls,
    oauth2_auth,
)
from dispatcher.client.sync import (
    SyncClient,
)

__all__ = [
    "CALLBACK_DECIDED",
    "IDEMPOTENCY_HEADER",
    "MAX_WAIT",
    "RETRY_DELAYS",
    "TENANT_HEADER",
    "UNREACHABLE",
    "ApiError",
    "Attempt",
    "AuditEntry",
    "Callback",
    "CallbackRequest",
    "Client",
    "Delivery",
    "DeliveryRef",
    "Endpoint",
    "EndpointSecret",
    "Event",
    "EventType",
    "Page",
    "PortalLink",
    "PublishedEvent",
    "SyncClient",
    "Tenant",
    "TenantKey",
    "TenantStats",
    "basic_auth",
    "bearer_auth",
    "client_tls",
    "oauth2_auth",
]
