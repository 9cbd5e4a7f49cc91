"""What limits sending to each endpoint in one worker: its request slots, how many
claimed rows it may have waiting here, its rate-limit backoff and its adaptive
in-flight limit (AIMD), whose changes are gathered for the outcome writer.

Each endpoint may have `max_in_flight` requests in flight here, never more than half
of the process's `max_concurrency` (so one endpoint that hangs can never hold every
slot), and only as many claimed rows waiting as it can send within half a lease at
its observed speed. A "slow down" answer (429, or 503 with Retry-After) stops every
request to the endpoint until its backoff ends, here at once and in every other
process through the endpoint row (store/backpressure.py); rows claimed meanwhile go
back unsent, due when it ends. The in-flight limit halves on congestion and grows
back by one per run of successes while it is below max_in_flight.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections import Counter
from datetime import datetime, timedelta
from uuid import UUID

from dispatcher import metrics
from dispatcher.config import DeliveryConfig
from dispatcher.engine.endpoints import EndpointCache, EndpointTarget
from dispatcher.engine.outcome import is_congestion
from dispatcher.store.backpressure import Pressure
from dispatcher.transport import Exchange


class EndpointPressure:
    def __init__(self, cache: EndpointCache, config: DeliveryConfig) -> None:
        self._cache = cache
        self._cfg = config
        self._endpoint_cap = max(1, config.max_concurrency // 2)
        # Learned here before the endpoint row says so: backoff ends, and the
        # adaptive limit with the time of its last decrease.
        self._limited_until: dict[UUID, datetime] = {}
        self._local_limit: dict[UUID, tuple[int, datetime]] = {}
        self._pressure: dict[UUID, Pressure] = {}  # not yet on the endpoint rows
        self._slots: dict[UUID, Slots] = {}
        self._load: Counter[UUID] = Counter()  # rows sent or waiting for a slot here
        self._speed: dict[UUID, float] = {}  # EWMA of attempt seconds

    # -- claimed rows waiting here ---------------------------------------------------

    def load(self, endpoint_id: UUID) -> int:
        return self._load[endpoint_id]

    def enter(self, endpoint_id: UUID) -> None:
        self._load[endpoint_id] += 1

    def leave(self, endpoint_id: UUID) -> None:
        self._load[endpoint_id] -= 1
        if self._load[endpoint_id] <= 0:
            del self._load[endpoint_id]

    def at_allowance(self) -> list[UUID]:
        """Endpoints with as many rows waiting here as they may have."""
        return [eid for eid, load in self._load.items() if load >= self.allowance(eid)]

    def allowance(self, endpoint_id: UUID) -> int:
        """How many rows of one endpoint may wait here: what its slots can send in
        half a lease at its observed speed, and never less than twice its slots."""
        target = self._cache.get(endpoint_id)
        if target is None:
            return 1
        speed = self._speed.get(endpoint_id, target.timeout)
        slots = self._slot_count(target)
        per_lease = slots * (self._cfg.lease_seconds / 2) / max(speed, 0.001)
        return max(2 * slots, int(per_lease))

    def observe(self, endpoint_id: UUID, seconds: float) -> None:
        """An attempt took `seconds`: the endpoint's observed speed moves towards it."""
        previous = self._speed.get(endpoint_id, seconds)
        self._speed[endpoint_id] = 0.8 * previous + 0.2 * seconds

    # -- slots and limits ------------------------------------------------------------

    def slots(self, target: EndpointTarget) -> Slots:
        """The endpoint's slots, resized (for rows already waiting too) when its
        max_in_flight changed."""
        slots = self._slots.get(target.id)
        if slots is None:
            slots = self._slots[target.id] = Slots(self._slot_count(target))
        else:
            slots.resize(self._slot_count(target))
        return slots

    def reread(self, endpoint_id: UUID, target: EndpointTarget | None) -> None:
        """The endpoint was read again: its row knows the limit better than this
        process now, and a new max_in_flight applies to rows already queued."""
        self._local_limit.pop(endpoint_id, None)
        if target is not None and endpoint_id in self._slots:
            self.slots(target)

    def _slot_count(self, target: EndpointTarget) -> int:
        return min(self._limit(target), self._endpoint_cap)

    def _limit(self, target: EndpointTarget) -> int:
        """The endpoint's in-flight limit now: the shared adaptive one, or lower
        while a decrease seen here is not yet on the endpoint row."""
        limit = target.effective_max_in_flight or target.max_in_flight
        local = self._local_limit.get(target.id)
        return min(limit, local[0]) if local is not None else limit

    # -- backoff and adaptive limits -----------------------------------------------

    def backing_off(self, now: datetime) -> list[UUID]:
        """Endpoints in a rate-limit backoff known here (ended ones forgotten)."""
        for eid in [e for e, until in self._limited_until.items() if until <= now]:
            del self._limited_until[eid]
        return list(self._limited_until)

    def backoff_until(self, target: EndpointTarget, now: datetime) -> datetime | None:
        until = self._limited_until.get(target.id)
        shared = target.rate_limited_until
        if shared is not None and (until is None or shared > until):
            until = shared
        return until if until is not None and until > now else None

    def rate_limited(
        self, target: EndpointTarget, finished_at: datetime, retry_after: float | None
    ) -> datetime:
        """Stop sending to the endpoint here at once, and have the endpoint row say
        so for everyone; returns when the backoff ends (as far as known here).

        The doubling default backoff is the floor under every one: a Retry-After can
        lengthen it (up to the cap), never shorten it, so `Retry-After: 0` or a date
        in the past backs off like a 429 that says nothing."""
        pressure = self._pressure.setdefault(target.id, Pressure())
        until = finished_at + timedelta(seconds=self._cfg.rate_limit_backoff_seconds)
        pressure.merge(Pressure(limited_at=finished_at))
        if retry_after is not None:
            seconds = min(retry_after, self._cfg.retry_after_cap_seconds)
            asked = finished_at + timedelta(seconds=seconds)
            pressure.merge(Pressure(retry_after_until=asked))
            until = max(until, asked)
        known = self.backoff_until(target, finished_at)
        if known is None or until > known:
            self._limited_until[target.id] = until
            return until
        return known

    def adapt(self, target: EndpointTarget, result: Exchange) -> None:
        """AIMD: halve the limit here at once on congestion (once per burst: only an
        attempt started after the last decrease counts); count successes while the
        limit is below max_in_flight. The endpoint row keeps the shared value."""
        if is_congestion(result.status, result.failure):
            local = self._local_limit.get(target.id)
            last = local[1] if local is not None else target.concurrency_changed_at
            if last is None or result.started_at >= last:
                limit = max(1, self._limit(target) // 2)
                self._local_limit[target.id] = (limit, result.finished_at)
                metrics.CONCURRENCY_DECREASES.inc()
                slots = self._slots.get(target.id)
                if slots is not None:
                    slots.resize(self._slot_count(target))
            self._pressure.setdefault(target.id, Pressure()).merge(
                Pressure(congested_started=result.started_at))
        elif not result.failed and self._limit(target) < target.max_in_flight:
            self._pressure.setdefault(target.id, Pressure()).successes += 1

    def take_pressure(self) -> dict[UUID, Pressure]:
        """What the attempts since the last call said about their endpoints, for
        the endpoint rows (store/backpressure.py)."""
        pressure, self._pressure = self._pressure, {}
        return pressure


class Slots:
    """A semaphore whose size may change while tasks wait on it: lowering an
    endpoint's max_in_flight applies to the rows already queued for it. A freed
    slot is handed to the longest waiter directly, so a release wakes one task."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def resize(self, limit: int) -> None:
        if limit != self.limit:
            self.limit = limit
            self._hand_over()

    async def __aenter__(self) -> None:
        if self.used < self.limit and not self._waiters:
            self.used += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved with the slot already counted as ours
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self.used -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self.used < self.limit and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += 1
                waiter.set_result(None)
