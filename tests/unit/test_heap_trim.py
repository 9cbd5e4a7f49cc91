"""The heap trim after large bodies: only once enough body bytes were claimed, only
when the worker is idle, and once per such burst."""

from __future__ import annotations

from dispatcher.engine.memory import HeapTrimmer


def test_an_idle_worker_trims_once_after_enough_body_bytes() -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    heap = HeapTrimmer(after_bytes=1000, trim=trim)
    heap.idle()
    assert calls == []  # nothing claimed yet
    heap.claimed(600)
    heap.idle()
    assert calls == []  # not enough
    heap.claimed(400)
    heap.idle()
    assert calls == [0] and heap.trims == 1
    heap.idle()
    assert calls == [0]  # nothing claimed since


def test_without_malloc_trim_it_does_nothing() -> None:
    heap = HeapTrimmer(after_bytes=1, trim=None)
    heap.claimed(10)
    heap.idle()
    assert heap.trims == 0
