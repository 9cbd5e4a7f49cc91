"""A process's request slots shared fairly between tenants: one tenant may hold up to
`limit` (`delivery.max_concurrency`), and a reserve of a tenth more is out of any
single tenant's reach, so a slot is always free, or soon, for anyone else; a freed
slot goes to the tenants waiting for one in turn (round robin). Thousands of one
tenant's requests waiting for a slot never queue another tenant's behind them. The
reserve comes on top of the limit, so a lone tenant keeps the whole limit."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable

RESERVE_SHARE = 10  # a tenth more slots, out of reach of any single tenant


def total_slots(limit: int) -> int:
    """Slots in a process whose tenants may each hold `limit`: the reserve on top."""
    return limit + max(1, limit // RESERVE_SHARE)


class FairSlots:
    def __init__(self, limit: int) -> None:
        self.per_tenant = limit
        self.limit = total_slots(limit)
        self.used = 0
        self._held: dict[Hashable, int] = {}
        # Waiters by tenant; dict order is the turn order (a served tenant goes last).
        self._queues: dict[Hashable, deque[asyncio.Future[None]]] = {}
        self._slots: dict[Hashable, TenantSlot] = {}

    def slot(self, key: Hashable) -> TenantSlot:
        """`async with slots.slot(tenant_id):` holds one slot."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = TenantSlot(self, key)
        return slot

    async def acquire(self, key: Hashable) -> None:
        if self.used < self.limit and not self._queues and self._held.get(key, 0) < self.per_tenant:
            self._take(key)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(waiter)
        self._hand_over()
        try:
            await waiter  # resolved with the slot already counted as ours
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # handed a slot, then cancelled: pass it on
            else:
                queue = self._queues.get(key)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        del self._queues[key]
            raise

    def release(self, key: Hashable) -> None:
        self.used -= 1
        held = self._held[key] - 1
        if held:
            self._held[key] = held
        else:
            del self._held[key]
        self._hand_over()

    def _take(self, key: Hashable) -> None:
        self.used += 1
        self._held[key] = self._held.get(key, 0) + 1

    def _hand_over(self) -> None:
        """Free slots to waiting tenants in turn, skipping those at their share."""
        progress = True
        while progress and self.used < self.limit and self._queues:
            progress = False
            for key in list(self._queues):
                if self.used >= self.limit:
                    return
                if self._held.get(key, 0) >= self.per_tenant:
                    continue
                queue = self._queues.pop(key)
                waiter = queue.popleft()
                if queue:
                    self._queues[key] = queue  # its next waiter waits for its next turn
                if not waiter.done():
                    self._take(key)
                    waiter.set_result(None)
                progress = True


class TenantSlot:
    __slots__ = ("_key", "_slots")

    def __init__(self, slots: FairSlots, key: Hashable) -> None:
        self._slots = slots
        self._key = key

    async def __aenter__(self) -> None:
        await self._slots.acquire(self._key)

    async def __aexit__(self, *exc: object) -> None:
        self._slots.release(self._key)
