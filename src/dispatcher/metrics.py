"""Prometheus metrics, one registry per process. Gauges that describe the database
(queue depth, oldest due, endpoints by state) are refreshed by a maintenance job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dispatcher.model import DeliveryStatus, EndpointState

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
ATTEMPT_SECONDS = Histogram(
    "dispatcher_attempt_duration_seconds", "Duration of one delivery attempt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=REGISTRY,
)
DELIVERIES_BY_STATUS = Gauge(
    "dispatcher_deliveries", "Deliveries in the database by status",
    ["status"], registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "dispatcher_queue_depth", "Deliveries due now and not leased", registry=REGISTRY,
)
OLDEST_DUE_SECONDS = Gauge(
    "dispatcher_oldest_due_age_seconds", "Age of the oldest due delivery", registry=REGISTRY,
)
ENDPOINTS_BY_STATE = Gauge(
    "dispatcher_endpoints", "Endpoints by state", ["state"], registry=REGISTRY,
)
OUTCOMES_DROPPED = Counter(
    "dispatcher_outcomes_dropped", "Attempt outcomes the database refused to store "
    "(the delivery is sent again when its lease ends)", registry=REGISTRY,
)
OUTCOMES_UNWRITTEN = Gauge(
    "dispatcher_outcomes_unwritten", "Attempt outcomes made here and not yet written",
    registry=REGISTRY,
)
OUTCOMES_UNWRITTEN_AGE = Gauge(
    "dispatcher_outcomes_unwritten_age_seconds",
    "How long this process has had outcomes waiting that it could not write",
    registry=REGISTRY,
)
ENDPOINT_PAUSES = Counter(
    "dispatcher_endpoint_pauses", "Endpoints paused by failure thresholds", registry=REGISTRY,
)


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
