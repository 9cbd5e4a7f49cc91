-- Endpoint changes reach every delivery worker at once, and a manual retry is
-- acknowledged only once per attempt it schedules.

-- Every change that matters to a sender bumps endpoints.version (state, URL,
-- secrets, limits); a delete removes the row. Either way each listening worker is
-- told the endpoint id on commit, and stops starting requests to it until it has
-- read the endpoint again. Counter updates (failures_since_resume) do not notify.
CREATE FUNCTION notify_endpoint_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dispatcher_endpoints', OLD.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER endpoints_changed AFTER UPDATE ON endpoints
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION notify_endpoint_changed();
CREATE TRIGGER endpoints_deleted AFTER DELETE ON endpoints
    FOR EACH ROW EXECUTE FUNCTION notify_endpoint_changed();

-- A manual retry (one delivery or a bulk replay) made this delivery due and its
-- attempt has not been recorded yet: a second retry meanwhile is refused (409)
-- instead of acknowledging an attempt that would never be made.
ALTER TABLE deliveries ADD COLUMN retry_pending boolean NOT NULL DEFAULT false;
