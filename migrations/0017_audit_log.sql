-- The audit log: one row per change made through the API, the console, the CLI or
-- by the daemon itself (an automatic pause, a 410 disable, retention), written in
-- the same transaction as the change it records.
--
-- Rows form a hash chain: `hash` is SHA-256 of `prev_hash` and the row's canonical
-- text (store/audit.py), `seq` is gapless (assigned under a transaction-scoped
-- advisory lock, so a rolled-back change leaves no hole). `dispatcher audit verify`
-- recomputes the chain and names the first row that does not fit.
--
-- There is no foreign key to tenants: a deleted tenant's entries stay. `changes` is
-- `json`, not `jsonb`, so its text is kept byte for byte as it was hashed.
CREATE TABLE audit_log (
    seq          bigint PRIMARY KEY,
    at           timestamptz NOT NULL,
    actor_type   text NOT NULL,
    actor_id     text NOT NULL,
    key_id       uuid,
    session_id   uuid,
    address      text,
    via          text NOT NULL,
    tenant_id    uuid,
    action       text NOT NULL,
    target_type  text NOT NULL,
    target_id    text NOT NULL,
    changes      json NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, seq);
CREATE INDEX audit_log_by_target ON audit_log (target_type, target_id, seq);
CREATE INDEX audit_log_by_time ON audit_log (at);

-- Append-only: no UPDATE, no TRUNCATE, and DELETE only from the retention job,
-- which sets dispatcher.audit_retention for its own transaction.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('dispatcher.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (%)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
