"""The per-endpoint slots: a semaphore that can be resized while tasks wait."""

from __future__ import annotations

import asyncio

from dispatcher.engine.pressure import Slots


async def _hold(slots: Slots, inside: list[int], peak: list[int], release: asyncio.Event) -> None:
    async with slots:
        inside.append(1)
        peak[0] = max(peak[0], len(inside))
        await release.wait()
        inside.pop()


async def test_lowering_the_limit_applies_to_tasks_already_waiting() -> None:
    slots = Slots(5)
    inside: list[int] = []
    peak = [0]
    first_wave = asyncio.Event()
    tasks = [asyncio.create_task(_hold(slots, inside, peak, first_wave)) for _ in range(5)]
    await asyncio.sleep(0)
    assert slots.used == 5
    second_wave = asyncio.Event()
    peak2 = [0]
    inside2: list[int] = []
    waiting = [asyncio.create_task(_hold(slots, inside2, peak2, second_wave)) for _ in range(20)]
    await asyncio.sleep(0)
    slots.resize(2)
    first_wave.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.01)
    assert len(inside2) == 2  # not 5: the waiting tasks see the new limit
    second_wave.set()
    await asyncio.gather(*waiting)
    assert peak2[0] == 2 and slots.used == 0


async def test_raising_the_limit_wakes_waiting_tasks() -> None:
    slots = Slots(1)
    inside: list[int] = []
    peak = [0]
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(slots, inside, peak, release)) for _ in range(4)]
    await asyncio.sleep(0.01)
    assert len(inside) == 1
    slots.resize(3)
    await asyncio.sleep(0.01)
    assert len(inside) == 3
    release.set()
    await asyncio.gather(*tasks)
    assert slots.used == 0


async def test_a_cancelled_waiter_does_not_lose_a_slot() -> None:
    slots = Slots(1)
    release = asyncio.Event()
    inside: list[int] = []
    peak = [0]
    holder = asyncio.create_task(_hold(slots, inside, peak, release))
    await asyncio.sleep(0)
    victim = asyncio.create_task(_hold(slots, inside, peak, release))
    other = asyncio.create_task(_hold(slots, inside, peak, release))
    await asyncio.sleep(0)
    victim.cancel()
    release.set()
    await asyncio.gather(holder, other)
    assert victim.cancelled() and slots.used == 0 and peak[0] == 1
