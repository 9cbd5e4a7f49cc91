"""FairSlots: freed slots go to waiting tenants in turn, not in arrival order."""

from __future__ import annotations

import asyncio

from dispatcher.engine.fair import FairSlots


async def test_a_freed_slot_goes_to_the_next_tenant_in_turn() -> None:
    slots = FairSlots(1)
    served: list[str] = []
    release = asyncio.Event()

    async def request(tenant: str) -> None:
        async with slots.slot(tenant):
            served.append(tenant)
            await release.wait()

    holder = asyncio.create_task(request("a"))
    await asyncio.sleep(0)
    # 5 more of tenant a queue up first, then one of b.
    tasks = [asyncio.create_task(request("a")) for _ in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(request("b")))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, *tasks)
    # b gets the reserve slot at once, not after a's five (a lone tenant has 1 slot)
    assert served[:2] == ["a", "b"]
    assert slots.used == 0


async def test_a_cancelled_waiter_gives_up_its_place_and_its_slot() -> None:
    slots = FairSlots(1)
    gate = asyncio.Event()

    async def hold(tenant: str) -> None:
        async with slots.slot(tenant):
            await gate.wait()

    first = asyncio.create_task(hold("a"))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(hold("b"))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    gate.set()
    await first
    assert slots.used == 0
    async with slots.slot("c"):
        assert slots.used == 1
