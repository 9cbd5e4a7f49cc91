-- Console sessions, recorded on the server. The sealed cookie carries a session's
-- id; every signed-in console request looks its row up (by primary key), so a
-- session that was ended (sign-out, its key's sessions ended or the key revoked)
-- is refused at once by every process sharing this database.
--
-- api_key_id is the key the session was opened with (NULL for a portal token),
-- tenant_id the credential's tenant (NULL for an operator key). A session is
-- finished at ended_at, or at expires_at if it was never ended; maintenance deletes
-- rows finished more than a day ago.
CREATE TABLE console_sessions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    api_key_id  uuid REFERENCES api_keys (id) ON DELETE CASCADE,
    tenant_id   uuid REFERENCES tenants (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    CONSTRAINT console_sessions_ends_after_start CHECK (expires_at > created_at)
);
CREATE INDEX console_sessions_open_by_key ON console_sessions (api_key_id)
    WHERE ended_at IS NULL;
CREATE INDEX console_sessions_finished ON console_sessions ((coalesce(ended_at, expires_at)));
