-- Endpoints, events, deliveries (the queue) and attempts (the log).

-- Cobo-style signing uses one Ed25519 key pair per tenant (encrypted at rest).
ALTER TABLE tenants ADD COLUMN signing_key_enc bytea;

CREATE TABLE endpoints (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id                   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                         text NOT NULL,
    description                 text NOT NULL DEFAULT '',
    event_types                 text[] NOT NULL DEFAULT '{*}',
    signing_scheme              text NOT NULL DEFAULT 'standard-v1',
    -- Secrets (HMAC secret or Ed25519 private key), AES-GCM encrypted.
    secret_enc                  bytea,
    previous_secret_enc         bytea,
    previous_secret_expires_at  timestamptz,
    retry_policy                text NOT NULL,
    timeout_seconds             double precision NOT NULL DEFAULT 2
                                CHECK (timeout_seconds >= 1 AND timeout_seconds <= 30),
    max_in_flight               integer NOT NULL DEFAULT 10 CHECK (max_in_flight >= 1),
    metadata                    jsonb NOT NULL DEFAULT '{}',
    state                       text NOT NULL DEFAULT 'active'
                                CHECK (state IN ('active', 'paused', 'disabled')),
    state_reason                text,
    state_changed_at            timestamptz,
    -- Bumped on every change so delivery workers know when their cached copy is stale.
    version                     bigint NOT NULL DEFAULT 1,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, created_at, id);

CREATE TABLE events (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type             text NOT NULL,
    -- The exact bytes POSTed on every attempt, serialized once at publish.
    body             bytea NOT NULL,
    created_at       timestamptz NOT NULL,
    idempotency_key  text
);
CREATE INDEX events_tenant_created ON events (tenant_id, created_at, id);
CREATE UNIQUE INDEX events_idempotency ON events (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- One row per event x endpoint: the queue. status: 0 Pending, 1 Retrying, 2 Success, 3 Failed.
-- next_attempt_at is the due time; a claim moves it to the lease expiry (so in-flight
-- rows leave the due range and come back by themselves if their worker dies), and a
-- held delivery (endpoint paused or disabled) sits at 'infinity'.
CREATE TABLE deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id      uuid NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    status           smallint NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 3),
    attempts         integer NOT NULL DEFAULT 0,
    retries_left     integer NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    lease_owner      uuid,
    held_since       timestamptz,
    last_attempt_at  timestamptz,
    failure_reason   text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
-- The claim reads only this: unfinished rows by due time, one range predicate.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status < 2;
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id);

CREATE TABLE attempts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id       bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    endpoint_id       uuid NOT NULL,
    attempt_number    integer NOT NULL,
    started_at        timestamptz NOT NULL,
    duration_ms       double precision NOT NULL,
    request_headers   jsonb NOT NULL,
    response_status   integer,
    response_headers  jsonb,
    response_body     text,
    failure_reason    text,
    -- What went wrong when there was no response (connect error, timeout, ...).
    error_detail      text
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt_number);

-- Wake the claimers once per inserting statement, not once per row.
CREATE FUNCTION notify_deliveries_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dispatcher_deliveries', '');
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION notify_deliveries_due();
