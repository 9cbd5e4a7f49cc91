-- Channels, with Svix's meaning: an event may carry up to 10 channel names; an
-- endpoint with channels receives only events sharing one of them, an endpoint
-- without any receives every event of its types. Neither column needs a rewrite.
ALTER TABLE events ADD COLUMN channels text[];
ALTER TABLE endpoints ADD COLUMN channels text[] NOT NULL DEFAULT '{}';
