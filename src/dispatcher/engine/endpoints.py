"""What a worker needs to know about an endpoint to send to it, cached by the
endpoint's version (bumped on every change) so claims cost no extra queries, and
read again whenever a change is notified, before any request to it starts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from dispatcher.clock import Clock
from dispatcher.errors import DispatcherError
from dispatcher.retry import RetryPolicy
from dispatcher.secretbox import SecretBox
from dispatcher.signing import COBO, Signer, make_signer
from dispatcher.store.delivery_options import open_delivery_options
from dispatcher.store.pool import DB_ERRORS, Conn
from dispatcher.store.secrets import decrypt_endpoint_secrets, tenant_signing_key
from dispatcher.transport.options import NO_OPTIONS, EndpointOptions

log = structlog.get_logger(__name__)

REFRESH_RETRY_SECONDS = 0.5


@dataclass(slots=True)
class EndpointTarget:
    id: UUID
    version: int
    url: str
    tenant_id: UUID
    active: bool
    usable: bool  # False when its signing material cannot be loaded
    max_in_flight: int
    policy: RetryPolicy
    timeout: float  # seconds, for the whole attempt
    signer: Signer
    # A rotation's old secret stops being used at this time; reload then.
    stale_after: datetime | None
    # A temporary endpoint of `dispatcher listen`: sent by the process holding the
    # listener's connection, never by the engine.
    listener: bool = False
    # Shared backpressure (store/backpressure.py): no request starts before
    # rate_limited_until; at most effective_max_in_flight requests at once.
    rate_limited_until: datetime | None = None
    effective_max_in_flight: int = 0
    concurrency_changed_at: datetime | None = None
    callback: bool = False  # a callback endpoint: answers are classified as decisions
    cobo_url: str | None = None  # a cobo webhook endpoint: its URL goes into the body
    # Custom headers, receiver auth and client TLS, decrypted.
    options: EndpointOptions = NO_OPTIONS
    propagate_trace: bool = True  # requests carry traceparent when tracing is on


_LOAD = """
SELECT ep.id, ep.tenant_id, ep.version, ep.url, ep.state, ep.max_in_flight, ep.retry_policy,
       ep.timeout_seconds, ep.signing_scheme, ep.secret_enc, ep.previous_secret_enc,
       ep.previous_secret_expires_at, ep.listener_owner IS NOT NULL AS listener,
       ep.rate_limited_until, ep.concurrency_changed_at,
       least(coalesce(ep.effective_max_in_flight, ep.max_in_flight), ep.max_in_flight)
           AS effective_max_in_flight,
       ep.kind, ep.headers, ep.auth_secret_enc, ep.tls_secret_enc, ep.propagate_trace_context
