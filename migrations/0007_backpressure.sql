-- Endpoint-wide backpressure (a receiver's "slow down" honoured by every process)
-- and ordering keys (deliveries of one endpoint sharing a key go out one at a time,
-- in publish order).

-- rate_limited_until: no request to the endpoint starts before it (429, or 503 with
-- Retry-After); the claim skips endpoints whose time has not come. rate_limit_seconds
-- is the last backoff chosen without a Retry-After, doubled while answers repeat.
-- effective_max_in_flight: the adaptive in-flight limit (AIMD) every worker applies,
-- NULL when it is max_in_flight; concurrency_changed_at is its last decrease, and
-- concurrency_successes counts successes since its last change.
ALTER TABLE endpoints
    ADD COLUMN rate_limited_until      timestamptz,
    ADD COLUMN rate_limit_seconds      double precision,
    ADD COLUMN effective_max_in_flight integer CHECK (effective_max_in_flight >= 1),
    ADD COLUMN concurrency_changed_at  timestamptz,
    ADD COLUMN concurrency_successes   integer NOT NULL DEFAULT 0;
CREATE INDEX endpoints_rate_limited ON endpoints (rate_limited_until)
    WHERE rate_limited_until IS NOT NULL;

-- ordering_key: deliveries of one endpoint with the same key are sent in id (publish)
-- order. key_waiting: an earlier delivery of the key is unfinished; such a row sits at
-- 'infinity', out of the due range, until the one before it finishes.
ALTER TABLE deliveries
    ADD COLUMN ordering_key text,
    ADD COLUMN key_waiting  boolean NOT NULL DEFAULT false;
-- The unfinished deliveries of a key, in order: the head is the first row.
CREATE INDEX deliveries_ordering ON deliveries (endpoint_id, ordering_key, id)
    WHERE ordering_key IS NOT NULL AND status < 2;
-- Waiting rows, for the sweep that promotes a head whose predecessor finished
-- outside the delivery path (hold limit, manual changes).
CREATE INDEX deliveries_key_waiting ON deliveries (endpoint_id, ordering_key)
    WHERE key_waiting AND status < 2;
