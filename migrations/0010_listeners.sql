-- Temporary endpoints of `dispatcher listen`: their deliveries travel over the
-- listener's websocket, sent by the daemon process that holds it (listener_owner),
-- never by the delivery engine. The holder refreshes listener_seen_at; an endpoint
-- whose holder stopped doing so (its process died) is removed by the next listener.
ALTER TABLE endpoints ADD COLUMN listener_owner uuid;
ALTER TABLE endpoints ADD COLUMN listener_seen_at timestamptz;
CREATE INDEX endpoints_listeners ON endpoints (listener_seen_at) WHERE listener_owner IS NOT NULL;
