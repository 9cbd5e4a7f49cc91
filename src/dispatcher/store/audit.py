"""The audit log's SQL: append an entry inside the transaction of the change it
records, list entries, apply retention and verify the hash chain.

Every entry's `hash` is SHA-256 of the previous entry's hash and the entry's
canonical text (`canonical`); `seq` is gapless because it is assigned under a
transaction-scoped advisory lock (taken last in a transaction, so it never waits
while holding it: no deadlock with the rows the change locked). A rolled-back change
takes its entry with it. Retention deletes the oldest entries and records, in an
entry of its own, the seq and hash of the last one it deleted: the anchor where
verification of what remains starts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from dispatcher.store.pool import Conn

GENESIS = bytes(32)  # the prev_hash of the very first entry
# pg_advisory_xact_lock's key: the same in every process.
LOCK_KEY = int.from_bytes(hashlib.blake2b(b"dispatcher.audit_log", digest_size=8).digest(),
                          "big", signed=True)
RETENTION_ACTION = "audit.retention"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
VERIFY_CHUNK = 1000


@dataclass(frozen=True)
class Actor:
    """Who made a change. `type`: operator_key, tenant_key, portal_token (its id is
    the tenant's), local (the CLI on the database's machine, `cli:<user>`) or system
    (`system:<job>`). `via`: api, console, cli, engine or maintenance."""

    type: str
    id: str
    via: str
    key_id: UUID | None = None
    session_id: UUID | None = None
    address: str | None = None


def system(job: str, via: str = "maintenance") -> Actor:
    return Actor("system", f"system:{job}", via)


@dataclass(frozen=True)
class Change:
    """One entry to append: what was done to what, and the changed fields
    (`{"field": {"old": ..., "new": ...}}`, or markers such as
    `{"secret": "rotated"}`; never a secret's value)."""

    action: str
    target_type: str
    target_id: str
    tenant_id: UUID | None
    changes: dict[str, Any]


@dataclass(frozen=True)
class Entry:
    seq: int
    at: datetime
    actor: Actor
    tenant_id: UUID | None
    action: str
    target_type: str
    target_id: str
    changes: dict[str, Any]
    hash: bytes


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def _opt(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def canonical(seq: int, at: datetime, actor: Actor, change: Change, changes_text: str) -> bytes:
    """The text an entry's hash covers: its fields as a JSON array, a newline and the
    changes exactly as stored."""
    head = json.dumps(
        [seq, _micros(at), actor.type, actor.id, _opt(actor.key_id), _opt(actor.session_id),
         actor.address, actor.via, _opt(change.tenant_id), change.action, change.target_type,
         change.target_id], separators=(",", ":"), ensure_ascii=False)
    return f"{head}\n{changes_text}".encode()


def digest(prev_hash: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev_hash + body).digest()


def changes_text(changes: dict[str, Any]) -> str:
    return json.dumps(changes, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_LAST = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"

_INSERT = """
INSERT INTO audit_log (seq, at, actor_type, actor_id, key_id, session_id, address, via,
                       tenant_id, action, target_type, target_id, changes, prev_hash, hash)
SELECT x.seq, $2, $3, $4, $5, $6, $7, $8, x.tenant_id, x.action, x.target_type,
       x.target_id, x.changes::json, x.prev_hash, x.hash
FROM unnest($1::bigint[], $9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::bytea[], $15::bytea[])
     AS x(seq, tenant_id, action, target_type, target_id, changes, prev_hash, hash)
"""


async def append(conn: Conn, at: datetime, actor: Actor, changes: Sequence[Change]) -> int:
    """Append `changes` as entries of one actor at one time, in the caller's
    transaction (call it last there: it takes the chain's lock until commit).
    Returns the last seq written (0 when there was nothing to write)."""
    if not changes:
        return 0
    assert conn.is_in_transaction(), "an audit entry is written with its change"
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
    last = await conn.fetchrow(_LAST)
    seq, prev = (0, GENESIS) if last is None else (last["seq"], bytes(last["hash"]))
    rows: list[tuple[int, Change, str, bytes, bytes]] = []
    for change in changes:
        seq += 1
        text = changes_text(change.changes)
        this = digest(prev, canonical(seq, at, actor, change, text))
        rows.append((seq, change, text, prev, this))
        prev = this
    await conn.execute(
        _INSERT, [r[0] for r in rows], at, actor.type, actor.id, actor.key_id,
        actor.session_id, actor.address, actor.via, [r[1].tenant_id for r in rows],
        [r[1].action for r in rows], [r[1].target_type for r in rows],
        [r[1].target_id for r in rows], [r[2] for r in rows], [r[3] for r in rows],
        [r[4] for r in rows])
    return seq


@dataclass(frozen=True)
class Filters:
    tenant_id: UUID | None = None  # None: every tenant's and the deployment's own
    actor: str | None = None  # an actor id (key id, tenant id, cli:<user>, system:<job>)
    action: str | None = None  # exact, or a prefix ending in "." ("endpoint.")
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


_COLUMNS = """seq, at, actor_type, actor_id, key_id, session_id, address, via, tenant_id,
              action, target_type, target_id, changes, hash"""


def _entry(r: Any) -> Entry:
    return Entry(
        seq=r["seq"], at=r["at"],
        actor=Actor(r["actor_type"], r["actor_id"], r["via"], r["key_id"], r["session_id"],
                    r["address"]),
        tenant_id=r["tenant_id"], action=r["action"], target_type=r["target_type"],
        target_id=r["target_id"], changes=r["changes"], hash=bytes(r["hash"]))


async def list_entries(conn: Conn, filters: Filters, *, before: int | None,
                       limit: int) -> list[Entry]:
    """Newest first, entries with seq < `before` (a cursor)."""
    action = filters.action
    prefix = action is not None and action.endswith(".")
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM audit_log
            WHERE ($1::uuid IS NULL OR tenant_id = $1)
              AND ($2::text IS NULL OR actor_id = $2)
              AND ($3::text IS NULL OR action = $3 OR ($4 AND starts_with(action, $3)))
              AND ($5::text IS NULL OR target_type = $5)
              AND ($6::text IS NULL OR target_id = $6)
              AND ($7::timestamptz IS NULL OR at >= $7)
              AND ($8::timestamptz IS NULL OR at < $8)
              AND ($9::bigint IS NULL OR seq < $9)
            ORDER BY seq DESC LIMIT $10""",
        filters.tenant_id, filters.actor, action, prefix, filters.target_type,
        filters.target_id, filters.since, filters.until, before, limit)
    return [_entry(r) for r in rows]


# -- retention ------------------------------------------------------------------------

async def apply_retention(conn: Conn, cutoff: datetime, now: datetime, actor: Actor) -> int:
    """Delete entries older than `cutoff` (never the newest: the chain keeps a head),
    recording the last deleted entry's seq and hash in a retention entry first."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        last = await conn.fetchrow(
            """SELECT seq, hash FROM audit_log
               WHERE at < $1 AND seq < (SELECT max(seq) FROM audit_log)
               ORDER BY seq DESC LIMIT 1""", cutoff)
        if last is None:
            return 0
        through = last["seq"]
        count = await conn.fetchval("SELECT count(*) FROM audit_log WHERE seq <= $1", through)
        await append(conn, now, actor, [Change(
            RETENTION_ACTION, "audit_log", "audit_log", None,
            {"deleted": count, "deleted_through_seq": through,
             "last_deleted_hash": bytes(last["hash"]).hex(), "cutoff": cutoff.isoformat()})])
        await conn.execute("SET LOCAL dispatcher.audit_retention = 'on'")
        await conn.execute("DELETE FROM audit_log WHERE seq <= $1", through)
    return int(count)


# -- verification ---------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int  # entries whose hash was recomputed
    first_seq: int | None  # where the chain starts (1, or after retention)
    last_seq: int | None
    broken_seq: int | None = None  # the first entry that does not fit
    reason: str = ""


async def verify_chain(conn: Conn) -> Verdict:
    """Recompute every entry's hash, oldest first; the first entry that does not fit
    (its hash, its link to the one before, a gap in seq, or a start that neither is
    the genesis nor matches the latest retention anchor) is named."""
    checked = 0
    first: tuple[int, bytes] | None = None
    prev: tuple[int, bytes] | None = None
    anchor: tuple[int, bytes] | None = None  # the latest retention's (through, hash)
    after = 0
    while True:
        rows = await conn.fetch(
            f"""SELECT {_COLUMNS}, changes::text AS changes_text, prev_hash FROM audit_log
                WHERE seq > $1 ORDER BY seq LIMIT $2""", after, VERIFY_CHUNK)
        if not rows:
            break
        for r in rows:
            entry = _entry(r)
            prev_hash = bytes(r["prev_hash"])
            broken = _check(entry, prev_hash, r["changes_text"], prev)
            if broken:
                return Verdict(False, checked, first and first[0], entry.seq, entry.seq,
                               broken)
            if first is None:
                first = (entry.seq, prev_hash)
            if entry.action == RETENTION_ACTION:
                anchor = _anchor(entry.changes)
            prev = (entry.seq, entry.hash)
            checked += 1
        after = rows[-1]["seq"]
    if first is None:
        return Verdict(True, 0, None, None)
    assert prev is not None
    start, start_prev = first
    if not (start == 1 and start_prev == GENESIS) and anchor != (start - 1, start_prev):
        return Verdict(False, checked, start, prev[0], start,
                       "the chain does not start at the first entry, nor where the latest "
                       "retention says it deleted through: entries before it were removed")
    return Verdict(True, checked, start, prev[0])


def _check(entry: Entry, prev_hash: bytes, text: str,
           prev: tuple[int, bytes] | None) -> str:
    if prev is not None:
        if entry.seq != prev[0] + 1:
            return f"entries {prev[0] + 1} to {entry.seq - 1} are missing"
        if prev_hash != prev[1]:
            return "its prev_hash is not the hash of the entry before it"
    change = Change(entry.action, entry.target_type, entry.target_id, entry.tenant_id,
                    entry.changes)
    if digest(prev_hash, canonical(entry.seq, entry.at, entry.actor, change, text)) \
            != entry.hash:
        return "its hash does not match its contents (the entry was changed)"
    return ""


def _anchor(changes: dict[str, Any]) -> tuple[int, bytes] | None:
    try:
        return int(changes["deleted_through_seq"]), bytes.fromhex(changes["last_deleted_hash"])
    except (KeyError, TypeError, ValueError):
        return None
