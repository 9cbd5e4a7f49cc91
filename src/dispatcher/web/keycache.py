"""Successful credential checks remembered in the process for a short time, so a
busy client costs no database round trip per request. A revoked key keeps working
for at most AUTH_CACHE_SECONDS in a daemon that has just seen it; so does a tenant
name an operator sent in a request after the tenant is renamed or deleted elsewhere."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from dispatcher.clock import monotonic

AUTH_CACHE_SECONDS = 2.0
AUTH_CACHE_SIZE = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KeyCache(Generic[K, V]):
    """key (e.g. a key hash) -> (value, when checked); only successful checks are kept."""

    def __init__(self, ttl: float = AUTH_CACHE_SECONDS, size: int = AUTH_CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[K, tuple[V, float]] = {}

    def get(self, key: K) -> V | None:
        hit = self._entries.get(key)
        if hit is None or monotonic() - hit[1] >= self.ttl:
            return None
        return hit[0]

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (value, monotonic())

    def clear(self) -> None:
        self._entries.clear()
