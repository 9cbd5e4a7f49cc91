-- jsonb rewrites numbers as numeric: 1e308 came back as a 309-digit integer, so a
-- client's float no longer read as a float. `json` keeps the text exactly as written
-- (these columns are stored and returned, never queried into).
ALTER TABLE event_types ALTER COLUMN sample TYPE json USING sample::json;
ALTER TABLE endpoints ALTER COLUMN metadata TYPE json USING metadata::json;
