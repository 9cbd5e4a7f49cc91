"""The labelled attempt series: one per tenant by default, one per endpoint only when
`metrics.per_endpoint` asks for it (an endpoint id label is unbounded)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from dispatcher import metrics
from dispatcher.config import Config


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    yield
    defaults = Config().metrics
    metrics.configure(per_tenant=defaults.per_tenant, per_endpoint=defaults.per_endpoint)


def _exposition() -> str:
    return generate_latest(metrics.REGISTRY).decode()


def test_by_default_attempts_are_counted_per_tenant_and_never_per_endpoint() -> None:
    defaults = Config().metrics
    metrics.configure(per_tenant=defaults.per_tenant, per_endpoint=defaults.per_endpoint)
    tenant, endpoint = uuid.uuid4(), uuid.uuid4()
    metrics.observe_attempt(tenant, endpoint, 0.02, failed=False)
    metrics.observe_attempt(tenant, endpoint, 0.5, failed=True)
    text = _exposition()
    assert f'dispatcher_tenant_attempts_total{{result="success",tenant_id="{tenant}"}} 1.0' in text
    assert f'dispatcher_tenant_attempts_total{{result="failure",tenant_id="{tenant}"}} 1.0' in text
    assert str(endpoint) not in text


def test_per_endpoint_durations_when_asked_for() -> None:
    metrics.configure(per_tenant=False, per_endpoint=True)
    tenant, endpoint = uuid.uuid4(), uuid.uuid4()
    metrics.observe_attempt(tenant, endpoint, 0.02, failed=False)
    text = _exposition()
    assert (f'dispatcher_endpoint_attempt_duration_seconds_bucket{{endpoint_id="{endpoint}",'
            f'le="0.025"}} 1.0') in text
    assert str(tenant) not in text
