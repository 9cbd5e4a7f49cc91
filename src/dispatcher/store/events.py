"""Publishing: an event and one delivery per subscribed endpoint, in one transaction.

The body is serialized once here and stored as bytes; every attempt sends exactly
those bytes, so the event id and `created_timestamp` never change across retries.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from dispatcher.clock import to_ms
from dispatcher.errors import PayloadTooLarge
from dispatcher.model import DeliveryStatus
from dispatcher.retry import RetryPolicy
from dispatcher.signing import serialize_body
from dispatcher.store.deliveries import lock_ordering_keys
from dispatcher.store.pool import Conn


@dataclass(frozen=True)
class NewEvent:
    type: str
    data: Any
    idempotency_key: str | None = None
    ordering_key: str | None = None
    tenant_id: UUID | None = None  # another tenant than the publish call's (operator batches)
    channels: tuple[str, ...] = ()  # only endpoints with one of them, or with none, get it


@dataclass(frozen=True)
class PublishedEvent:
    id: UUID
    type: str
    created_at: datetime
    deliveries: list[tuple[UUID, DeliveryStatus]] = field(default_factory=list)
    duplicate: bool = False


def event_body(event_id: UUID, type_: str, created_at: datetime, data: Any) -> bytes:
    """The envelope every receiver gets, whatever the signing scheme."""
    return serialize_body(
        {"event_id": str(event_id), "type": type_,
         "created_timestamp": to_ms(created_at), "data": data}
    )


_ID_PREFIX = b'{"event_id":"'
_ID_END = len(_ID_PREFIX) + 36 + 2  # the uuid, then '",'


def cobo_envelope(body: bytes, url: str) -> bytes:
    """Cobo's webhook envelope: the event's, with the receiving endpoint's `url` after
    `event_id` (Cobo's SDK requires it). The same event body and URL always give the
    same bytes, so a delivery's body is identical across its retries."""
    fragment = b'"url":' + serialize_body(url) + b","
    if body.startswith(_ID_PREFIX) and body[_ID_END - 2 : _ID_END] == b'",':
        if body.startswith(fragment, _ID_END):
            return body  # already addressed
        return body[:_ID_END] + fragment + body[_ID_END:]
    envelope = json.loads(body)  # not an envelope from event_body: rebuild it
    if envelope.get("url") == url:
        return body
    return serialize_body({"event_id": envelope.get("event_id"), "url": url,
                           **{k: v for k, v in envelope.items() if k != "event_id"}})


_FIND_BY_KEYS = """
SELECT id, tenant_id, type, created_at, idempotency_key FROM events
WHERE tenant_id = ANY($1::uuid[]) AND idempotency_key = ANY($2::text[])
"""

# An expired key may be used again: the old event keeps its id but loses the key.
_FORGET_KEYS = "UPDATE events SET idempotency_key = NULL WHERE id = ANY($1::uuid[])"

# The endpoints an event row `{e}` reaches: its tenant's, subscribed to its type or to
# '*', and not excluded ($10). Every statement that fans out uses this one rule.
_SUBSCRIBED = """ep.tenant_id = {e}.tenant_id
                 AND (ep.event_types @> '{{*}}' OR {e}.type = ANY(ep.event_types))
                 AND (cardinality(ep.channels) = 0 OR ep.channels && {e}.channels)
                 AND ep.id <> ALL($10::uuid[])"""

# Both publish statements start the same way. `planned` counts the deliveries the
# publish makes; when $11 (the limit) is set and exceeded, dispatcher_delivery_limit
# raises and nothing is stored. The events are then inserted; a duplicate idempotency
# key stores nothing.
_EVENTS = f"""
WITH planned AS (
    SELECT dispatcher_delivery_limit(count(*), $11) AS ok
    FROM (SELECT u.tenant_id, u.type, string_to_array(u.ch, ',') AS channels
          FROM unnest($1::uuid[], $4::text[], __CHANNELS__::text[]) AS u(tenant_id, type, ch)
         ) e
    JOIN endpoints ep ON {_SUBSCRIBED.format(e="e")}
), ev AS (
    INSERT INTO events (id, tenant_id, type, body, created_at, idempotency_key, trace_context,
                        channels)
    SELECT e.id, e.tenant_id, e.type, e.body, $2, e.key, __TRACE__::text,
           string_to_array(e.ch, ',')
    FROM unnest($3::uuid[], $4::text[], $5::bytea[], $6::text[], $1::uuid[],
                __CHANNELS__::text[])
         AS e(id, type, body, key, tenant_id, ch)
    WHERE $11::bigint IS NULL OR (SELECT ok FROM planned)
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, type, tenant_id, channels
)"""

# The answer: the events stored, then their deliveries (`seq` orders them).
_STORED = """
SELECT id AS event_id, NULL::uuid AS endpoint_id, NULL::smallint AS status, 0::bigint AS seq
FROM ev
UNION ALL
SELECT event_id, endpoint_id, status, id FROM d
"""

# Every subscribed endpoint gets a delivery; paused and disabled endpoints get it too,
# held at 'infinity' until resumed. A publish without keys is one round trip.
_INSERT = f"""{_EVENTS}, d AS (
    INSERT INTO deliveries (event_id, endpoint_id, status, retries_left, next_attempt_at,
                            held_since, created_at, updated_at)
    SELECT ev.id, ep.id, 0, coalesce(p.retries, $7),
           CASE WHEN ep.state = 'active' THEN $2 ELSE 'infinity'::timestamptz END,
           CASE WHEN ep.state = 'active' THEN NULL ELSE $2 END,
           $2, $2
    FROM ev
    JOIN endpoints ep ON {_SUBSCRIBED.format(e="ev")}
    LEFT JOIN unnest($8::text[], $9::int[]) AS p(name, retries) ON p.name = ep.retry_policy
    RETURNING id, event_id, endpoint_id, status
){_STORED}""".replace("__TRACE__", "$12").replace("__CHANNELS__", "$13")

# With ordering keys ($12, one per event): a delivery waits ('infinity', key_waiting)
# when an earlier delivery of its key to that endpoint is unfinished, or precedes it in
# this batch; deliveries are inserted in publish order, so ids order each key.
_INSERT_KEYED = f"""{_EVENTS}, fan AS (
    SELECT ev.id AS event_id, ep.id AS endpoint_id, ep.state, ep.retry_policy, o.n,
           o.ordering_key,
           o.ordering_key IS NOT NULL AND (
               row_number() OVER (PARTITION BY ep.id, o.ordering_key ORDER BY o.n) > 1
               OR EXISTS (SELECT 1 FROM deliveries w
                          WHERE w.endpoint_id = ep.id AND w.ordering_key = o.ordering_key
                            AND w.status < 2)) AS waiting
    FROM ev
    JOIN unnest($3::uuid[], $12::text[]) WITH ORDINALITY AS o(event_id, ordering_key, n)
      ON o.event_id = ev.id
    JOIN endpoints ep ON {_SUBSCRIBED.format(e="ev")}
), d AS (
    INSERT INTO deliveries (event_id, endpoint_id, status, retries_left, next_attempt_at,
                            held_since, created_at, updated_at, ordering_key, key_waiting)
    SELECT fan.event_id, fan.endpoint_id, 0, coalesce(p.retries, $7),
           CASE WHEN fan.state = 'active' AND NOT fan.waiting THEN $2
                ELSE 'infinity'::timestamptz END,
           CASE WHEN fan.state = 'active' THEN NULL ELSE $2 END,
           $2, $2, fan.ordering_key, fan.waiting
    FROM fan
    LEFT JOIN unnest($8::text[], $9::int[]) AS p(name, retries)
      ON p.name = fan.retry_policy
    ORDER BY fan.n, fan.endpoint_id
    RETURNING id, event_id, endpoint_id, status
){_STORED}""".replace("__TRACE__", "$13").replace("__CHANNELS__", "$14")


_DELIVERIES_OF = """
SELECT event_id, endpoint_id, status FROM deliveries WHERE event_id = ANY($1::uuid[])
ORDER BY id
"""


async def warm_publish(conn: Conn) -> None:
    """Run the publish statement once on a new connection: no events, nothing stored."""
    await conn.fetch(_INSERT, [], datetime(1970, 1, 1, tzinfo=UTC), [], [], [], [], 0, [], [], [],
                     None, None, [])


async def publish_events(
    conn: Conn,
    tenant_id: UUID,
    events: Sequence[NewEvent],
    *,
    policies: Mapping[str, RetryPolicy],
    now: datetime,
    idempotency_window: timedelta,
    default_retries: int = 0,
    exclude_endpoints: Sequence[UUID] = (),
    max_deliveries: int | None = None,
    trace_context: str | None = None,
) -> list[PublishedEvent]:
    """Store `events` and their deliveries; returns one result per input, in order.
    Each event belongs to `tenant_id` unless it names its own (`NewEvent.tenant_id`)
    and reaches only that tenant's endpoints. An idempotency key seen (for the
    same tenant) within the window returns the original event.
    `exclude_endpoints` get no delivery even if subscribed (an endpoint is not told
    about its own failures: it is the one not listening). A publish that would make
    more than `max_deliveries` deliveries stores nothing and raises PayloadTooLarge.
    `trace_context` (a W3C traceparent, with tracing on) is stored with each event:
    every attempt of its deliveries is a span of that trace."""
    keys = [ev.ordering_key for ev in events if ev.ordering_key is not None]
    # Ordering keys: serialize with other publishes and promotions of the keys.
    async with conn.transaction() if keys else contextlib.nullcontext():
        if keys:
            await lock_ordering_keys(conn, keys)
        return await _publish(conn, tenant_id, events, policies, now, idempotency_window,
                              default_retries, exclude_endpoints, max_deliveries,
                              trace_context)


async def _publish(
    conn: Conn,
    tenant_id: UUID,
    events: Sequence[NewEvent],
    policies: Mapping[str, RetryPolicy],
    now: datetime,
    idempotency_window: timedelta,
    default_retries: int,
    exclude_endpoints: Sequence[UUID],
    max_deliveries: int | None,
    trace_context: str | None,
) -> list[PublishedEvent]:
    if all(ev.idempotency_key is None for ev in events):
        # One statement: atomic by itself, no transaction round trips.
        fresh = [(i, ev, uuid.uuid4()) for i, ev in enumerate(events)]
        stored = await _insert(conn, tenant_id, fresh, policies, now, default_retries,
                               exclude_endpoints, max_deliveries, trace_context)
        return _results(events, fresh, stored, {}, now, tenant_id)
    async with conn.transaction():
        originals = await _originals_by_key(conn, tenant_id, events, now, idempotency_window)
        fresh = []
        first_of_key: dict[tuple[UUID, str], UUID] = {}
        for i, ev in enumerate(events):
            key = _key_of(ev, tenant_id)
            if key is not None and (key in originals or key in first_of_key):
                continue
            eid = uuid.uuid4()
            fresh.append((i, ev, eid))
            if key is not None:
                first_of_key[key] = eid
        stored = await _insert(conn, tenant_id, fresh, policies, now, default_retries,
                               exclude_endpoints, max_deliveries, trace_context)
        lost = [(i, ev, eid) for i, ev, eid in fresh if eid not in stored]
        if lost:  # a concurrent publish took the same key between our read and write
            originals.update(
                await _originals_by_key(conn, tenant_id, [ev for _, ev, _ in lost], now,
                                        idempotency_window)
            )
        return _results(events, fresh, stored, originals, now, tenant_id)


def _key_of(ev: NewEvent, tenant_id: UUID) -> tuple[UUID, str] | None:
    """An idempotency key is unique per tenant."""
    if ev.idempotency_key is None:
        return None
    return (ev.tenant_id or tenant_id, ev.idempotency_key)


async def _originals_by_key(
    conn: Conn,
    tenant_id: UUID,
    events: Sequence[NewEvent],
    now: datetime,
    window: timedelta,
) -> dict[tuple[UUID, str], PublishedEvent]:
    keys = sorted({k for ev in events if (k := _key_of(ev, tenant_id)) is not None})
    if not keys:
        return {}
    wanted = set(keys)
    rows = [r for r in await conn.fetch(_FIND_BY_KEYS, sorted({t for t, _ in keys}),
                                        sorted({k for _, k in keys}))
            if (r["tenant_id"], r["idempotency_key"]) in wanted]
    expired = [r["id"] for r in rows if r["created_at"] < now - window]
    if expired:
        await conn.execute(_FORGET_KEYS, expired)
    live = [r for r in rows if r["id"] not in expired]
    found = await _deliveries_of(conn, [r["id"] for r in live])
    return {
        (r["tenant_id"], r["idempotency_key"]): PublishedEvent(
            r["id"], r["type"], r["created_at"], found.get(r["id"], []), duplicate=True
        )
        for r in live
    }


async def _insert(
    conn: Conn,
    tenant_id: UUID,
    fresh: list[tuple[int, NewEvent, UUID]],
    policies: Mapping[str, RetryPolicy],
    now: datetime,
    default_retries: int,
    exclude_endpoints: Sequence[UUID],
    max_deliveries: int | None,
    trace_context: str | None,
) -> dict[UUID, list[tuple[UUID, DeliveryStatus]]]:
    """Store the fresh events with their deliveries; returns, for each event stored,
    its deliveries in creation order."""
    if not fresh:
        return {}
    names = list(policies)
    keys = [ev.ordering_key for _, ev, _ in fresh]
    keyed = any(k is not None for k in keys)
    try:
        rows = await conn.fetch(
            _INSERT_KEYED if keyed else _INSERT,
            [ev.tenant_id or tenant_id for _, ev, _ in fresh], now,
            [eid for _, _, eid in fresh], [ev.type for _, ev, _ in fresh],
            [event_body(eid, ev.type, now, ev.data) for _, ev, eid in fresh],
            [ev.idempotency_key for _, ev, _ in fresh], default_retries, names,
            [policies[n].retries for n in names], list(exclude_endpoints), max_deliveries,
            *([keys] if keyed else []), trace_context,
            [",".join(ev.channels) if ev.channels else None for _, ev, _ in fresh],
        )
    except asyncpg.RaiseError as exc:
        if max_deliveries is None or exc.args[:1] != ("delivery_limit_reached",):
            raise
        raise PayloadTooLarge(
            f"this publish would create {exc.detail} deliveries ({len(fresh)} events x "
            f"their subscribed endpoints); at most {max_deliveries} per call "
            "(server.max_deliveries_per_publish): publish in smaller batches",
            code="delivery_limit_reached") from None
    stored: dict[UUID, list[tuple[UUID, DeliveryStatus]]] = {}
    for r in sorted(rows, key=lambda r: r["seq"]):
        if r["endpoint_id"] is None:
            stored.setdefault(r["event_id"], [])
        else:
            stored.setdefault(r["event_id"], []).append(
                (r["endpoint_id"], DeliveryStatus(r["status"])))
    return stored


async def _deliveries_of(
    conn: Conn, event_ids: list[UUID]
) -> dict[UUID, list[tuple[UUID, DeliveryStatus]]]:
    out: dict[UUID, list[tuple[UUID, DeliveryStatus]]] = {}
    if not event_ids:
        return out
    for r in await conn.fetch(_DELIVERIES_OF, event_ids):
        out.setdefault(r["event_id"], []).append((r["endpoint_id"], DeliveryStatus(r["status"])))
    return out


def _results(
    events: Sequence[NewEvent],
    fresh: list[tuple[int, NewEvent, UUID]],
    stored: dict[UUID, list[tuple[UUID, DeliveryStatus]]],
    originals: dict[tuple[UUID, str], PublishedEvent],
    now: datetime,
    tenant_id: UUID,
) -> list[PublishedEvent]:
    new_ids = {i: eid for i, _, eid in fresh if eid in stored}
    by_key = {key: new_ids[i] for i, ev, _ in fresh
              if (key := _key_of(ev, tenant_id)) is not None and i in new_ids}
    results: list[PublishedEvent] = []
    for i, ev in enumerate(events):
        key = _key_of(ev, tenant_id)
        if i in new_ids:
            eid = new_ids[i]
            results.append(PublishedEvent(eid, ev.type, now, stored[eid]))
        elif key in originals:
            results.append(originals[key])
        else:  # same key twice in one batch: the later one repeats the first
            assert key is not None
            eid = by_key[key]
            results.append(PublishedEvent(eid, ev.type, now, stored[eid], duplicate=True))
    return results
