-- Endpoint health: failure counters, pause thresholds per endpoint, warnings sent,
-- gradual re-drive after a resume, and the indexes maintenance jobs read.

-- Per-endpoint overrides of health.window_threshold / health.total_threshold (NULL: config).
-- failures_since_resume counts failed attempts since creation or the last resume.
-- redrive_from: a re-drive of held deliveries is pending; its next chunk starts then.
ALTER TABLE endpoints
    ADD COLUMN pause_window_threshold integer CHECK (pause_window_threshold >= 1),
    ADD COLUMN pause_total_threshold  integer CHECK (pause_total_threshold >= 1),
    ADD COLUMN failures_since_resume  integer NOT NULL DEFAULT 0,
    ADD COLUMN redrive_from           timestamptz;
CREATE INDEX endpoints_redrive ON endpoints (redrive_from) WHERE redrive_from IS NOT NULL;

-- Failed attempts per endpoint and hour, upserted once per outcome batch. The rolling
-- window is a sum over at most window/1h rows, however many attempts there are.
CREATE TABLE endpoint_failure_buckets (
    endpoint_id   uuid NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    bucket_start  timestamptz NOT NULL,
    failures      integer NOT NULL,
    PRIMARY KEY (endpoint_id, bucket_start)
);

-- endpoint.failing warnings already sent: one row per threshold ('window' or 'total')
-- and percentage. A 'window' warning may be sent again once it is older than the
-- window; a resume forgets them all.
CREATE TABLE endpoint_health_warnings (
    endpoint_id  uuid NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    threshold    text NOT NULL CHECK (threshold IN ('window', 'total')),
    percentage   smallint NOT NULL,
    failures     integer NOT NULL,
    sent_at      timestamptz NOT NULL,
    PRIMARY KEY (endpoint_id, threshold, percentage)
);

-- Held deliveries by endpoint and hold time: the re-drive and the hold-limit expiry
-- read only this. Rows enter it only while held, so the claim path never writes it.
CREATE INDEX deliveries_held ON deliveries (endpoint_id, held_since, id)
    WHERE held_since IS NOT NULL AND status < 2;

-- Retention deletes by age; attempts and events are appended in time order, so a
-- BRIN index finds old rows for almost no write cost.
CREATE INDEX attempts_started_brin ON attempts USING brin (started_at);
CREATE INDEX events_created_brin ON events USING brin (created_at);
