"""What the API answers, as typed dataclasses (each keeps its JSON as `raw`), and
`ApiError`, the one error every call raises."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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
    propagate_trace_context: bool = True
    channels: list[str] = field(default_factory=list)
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
class AuditEntry:
    """One change in the audit log: `actor` is {type, id, via, key_id, session_id,
    address}, `target` {type, id}, `changes` {field: {old, new}}."""

    seq: int
    timestamp: int
    actor: dict[str, Any]
    tenant_id: str | None
    action: str
    target: dict[str, Any]
    changes: dict[str, Any]
    hash: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class PortalLink:
    """A link that opens the console as one tenant's portal until `expires_timestamp`."""

    url: str
    token: str
    tenant_id: str
    read_only: bool
    expires_timestamp: int
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