FROM endpoints ep WHERE ep.id = ANY($1::uuid[])
"""


class _Unsigned:
    def sign(self, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
        raise AssertionError("an unusable endpoint is never sent to")


_UNSIGNED = _Unsigned()


class EndpointCache:
    def __init__(
        self, box: SecretBox, policies: Mapping[str, RetryPolicy], default_policy: str
    ) -> None:
        self._box = box
        self._policies = policies
        self._default_policy = default_policy
        self._targets: dict[UUID, EndpointTarget] = {}
        # Deleted endpoints: a load that read the row before the delete committed
        # must not bring it back.
        self._deleted: set[UUID] = set()

    def get(self, endpoint_id: UUID) -> EndpointTarget | None:
        return self._targets.get(endpoint_id)

    def __contains__(self, endpoint_id: UUID) -> bool:
        return endpoint_id in self._targets

    def ids(self) -> list[UUID]:
        return list(self._targets)

    def listener_ids(self) -> list[UUID]:
        return [t.id for t in self._targets.values() if t.listener]

    def stale(self, wanted: Iterable[tuple[UUID, int]], now: datetime) -> set[UUID]:
        """Endpoints whose cached copy is missing or older than the claimed version."""
        out: set[UUID] = set()
        for endpoint_id, version in wanted:
            t = self._targets.get(endpoint_id)
            if t is None or t.version != version or (t.stale_after and now >= t.stale_after):
                out.add(endpoint_id)
        return out

    async def load(self, conn: Conn, ids: Iterable[UUID], now: datetime) -> None:
        """Read these endpoints again. One that no longer exists is forgotten for
        good; a copy is never replaced by an older version read concurrently."""
        ids = list(ids)
        if not ids:
            return
        rows = await conn.fetch(_LOAD, ids)
        for gone in set(ids) - {r["id"] for r in rows}:
            self._targets.pop(gone, None)
            self._deleted.add(gone)
        for r in rows:
            known = self._targets.get(r["id"])
            if r["id"] in self._deleted or (known is not None and known.version > r["version"]):
                continue
            options = NO_OPTIONS
            try:
                signer = await self._signer(conn, r, now)
                options = open_delivery_options(self._box, r["id"], r["headers"],
                                                r["auth_secret_enc"], r["tls_secret_enc"])
            except DispatcherError as exc:
                # Its deliveries wait (not failed) until the endpoint is fixed, which
                # bumps its version and makes this cache load it again.
                log.error("endpoint.unusable", endpoint_id=str(r["id"]), error=exc.message)
                signer = None
            expires = r["previous_secret_expires_at"]
            self._targets[r["id"]] = EndpointTarget(
                id=r["id"],
                version=r["version"],
                tenant_id=r["tenant_id"],
                url=r["url"],
                active=r["state"] == "active",
                usable=signer is not None,
                max_in_flight=r["max_in_flight"],
                policy=self._policies.get(r["retry_policy"])
                or self._policies[self._default_policy],
                timeout=r["timeout_seconds"],
                signer=signer or _UNSIGNED,
                stale_after=expires if expires is not None and expires > now else None,
                listener=r["listener"],
                rate_limited_until=r["rate_limited_until"],
                effective_max_in_flight=r["effective_max_in_flight"],
                concurrency_changed_at=r["concurrency_changed_at"],
                callback=r["kind"] == "callback",
                cobo_url=r["url"] if r["signing_scheme"] == COBO and r["kind"] != "callback"
                else None,
                options=options,
                propagate_trace=r["propagate_trace_context"],
            )

    async def _signer(self, conn: Conn, row: asyncpg.Record, now: datetime) -> Signer:
        scheme = row["signing_scheme"]
        if scheme == "cobo":
            secrets = [await tenant_signing_key(conn, self._box, row["tenant_id"])]
        else:
            secrets = decrypt_endpoint_secrets(
                self._box, row["id"], row["secret_enc"], row["previous_secret_enc"],
                row["previous_secret_expires_at"], now,
            )
        return make_signer(scheme, secrets)


class EndpointRefresh:
    """Endpoint changes (pause, disable, update, delete) notified by whichever process
    made them: from then on no request to that endpoint starts here until it has been
    read again, and rows claimed but not yet sent are then held (paused, disabled),
    dropped (deleted: their rows are gone) or sent with the new settings.
    `on_reread` hears of each endpoint read again."""

    def __init__(self, pool: asyncpg.Pool, cache: EndpointCache, clock: Clock,
                 on_reread: Callable[[UUID, EndpointTarget | None], None]) -> None:
        self._pool = pool
        self._cache = cache
        self._clock = clock
        self._on_reread = on_reread
        self._dirty: set[UUID] = set()  # endpoints changed since last read
        self._refreshing: dict[UUID, asyncio.Task[None]] = {}

    def changed(self, endpoint_id: UUID) -> None:
        """An endpoint was changed or deleted: start no request to it until it has
        been read again. Synchronous, so it takes effect before any other task runs."""
        if endpoint_id not in self._cache:
            return
        self._dirty.add(endpoint_id)
        if endpoint_id not in self._refreshing:
            self._refreshing[endpoint_id] = asyncio.create_task(self._refresh(endpoint_id))

    async def current(self, endpoint_id: UUID) -> EndpointTarget | None:
        """The endpoint as it is now: waits while a change notified is being read."""
        refresh = self._refreshing.get(endpoint_id)
        if refresh is not None:
            await asyncio.shield(refresh)
        return self._cache.get(endpoint_id)

    async def _refresh(self, endpoint_id: UUID) -> None:
        try:
            while endpoint_id in self._dirty:  # changed again while being read: again
                self._dirty.discard(endpoint_id)
                try:
                    async with self._pool.acquire() as conn:
                        await self._cache.load(conn, [endpoint_id], self._clock.now())
                    self._on_reread(endpoint_id, self._cache.get(endpoint_id))
                except DB_ERRORS as exc:
                    log.warning("engine.endpoint_refresh_failed",
                                endpoint_id=str(endpoint_id), error=str(exc))
                    self._dirty.add(endpoint_id)
                    await asyncio.sleep(REFRESH_RETRY_SECONDS)
        finally:
            del self._refreshing[endpoint_id]
