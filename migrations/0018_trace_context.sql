-- The W3C trace context (traceparent, then tracestate after a space) of the publish
-- that stored an event, when tracing is on ([telemetry]): every delivery attempt,
-- in any process and however much later, is a span of that trace. NULL otherwise
-- (no table rewrite: a column without a default).
ALTER TABLE events ADD COLUMN trace_context text;

-- Whether the webhook requests of an endpoint carry `traceparent`/`tracestate`
-- (some receivers reject headers they do not know).
ALTER TABLE endpoints ADD COLUMN propagate_trace_context boolean NOT NULL DEFAULT true;
