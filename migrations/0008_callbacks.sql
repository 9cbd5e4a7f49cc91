-- Approval callbacks: an endpoint of kind 'callback' answers `ok` or `deny` for an
-- action the provider asks about. A callback is an events row (so its delivery uses
-- the same queue, sender, leases, holds and attempt log as any event) plus a
-- callbacks row that holds the decision, recorded once and never changed.

ALTER TABLE endpoints ADD COLUMN kind text NOT NULL DEFAULT 'webhook'
    CHECK (kind IN ('webhook', 'callback'));
-- A callback endpoint subscribes to no event type, so no event ever fans out to it.
ALTER TABLE endpoints ADD CONSTRAINT endpoints_callback_no_events
    CHECK (kind = 'webhook' OR event_types = '{}');

-- Callbacks are kept out of the event listings.
ALTER TABLE events ADD COLUMN callback boolean NOT NULL DEFAULT false;

-- outcome: NULL while undecided; 'ok' or 'deny' (final); 'failed' (retries or the
-- deadline ran out; a manual retry before the deadline may reopen it).
CREATE TABLE callbacks (
    id               uuid PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint_id      uuid NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    type             text NOT NULL,
    data             json NOT NULL,  -- as given: jsonb would rewrite numbers
    outcome          text CHECK (outcome IN ('ok', 'deny', 'failed')),
    failure_reason   text,
    decided_at       timestamptz,
    deadline_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    idempotency_key  text
);
CREATE INDEX callbacks_tenant_created ON callbacks (tenant_id, created_at, id);
CREATE UNIQUE INDEX callbacks_idempotency ON callbacks (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The deadline sweep reads only undecided callbacks.
CREATE INDEX callbacks_open_deadline ON callbacks (deadline_at) WHERE outcome IS NULL;
