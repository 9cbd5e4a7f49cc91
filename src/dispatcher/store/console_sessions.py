"""Console sessions recorded on the server: opened at sign-in, looked up by id on
every signed-in request, ended by sign-out (one session) or for a whole key, and
deleted by maintenance some time after they finished."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from dispatcher.store.pool import Conn


async def open_session(conn: Conn, api_key_id: UUID | None, tenant_id: UUID | None,
                       now: datetime, expires_at: datetime) -> UUID:
    """A new session's id."""
    session_id: UUID = await conn.fetchval(
        """INSERT INTO console_sessions (api_key_id, tenant_id, created_at, expires_at)
           VALUES ($1, $2, $3, $4) RETURNING id""",
        api_key_id, tenant_id, now, expires_at,
    )
    return session_id


# One primary-key lookup: this runs on every signed-in console request.
SESSION_LOOKUP = """SELECT 1 FROM console_sessions
                    WHERE id = $1 AND ended_at IS NULL AND expires_at > $2"""


async def session_is_open(conn: Conn, session_id: UUID, now: datetime) -> bool:
    """Whether the session exists, was not ended and has not expired."""
    found = await conn.fetchval(SESSION_LOOKUP, session_id, now)
    return found is not None


async def end_session(conn: Conn, session_id: UUID, now: datetime) -> bool:
    """End one session; False when it was not open."""
    status = await conn.execute(
        """UPDATE console_sessions SET ended_at = $2
           WHERE id = $1 AND ended_at IS NULL AND expires_at > $2""",
        session_id, now,
    )
    return status.split()[-1] != "0"


async def end_key_sessions(conn: Conn, api_key_id: UUID, now: datetime) -> int:
    """End every open session of a key; how many there were."""
    status = await conn.execute(
        """UPDATE console_sessions SET ended_at = $2
           WHERE api_key_id = $1 AND ended_at IS NULL AND expires_at > $2""",
        api_key_id, now,
    )
    return int(status.split()[-1])


async def delete_finished_sessions(conn: Conn, before: datetime, limit: int) -> int:
    """Delete up to `limit` sessions that ended or expired before `before`."""
    status = await conn.execute(
        """DELETE FROM console_sessions WHERE id = ANY(ARRAY(
               SELECT id FROM console_sessions
               WHERE coalesce(ended_at, expires_at) < $1 LIMIT $2))""",
        before, limit,
    )
    return int(status.split()[-1])
