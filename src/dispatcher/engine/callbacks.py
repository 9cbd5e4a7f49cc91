"""Approval callbacks in the engine: the outcome hook that records decisions inside
the transaction that records the attempts, the deadline hook that fails callbacks a
worker claimed too late to send, and the job that fails callbacks past their
deadline (the decision rule itself is `outcome.classify_answer`). All tell the
tenant with the operational event `callback.decided`.

The rule: status 200 or 201 and a body that is exactly `ok` or `deny` once
surrounding ASCII whitespace is removed. Anything else (`OK`, `"ok"`, `yes`, an
empty body, another status, a timeout) is not a decision and is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog

from dispatcher.clock import to_ms
from dispatcher.config import Config
from dispatcher.retry import load_policies
from dispatcher.store import callbacks as store
from dispatcher.store.deliveries import Outcome
from dispatcher.store.events import NewEvent, publish_events
from dispatcher.store.pool import Conn
from dispatcher.transport.classify import DECISIONS

if TYPE_CHECKING:
    from dispatcher.engine.worker import DeliveryWorker

log = structlog.get_logger(__name__)

DECIDED_EVENT = "callback.decided"
def decided_data(d: store.Decided) -> dict[str, Any]:
    """The `data` of a `callback.decided` event."""
    return {
        "id": str(d.id),
        "type": d.type,
        "endpoint_id": str(d.endpoint_id),
        "status": {store.OK: "Approved", store.DENY: "Denied"}.get(d.outcome, "Failed"),
        "decision": d.outcome if d.outcome in DECISIONS else None,
        "failure_reason": d.failure_reason,
        "decided_timestamp": to_ms(d.decided_at),
    }


class CallbackRecorder:
    """The outcome hook (`worker.outcome_hooks`), the deadline hook and the deadline
    job."""

    def __init__(self, config: Config) -> None:
        self._policies = load_policies(config)
        self._default_retries = self._policies[config.delivery.default_retry_policy].retries
        self._idempotency = timedelta(seconds=config.server.idempotency_window_seconds)

    async def record(self, conn: Conn, outcomes: Sequence[Outcome], now: datetime) -> set[UUID]:
        answers = [
            store.Answer(o.delivery_id, o.decision, o.status, o.next_attempt_at,
                         o.failure_reason)
            for o in outcomes if o.callback
        ]
        if answers:
            await self._announce(conn, await store.record_answers(conn, answers, now), now)
        return set()

    async def expire_claimed(self, conn: Conn, delivery_ids: Sequence[int],
                             now: datetime) -> None:
        """The deadline hook (`worker.deadline_hook`): fail the callbacks of these
        deliveries, claimed at or after their deadline and never sent."""
        await self._announce(conn, await store.expire_claimed(conn, delivery_ids, now), now)

    async def expire(self, conn: Conn, now: datetime) -> int:
        """Fail the callbacks whose deadline has passed; returns how many."""
        async with conn.transaction():
            decided = await store.expire_overdue(conn, now)
            await self._announce(conn, decided, now)
        return len(decided)

    async def _announce(self, conn: Conn, decided: Sequence[store.Decided], now: datetime) -> None:
        for d in decided:
            data = decided_data(d)
            log.info("callback.decided", callback_id=data["id"], type=d.type,
                     status=data["status"], failure_reason=d.failure_reason)
            await publish_events(conn, d.tenant_id, [NewEvent(DECIDED_EVENT, data)],
                                 policies=self._policies, now=now,
                                 idempotency_window=self._idempotency,
                                 default_retries=self._default_retries)


def install(worker: DeliveryWorker, config: Config) -> CallbackRecorder:
    """Record callback decisions on every outcome batch this worker writes, and fail
    the callbacks it claims too late to send."""
    recorder = CallbackRecorder(config)
    worker.outcome_hooks.append(recorder.record)
    worker.deadline_hook = recorder.expire_claimed
    return recorder
