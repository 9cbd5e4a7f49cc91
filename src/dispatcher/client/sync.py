"""`SyncClient`: the same calls as `Client`, blocking."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from dispatcher.client.aio import Client
from dispatcher.client.models import (
    Attempt,
    AuditEntry,
    Callback,
    CallbackRequest,
    Delivery,
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


class SyncClient:
    """The same calls as `Client`, blocking; use it as a context manager or close() it."""

    def __init__(self, url: str, api_key: str, tenant: str | None = None, *,
                 timeout: float = 10.0) -> None:
        self._runner = asyncio.Runner()
        self._client = Client(url, api_key, tenant, timeout=timeout)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def _run(self, coro: Any) -> Any:
        return self._runner.run(coro)

    def publish(self, type: str, data: Any, *, idempotency_key: str | None = None,
                channels: Iterable[str] | None = None) -> PublishedEvent:
        result: PublishedEvent = self._run(
            self._client.publish(type, data, idempotency_key=idempotency_key,
                                 channels=channels))
        return result

    def publish_batch(self, events: Iterable[Mapping[str, Any]]) -> list[PublishedEvent]:
        result: list[PublishedEvent] = self._run(self._client.publish_batch(events))
        return result

    def get_event(self, event_id: str) -> Event:
        result: Event = self._run(self._client.get_event(event_id))
        return result

    def list_events(self, **filters: Any) -> Page[Event]:
        result: Page[Event] = self._run(self._client.list_events(**filters))
        return result

    def get_delivery(self, endpoint_id: str, event_id: str) -> Delivery:
        result: Delivery = self._run(self._client.get_delivery(endpoint_id, event_id))
        return result

    def list_deliveries(self, endpoint_id: str, **filters: Any) -> Page[Delivery]:
        result: Page[Delivery] = self._run(self._client.list_deliveries(endpoint_id, **filters))
        return result

    def list_attempts(self, endpoint_id: str, event_id: str, **page: Any) -> Page[Attempt]:
        result: Page[Attempt] = self._run(
            self._client.list_attempts(endpoint_id, event_id, **page))
        return result

    def retry(self, endpoint_id: str, event_id: str) -> None:
        self._run(self._client.retry(endpoint_id, event_id))

    def replay(self, endpoint_id: str, **filters: Any) -> int:
        result: int = self._run(self._client.replay(endpoint_id, **filters))
        return result

    def create_endpoint(self, url: str, *, kind: str | None = None, **fields: Any) -> Endpoint:
        result: Endpoint = self._run(self._client.create_endpoint(url, kind=kind, **fields))
        return result

    def list_endpoints(self, **filters: Any) -> Page[Endpoint]:
        result: Page[Endpoint] = self._run(self._client.list_endpoints(**filters))
        return result

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        result: Endpoint = self._run(self._client.get_endpoint(endpoint_id))
        return result

    def update_endpoint(self, endpoint_id: str, **fields: Any) -> Endpoint:
        result: Endpoint = self._run(self._client.update_endpoint(endpoint_id, **fields))
        return result

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._run(self._client.delete_endpoint(endpoint_id))

    def pause_endpoint(self, endpoint_id: str) -> Endpoint:
        result: Endpoint = self._run(self._client.pause_endpoint(endpoint_id))
        return result

    def resume_endpoint(self, endpoint_id: str) -> Endpoint:
        result: Endpoint = self._run(self._client.resume_endpoint(endpoint_id))
        return result

    def get_endpoint_health(self, endpoint_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._run(self._client.get_endpoint_health(endpoint_id))
        return result

    def rotate_secret(self, endpoint_id: str) -> EndpointSecret:
        result: EndpointSecret = self._run(self._client.rotate_secret(endpoint_id))
        return result

    def get_secret(self, endpoint_id: str) -> EndpointSecret:
        result: EndpointSecret = self._run(self._client.get_secret(endpoint_id))
        return result

    def list_event_types(self, **filters: Any) -> Page[EventType]:
        result: Page[EventType] = self._run(self._client.list_event_types(**filters))
        return result

    def get_event_type(self, name: str) -> EventType:
        result: EventType = self._run(self._client.get_event_type(name))
        return result

    def create_event_type(self, name: str, description: str = "",
                          sample: Any = None) -> EventType:
        result: EventType = self._run(self._client.create_event_type(name, description, sample))
        return result

    def delete_event_type(self, name: str) -> None:
        self._run(self._client.delete_event_type(name))

    def request_approval(self, type: str, data: Mapping[str, Any], *,
                         endpoint_id: str | None = None, deadline_seconds: float | None = None,
                         idempotency_key: str | None = None) -> CallbackRequest:
        result: CallbackRequest = self._run(self._client.request_approval(
            type, data, endpoint_id=endpoint_id, deadline_seconds=deadline_seconds,
            idempotency_key=idempotency_key))
        return result

    def get_callback(self, callback_id: str, wait: int | None = None) -> Callback:
        result: Callback = self._run(self._client.get_callback(callback_id, wait))
        return result

    def wait_for_decision(self, callback_id: str, timeout: float) -> Callback:
        result: Callback = self._run(self._client.wait_for_decision(callback_id, timeout))
        return result

    def list_callbacks(self, **filters: Any) -> Page[Callback]:
        result: Page[Callback] = self._run(self._client.list_callbacks(**filters))
        return result

    def callback_logs(self, callback_id: str, **page: Any) -> Page[Attempt]:
        result: Page[Attempt] = self._run(self._client.callback_logs(callback_id, **page))
        return result

    def retry_callback(self, callback_id: str) -> None:
        self._run(self._client.retry_callback(callback_id))

    def create_tenant(self, name: str, metadata: Mapping[str, Any] | None = None) -> Tenant:
        result: Tenant = self._run(self._client.create_tenant(name, metadata))
        return result

    def list_tenants(self, **filters: Any) -> Page[Tenant]:
        result: Page[Tenant] = self._run(self._client.list_tenants(**filters))
        return result

    def list_audit_log(self, **filters: Any) -> Page[AuditEntry]:
        result: Page[AuditEntry] = self._run(self._client.list_audit_log(**filters))
        return result

    def get_tenant(self, tenant: str) -> Tenant:
        result: Tenant = self._run(self._client.get_tenant(tenant))
        return result

    def update_tenant(self, tenant: str, *, name: str | None = None,
                      metadata: Mapping[str, Any] | None = None) -> Tenant:
        result: Tenant = self._run(self._client.update_tenant(tenant, name=name,
                                                              metadata=metadata))
        return result

    def delete_tenant(self, tenant: str, *, force: bool = False) -> None:
        self._run(self._client.delete_tenant(tenant, force=force))

    def create_portal_link(self, tenant: str | None = None, *, read_only: bool = False,
                           expires_in: int | None = None) -> PortalLink:
        result: PortalLink = self._run(self._client.create_portal_link(
            tenant, read_only=read_only, expires_in=expires_in))
        return result

    def create_tenant_key(self, tenant: str, name: str = "") -> TenantKey:
        result: TenantKey = self._run(self._client.create_tenant_key(tenant, name))
        return result

    def tenant_stats(self, tenant: str) -> TenantStats:
        result: TenantStats = self._run(self._client.tenant_stats(tenant))
        return result
