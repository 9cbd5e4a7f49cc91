"""Successful API-key checks remembered in the process for a short time, so a busy
client costs no database round trip per request. A revoked key keeps working for
at most AUTH_CACHE_SECONDS in a daemon that has just seen it."""

from __future__ import annotations

from uuid import UUID

from dispatcher.clock import monotonic

AUTH_CACHE_SECONDS = 2.0
AUTH_CACHE_SIZE = 10_000


class KeyCache:
    """key hash -> (tenant id, when checked); only successful checks are kept."""

    def __init__(self, ttl: float = AUTH_CACHE_SECONDS, size: int = AUTH_CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[bytes, tuple[UUID, float]] = {}

    def get(self, key_hash: bytes) -> UUID | None:
        hit = self._entries.get(key_hash)
        if hit is None or monotonic() - hit[1] >= self.ttl:
            return None
        return hit[0]

    def put(self, key_hash: bytes, tenant_id: UUID) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key_hash] = (tenant_id, monotonic())
