"""Prometheus metrics. Gauges that describe the database (queue depth, oldest due,
endpoints by state) are refreshed by a maintenance job and by scrapes.

`dispatcher serve` with several worker processes sets PROMETHEUS_MULTIPROC_DIR for
them before they start: each process then writes its values to files there, and
`render()` in any of them answers the totals of all (prometheus_client's
multiprocess mode). With one process the registry below is read directly."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from dispatcher.model import DeliveryStatus, EndpointState

T = TypeVar("T")

if TYPE_CHECKING:
    from dispatcher.store.lookup import Gauges

REGISTRY = CollectorRegistry(auto_describe=True)

ATTEMPTS = Counter(
    "dispatcher_attempts", "Delivery attempts made by this process, by outcome",
    ["outcome"], registry=REGISTRY,
)
DELIVERIES_FINISHED = Counter(
    "dispatcher_deliveries_finished", "Deliveries that reached a final status here",
    ["status"], registry=REGISTRY,
)
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
ATTEMPT_SECONDS = Histogram(
    "dispatcher_attempt_duration_seconds", "Duration of one delivery attempt",
    buckets=ATTEMPT_BUCKETS, registry=REGISTRY,
)
DELIVERIES_BY_STATUS = Gauge(
    "dispatcher_deliveries", "Deliveries in the database by status",
    ["status"], registry=REGISTRY, multiprocess_mode="mostrecent",
)
QUEUE_DEPTH = Gauge(
    "dispatcher_queue_depth", "Deliveries due now and not leased", registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
OLDEST_DUE_SECONDS = Gauge(
    "dispatcher_oldest_due_age_seconds", "Age of the oldest due delivery", registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
ENDPOINTS_BY_STATE = Gauge(
    "dispatcher_endpoints", "Endpoints by state", ["state"], registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
OUTCOMES_DROPPED = Counter(
    "dispatcher_outcomes_dropped", "Attempt outcomes the database refused to store "
    "(the delivery is sent again when its lease ends)", registry=REGISTRY,
)
OUTCOMES_UNWRITTEN = Gauge(
    "dispatcher_outcomes_unwritten", "Attempt outcomes made and not yet written",
    registry=REGISTRY, multiprocess_mode="livesum",
)
OUTCOMES_UNWRITTEN_AGE = Gauge(
    "dispatcher_outcomes_unwritten_age_seconds",
    "Longest time a process has had outcomes waiting that it could not write",
    registry=REGISTRY, multiprocess_mode="livemax",
)
CONCURRENCY_DECREASES = Counter(
    "dispatcher_endpoint_concurrency_decreases",
    "Times an endpoint's adaptive in-flight limit was halved (429/503, timeouts, "
    "connection errors)", registry=REGISTRY,
)
ENDPOINTS_THROTTLED = Gauge(
    "dispatcher_endpoints_throttled",
    "Endpoints in a rate-limit backoff or below their max_in_flight, by kind",
    ["kind"], registry=REGISTRY, multiprocess_mode="mostrecent",
)
ENDPOINT_PAUSES = Counter(
    "dispatcher_endpoint_pauses", "Endpoints paused by failure thresholds", registry=REGISTRY,
)
CERTIFICATE_EXPIRES_IN = Gauge(
    "dispatcher_client_certificate_expires_in_seconds",
    "Seconds until the soonest-expiring endpoint client certificate (mTLS) expires "
    "(+Inf without any)", registry=REGISTRY, multiprocess_mode="mostrecent",
)
DELIVERIES_HELD = Gauge(
    "dispatcher_deliveries_held", "Unfinished deliveries held by paused or disabled "
    "endpoints", registry=REGISTRY, multiprocess_mode="mostrecent",
)
READY = Gauge(
    "dispatcher_ready", "1 when this process's /readyz answers 200, else 0",
    registry=REGISTRY, multiprocess_mode="mostrecent",
)
# Bounded by the number of tenants; off with metrics.per_tenant = false.
TENANT_ATTEMPTS = Counter(
    "dispatcher_tenant_attempts", "Delivery attempts by tenant and result (success, "
    "failure)", ["tenant_id", "result"], registry=REGISTRY,
)
# One series per endpoint: only with metrics.per_endpoint = true.
ENDPOINT_ATTEMPT_SECONDS = Histogram(
    "dispatcher_endpoint_attempt_duration_seconds",
    "Duration of one delivery attempt, by endpoint", ["endpoint_id"],
    buckets=ATTEMPT_BUCKETS, registry=REGISTRY,
)


class _Labels:
    """Which high-cardinality series this process records (`[metrics]`), and the
    children already bound (a label lookup costs more than the observation)."""

    per_tenant = True
    per_endpoint = False
    tenants: dict[tuple[object, bool], Counter] = {}
    endpoints: dict[object, Histogram] = {}


def configure(*, per_tenant: bool, per_endpoint: bool) -> None:
    _Labels.per_tenant, _Labels.per_endpoint = per_tenant, per_endpoint


def observe_attempt(tenant_id: object, endpoint_id: object, seconds: float,
                    failed: bool) -> None:
    """One attempt, in the labelled series `configure` turned on."""
    if _Labels.per_tenant:
        counter = _Labels.tenants.get((tenant_id, failed))
        if counter is None:
            counter = TENANT_ATTEMPTS.labels(str(tenant_id), "failure" if failed else "success")
            _Labels.tenants[(tenant_id, failed)] = counter
        counter.inc()
    if _Labels.per_endpoint:
        histogram = _Labels.endpoints.get(endpoint_id)
        if histogram is None:
            histogram = ENDPOINT_ATTEMPT_SECONDS.labels(str(endpoint_id))
            _Labels.endpoints[endpoint_id] = histogram
        histogram.observe(seconds)


def set_gauges(gauges: Gauges) -> None:
    """Publish what `store.lookup.read_gauges` read."""
    for status in DeliveryStatus:
        DELIVERIES_BY_STATUS.labels(status=status.label).set(
            gauges.deliveries_by_status.get(status, 0))
    QUEUE_DEPTH.set(gauges.queue_depth)
    OLDEST_DUE_SECONDS.set(gauges.oldest_due_seconds)
    for state in EndpointState:
        ENDPOINTS_BY_STATE.labels(state=state.value).set(
            gauges.endpoints_by_state.get(state.value, 0))
    for kind in ("rate_limited", "concurrency_reduced"):
        ENDPOINTS_THROTTLED.labels(kind=kind).set(gauges.endpoints_throttled.get(kind, 0))
    DELIVERIES_HELD.set(gauges.held)
    expires_in = gauges.certificate_expires_in
    CERTIFICATE_EXPIRES_IN.set(float("inf") if expires_in is None else expires_in)


def _all_workers() -> CollectorRegistry | None:
    """The totals of every worker of this `serve`; None in a single process."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def _read_all(read: Callable[[CollectorRegistry], T]) -> T | None:
    """`read` over every worker's totals (None in a single process). The supervisor
    deletes a dead worker's files while another worker may be reading them; a file
    that vanishes mid-read means: read again."""
    for attempt in range(3):
        registry = _all_workers()
        if registry is None:
            return None
        try:
            return read(registry)
        except FileNotFoundError:
            if attempt == 2:
                raise
    return None  # not reached


def render() -> bytes:
    """The text exposition: this process's registry, or every worker's totals."""
    shared = _read_all(generate_latest)
    return shared if shared is not None else generate_latest(REGISTRY)


def shared_outcome_backlog() -> tuple[int, float] | None:
    """Unwritten outcomes summed over this `serve`'s workers and the longest time one
    of them has been stuck, from the gauges each worker publishes every second; None
    in a single process (ask the worker itself)."""
    values = _read_all(lambda registry: {s.name: s.value for m in registry.collect()
                                         for s in m.samples})
    if values is None:
        return None
    return (int(values.get("dispatcher_outcomes_unwritten", 0)),
            float(values.get("dispatcher_outcomes_unwritten_age_seconds", 0.0)))
