"""Console sessions on the server: the console opens one at sign-in for the
credential's scope, checks it on every signed-in request and ends it at sign-out.
A session's id travels in its sealed cookie; what the row says (open, ended,
expired) is what every process sharing the database sees at once. Ending all the
sessions of a key is operations/keys.end_sessions."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from uuid import UUID

from dispatcher.operations import audit
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.store import console_sessions as store


async def open_session(svc: Services, caller: Caller, expires_at: datetime) -> UUID:
    """Record a new session of `caller`'s credential, open until `expires_at`."""
    async with svc.pool.acquire() as conn, conn.transaction():
        session_id = await store.open_session(conn, caller.scope.key_id,
                                              caller.scope.tenant_id, svc.clock.now(),
                                              expires_at)
        await audit.record(svc, conn, replace(caller, session_id=session_id), "session.start",
                           "console_session", session_id,
                           {"expires_at": expires_at.isoformat()},
                           tenant_id=caller.scope.tenant_id)
    return session_id


async def session_is_open(svc: Services, session_id: UUID) -> bool:
    """Whether the session is neither ended nor expired: never cached, so a session
    ended in one process is refused by the next request to any other."""
    async with svc.pool.acquire() as conn:
        return await store.session_is_open(conn, session_id, svc.clock.now())


async def end_session(svc: Services, caller: Caller, session_id: UUID) -> bool:
    """End one session (sign-out); False when it was not open. Holding the session's
    sealed cookie is what entitles a caller to end it."""
    async with svc.pool.acquire() as conn, conn.transaction():
        ended = await store.end_session(conn, session_id, svc.clock.now())
        if ended:
            await audit.record(svc, conn, caller, "session.end", "console_session",
                               session_id, tenant_id=caller.scope.tenant_id)
    return ended
