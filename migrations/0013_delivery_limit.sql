-- The per-publish delivery limit, checked inside the statement that publishes: the
-- count and the insert are one round trip, and an oversized publish stores nothing.
-- The caller recognises the error by its message and reads the count from DETAIL.
CREATE FUNCTION dispatcher_delivery_limit(planned bigint, max_deliveries bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF planned > max_deliveries THEN
        RAISE EXCEPTION 'delivery_limit_reached' USING DETAIL = planned::text;
    END IF;
    RETURN true;
END
$$;
