-- Rate-limited attempts a delivery has had (429, or 503 with Retry-After). They spend
-- no retry; past delivery.max_rate_limited_attempts they count as failures. A
-- constant default: no table rewrite.
ALTER TABLE deliveries ADD COLUMN rate_limited_attempts integer NOT NULL DEFAULT 0;
