"""JSON Schemas (OpenAPI 3.1 dialect) of every request and response body."""

from __future__ import annotations

from typing import Any

from dispatcher.catalogue import NAME_PATTERN
from dispatcher.model import SIGNING_SCHEMES, DeliveryStatus
from dispatcher.operations.fields import MAX_MS

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
UUID_: Schema = {"type": "string", "format": "uuid"}
MS: Schema = {"type": "integer", "description": "Unix milliseconds"}
NULLABLE_MS: Schema = {"type": ["integer", "null"], "description": "Unix milliseconds"}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
ANY: Schema = {"description": "Any JSON value"}
STATUS: Schema = {"type": "string", "enum": [s.label for s in DeliveryStatus]}
EVENT_TYPE_NAME: Schema = {"type": "string", "pattern": NAME_PATTERN}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Schema], required: list[str] | None = None, *,
        closed: bool = False, description: str = "") -> Schema:
    schema: Schema = {"type": "object", "properties": props,
                      "required": list(props) if required is None else required}
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def page_of(item: str) -> Schema:
    return obj({"data": {"type": "array", "items": ref(item)},
                "next_cursor": {**NULLABLE_STRING,
                                "description": "Pass as `cursor` for the next page; "
                                               "null on the last page."}})


ENDPOINT_FIELDS: dict[str, Schema] = {
    "url": {"type": "string", "maxLength": 500,
            "description": "https (or http when allowed), ports 80/443 unless allowed, "
                           "no credentials, not a private address."},
    "description": {"type": "string", "maxLength": 1000},
    "event_types": {"type": "array", "minItems": 1, "maxItems": 100,
                    "items": {"type": "string", "minLength": 1, "maxLength": 100},
                    "description": 'Types to receive; ["*"] (the default) for all.'},
    "signing_scheme": {"type": "string", "enum": list(SIGNING_SCHEMES)},
    "retry_policy": {"type": "string", "description": "A retry policy name "
                     "(okx, exponential-3, standard, cobo, none, or one from config)."},
    "timeout_seconds": {"type": "number", "minimum": 1, "maximum": 30},
    "max_in_flight": {"type": "integer", "minimum": 1, "maximum": 1000},
    "metadata": {"type": "object"},
    "pause_window_threshold": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000000,
                               "description": "Pause after this many failures within the "
                                              "window; null: config health.window_threshold."},
    "pause_total_threshold": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000000,
                              "description": "Pause after this many failures since the last "
                                             "resume; null: config health.total_threshold."},
    "channels": {"type": ["array", "null"], "maxItems": 10,
                 "items": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                 "description": "Only events sharing one of these channels; empty or "
                                "null: every event of its types."},
    "propagate_trace_context": {"type": "boolean", "default": True,
                                "description": "With tracing on ([telemetry]), requests "
                                "carry the attempt span's traceparent and tracestate."},
}

# Per-endpoint delivery options as they are sent (api/endpoints.py,
# transport/validate.py); PATCH replaces each one given wholesale, null removes it.
_AUTH_TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": 4096}
_OPTIONAL_AUTH_TEXT: Schema = {**_AUTH_TEXT, "type": ["string", "null"]}
_PEM: Schema = {"type": "string", "minLength": 1, "maxLength": 65536}
OPTION_FIELDS: dict[str, Schema] = {
    "headers": {
        "type": ["object", "null"], "maxProperties": 20,
        "propertyNames": {"minLength": 1, "maxLength": 100,
                          "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
        "additionalProperties": {"type": "string", "maxLength": 1024},
        "description": "Custom headers sent with every delivery, name -> value (at most "
                       "20). Not allowed: Host, Content-*, hop-by-hop headers, "
                       "Authorization (use `auth`), the signature headers, traceparent, "
                       "tracestate.",
    },
    "auth": {
        "oneOf": [
            {"type": "null"},
            obj({"type": {"const": "basic"}, "username": {**_AUTH_TEXT, "pattern": "^[^:]*$"},
                 "password": _AUTH_TEXT}, closed=True),
            obj({"type": {"const": "bearer"}, "token": _AUTH_TEXT}, closed=True),
            obj({"type": {"const": "oauth2_client_credentials"},
                 "token_url": {"type": "string", "minLength": 1, "maxLength": 4096,
                               "description": "Checked like an endpoint URL."},
                 "client_id": _AUTH_TEXT, "client_secret": _AUTH_TEXT,
                 "scope": _OPTIONAL_AUTH_TEXT, "audience": _OPTIONAL_AUTH_TEXT},
                required=["type", "token_url", "client_id", "client_secret"], closed=True),
        ],
        "description": "How the receiver authenticates deliveries; stored encrypted, the "
                       "secret fields are never shown again. null: none.",
    },
    "tls": {
        "oneOf": [
            {"type": "null"},
            obj({"client_certificate": {**_PEM, "description": "PEM, the leaf first, then "
                                        "any intermediates."},
                 "client_key": {**_PEM, "description": "PEM, unencrypted, matching the "
                                "leaf certificate."},
                 "ca_certificate": {**_PEM, "type": ["string", "null"],
                                    "description": "PEM: a private CA trusted for this "
                                                   "receiver (besides the system roots)."}},
                required=["client_certificate", "client_key"], closed=True),
        ],
        "description": "A client certificate for mutual TLS; stored encrypted, only its "
                       "description is shown. null: none.",
    },
}

CERTIFICATE: Schema = obj({"subject": STRING, "issuer": STRING,
                           "not_after": {"type": "string", "format": "date-time"},
                           "fingerprint_sha256": {"type": "string",
                                                  "pattern": "^[0-9a-f]{64}$"}})
OPTION_VIEWS: dict[str, Schema] = {
    "headers": {"type": "object", "additionalProperties": STRING,
                "description": "Custom headers sent with every delivery."},
    "auth": {"oneOf": [
        {"type": "null"},
        obj({"type": {"const": "basic"}, "username": STRING}),
        obj({"type": {"const": "bearer"}}),
        obj({"type": {"const": "oauth2_client_credentials"}, "token_url": STRING,
             "client_id": STRING, "scope": NULLABLE_STRING, "audience": NULLABLE_STRING}),
    ], "description": "The receiver auth type and its fields that are not secret."},
    "tls": {"oneOf": [
        {"type": "null"},
        obj({"client_certificate": CERTIFICATE,
             "ca_certificate": {"oneOf": [{"type": "null"},
                                          obj({"subject": STRING,
                                               "not_after": {"type": "string",
                                                             "format": "date-time"}})]}}),
    ], "description": "The client certificate's description (never the key)."},
}

SECRET_FIELDS: dict[str, Schema] = {
    "secret": {"type": "string", "description": "The shared secret (HMAC schemes)."},
    "public_key": {"type": "string",
                   "description": "whpk_... (standard-v1a) or hex (cobo) public key."},
    "public_key_pem": {"type": "string", "description": "The public key as PEM."},
}

KIND: Schema = {"type": "string", "enum": ["webhook", "callback"], "default": "webhook",
                "description": "webhook endpoints receive events; callback endpoints "
                               "answer approval callbacks with `ok` or `deny` (they take "
                               "no event_types). Set on create only."}

ENDPOINT = obj({
    "id": UUID_,
    "kind": KIND,
    **{k: v for k, v in ENDPOINT_FIELDS.items()
       if k not in ("url", "description", "event_types")},
    "url": STRING,
    "description": STRING,
    "event_types": {"type": "array", "items": STRING,
                    "description": "Empty for a callback endpoint."},
    "state": {"type": "string", "enum": ["active", "paused", "disabled"]},
    "state_reason": NULLABLE_STRING,
    "state_changed_timestamp": NULLABLE_MS,
    "created_timestamp": MS,
    "updated_timestamp": MS,
    "effective_max_in_flight": {"type": "integer", "minimum": 1,
                                "description": "The adaptive in-flight limit now: halved on "
                                               "429/503, timeouts and connection errors, "
                                               "grown back by one per run of successes up "
                                               "to max_in_flight."},
    "rate_limited_until_timestamp": {**NULLABLE_MS, "description": "No request starts "
                                     "before this (a 429, or 503 with Retry-After); null "
                                     "when not backing off."},
    **OPTION_VIEWS,
})

DELIVERY_STATE: dict[str, Schema] = {
    "status": STATUS,
    "next_retry_timestamp": {**NULLABLE_MS, "description": "When the next attempt is "
                             "scheduled; null when finished, in flight, held or "
                             "waiting behind its ordering key (see blocked_by)."},
    "retries_left": {"type": "integer"},
    "attempts": {"type": "integer"},
    "last_attempt_timestamp": NULLABLE_MS,
    "failure_reason": NULLABLE_STRING,
    "held": {"type": "boolean", "description": "Held because the endpoint is paused "
             "or disabled."},
    "ordering_key": {**NULLABLE_STRING, "description": "The event's ordering key, if any."},
    "blocked_by": {**NULLABLE_STRING, "format": "uuid",
                   "description": "While an earlier event with the same ordering key is "
                                  "unfinished at this endpoint: that event's id."},
}

NEW_EVENT = obj({
    "type": {**EVENT_TYPE_NAME, "maxLength": 100},
    "data": ANY,
    "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 255},
    "ordering_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 200,
                     "description": "Events with the same key reach each endpoint one at a "
                                    "time, in publish order."},
    "channels": {"type": ["array", "null"], "maxItems": 10,
                 "items": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                 "description": "Reaches endpoints with one of these channels, and "
                                "endpoints without channels."},
}, required=["type", "data"], closed=True)

PUBLISHED_EVENT = obj({
    "id": UUID_,
    "type": STRING,
    "created_timestamp": MS,
    "deliveries": {"type": "array", "items": obj({"endpoint_id": UUID_, "status": STATUS})},
    "duplicate": {"type": "boolean",
                  "description": "True when an idempotency key matched an earlier event."},
})

# Batch publish with an operator key may name each event's tenant.
BATCH_EVENT = obj({
    **NEW_EVENT["properties"],
    "tenant": {"type": "string", "minLength": 1, "maxLength": 100,
               "description": "Operator keys: the tenant (name or id) to publish this event "
                              "for; default: the request's tenant."},
}, required=["type", "data"], closed=True)

TENANT_NAME: Schema = {"type": "string", "pattern": "^[a-z0-9._-]{1,100}$"}
TENANT = obj({"id": UUID_, "name": STRING, "metadata": {"type": "object"},
              "created_timestamp": MS, "updated_timestamp": MS})

EVENT = obj({"id": UUID_, "type": STRING, "created_timestamp": MS, "data": ANY})

CALLBACK_STATUS: Schema = {"type": "string",
                           "enum": ["Pending", "Retrying", "Approved", "Denied", "Failed"]}
CALLBACK_SUMMARY: dict[str, Schema] = {
    "id": UUID_,
    "type": STRING,
    "status": CALLBACK_STATUS,
    "endpoint_id": UUID_,
    "created_timestamp": MS,
    "deadline_timestamp": {**MS, "description": "Not decided by then: Failed."},
}
CALLBACK_SCHEMAS: dict[str, Schema] = {
    "CallbackCreate": obj({
        "type": {"type": "string", "minLength": 1, "maxLength": 100},
        "data": {"type": "object", "description": "What the callback endpoint decides on."},
        "endpoint_id": {**UUID_, "description": "Default: the tenant's only active "
                        "callback endpoint."},
        "deadline_seconds": {"type": "number", "minimum": 1,
                             "description": "Default: config callbacks.default_deadline_"
                                            "seconds (300)."},
    }, required=["type", "data"], closed=True),
    "CallbackAccepted": obj(CALLBACK_SUMMARY),
    "Callback": obj({
        **CALLBACK_SUMMARY,
        "data": {"type": "object"},
        "decision": {"type": ["string", "null"], "enum": ["ok", "deny", None]},
        "decided_timestamp": {**NULLABLE_MS, "description": "When it was Approved, Denied "
                              "or Failed."},
        "attempts": {"type": "integer"},
        "retries_left": {"type": "integer"},
        "next_retry_timestamp": NULLABLE_MS,
        "failure_reason": {**NULLABLE_STRING, "description": "timeout, http_status, "
                           "no_decision, deadline_expired, connect_error, ..."},
        "held": {"type": "boolean", "description": "Held: the callback endpoint is paused "
                 "(the deadline still runs)."},
    }),
    "CallbackPage": page_of("Callback"),
}

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": obj({"code": STRING, "message": STRING, "field": NULLABLE_STRING})}),
    "Endpoint": ENDPOINT,
    "EndpointCreated": {"allOf": [ref("Endpoint"), obj(SECRET_FIELDS, required=[])]},
    "EndpointUpdated": {"allOf": [ref("Endpoint"), obj(SECRET_FIELDS, required=[])]},
    "EndpointCreate": obj({**ENDPOINT_FIELDS, **OPTION_FIELDS, "kind": KIND},
                          required=["url"], closed=True),
    "EndpointUpdate": obj({**ENDPOINT_FIELDS, **OPTION_FIELDS}, required=[], closed=True),
    "EndpointPage": page_of("Endpoint"),
    "SecretRotated": obj({"signing_scheme": STRING, **SECRET_FIELDS,
                          "previous_secret_expires_timestamp": NULLABLE_MS},
                         required=["signing_scheme", "previous_secret_expires_timestamp"]),
    "EndpointSecret": obj({"signing_scheme": STRING, **SECRET_FIELDS},
                          required=["signing_scheme"]),
    "SigningKey": obj({"scheme": {"type": "string", "enum": ["cobo"]},
                       "public_key": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                       "public_key_pem": STRING}),
    "NewEvent": NEW_EVENT,
    "NewEventBatch": obj({"events": {"type": "array", "minItems": 1, "maxItems": 500,
                                     "items": ref("BatchEvent")}}, closed=True),
    "BatchEvent": BATCH_EVENT,
    "PublishedEvent": PUBLISHED_EVENT,
    "PublishedEventList": obj({"data": {"type": "array", "items": ref("PublishedEvent")}}),
    "Event": EVENT,
    "EventPage": page_of("Event"),
    "EventWithDeliveries": obj({
        **EVENT["properties"],
        "deliveries": {"type": "array",
                       "items": obj({"endpoint_id": UUID_, "url": STRING, **DELIVERY_STATE})},
    }),
    "EventStatus": obj({"event_id": UUID_, "endpoint_id": UUID_, "url": STRING,
                        "created_timestamp": MS, "type": STRING, "data": ANY,
                        **DELIVERY_STATE}),
    "EventStatusPage": page_of("EventStatus"),
    "Attempt": obj({
        "attempt": {"type": "integer", "description": "1 for the first attempt."},
        "timestamp": MS,
        "duration_ms": {"type": "number"},
        "request": obj({"headers": {"type": "object"}, "body": STRING}),
        "response": {"oneOf": [{"type": "null"},
                               obj({"status": {"type": "integer"},
                                    "headers": {"type": "object"},
                                    "body": {"type": "string",
                                             "description": "Capped (4 KiB by default)."}})]},
        "failure_reason": {**NULLABLE_STRING, "description": "timeout, connect_error, "
                           "protocol_error, tls_error, http_status, redirect, "
                           "blocked_address, ..."},
        "error": {**NULLABLE_STRING, "description": "What went wrong when there was no "
                  "response."},
    }),
    "AttemptPage": page_of("Attempt"),
    "Retried": obj({"retried": {"type": "boolean", "const": True}}),
    "BulkRetry": obj({
        "status": {"oneOf": [{"type": "string", "enum": ["Retrying", "Failed"]},
                             {"type": "array", "minItems": 1,
                              "items": {"type": "string", "enum": ["Retrying", "Failed"]}}],
                   "description": "Default Failed."},
        "since": {"type": "integer", "minimum": 0, "maximum": MAX_MS},
        "until": {"type": "integer", "minimum": 0, "maximum": MAX_MS},
    }, required=[], closed=True),
    "RetryQueued": obj({"queued": {"type": "integer", "minimum": 0}}),
    "EventType": obj({"name": STRING, "description": STRING, "group": STRING,
                      "source": {"type": "string", "enum": ["builtin", "config", "tenant"]},
                      "sample": ANY}),
    "EventTypeCreate": obj({"name": {**EVENT_TYPE_NAME, "maxLength": 100},
                            "description": {"type": "string", "maxLength": 1000},
                            "sample": ANY}, required=["name"], closed=True),
    "EventTypePage": page_of("EventType"),
    "Metrics": {"type": "string", "description": "Prometheus text exposition format."},
    "EndpointHealth": obj({
        "endpoint_id": UUID_,
        "state": {"type": "string", "enum": ["active", "paused", "disabled"]},
        "state_reason": NULLABLE_STRING,
        "state_changed_timestamp": NULLABLE_MS,
        "failures_in_window": {"type": "integer"},
        "window_seconds": {"type": "integer"},
        "window_threshold": {"type": "integer"},
        "failures_since_resume": {"type": "integer"},
        "total_threshold": {"type": "integer"},
        "held": {"type": "integer", "description": "Deliveries held for this endpoint."},
        "redrive_pending": {"type": "boolean",
                            "description": "Held deliveries are being sent again after a "
                                           "resume."},
        "warnings": {"type": "array", "items": obj({
            "code": {"type": "string", "enum": ["client_certificate_expiring",
                                                "client_certificate_expired"]},
            "message": STRING,
            "not_after": {"type": "string", "format": "date-time"},
        }), "description": "What needs attention: a TLS client certificate that expires "
                           "within 30 days, or has expired."},
    }),
    "Health": obj({"status": {"type": "string", "enum": ["ok", "unavailable"]},
                   "reason": STRING, "pending": {"type": "array", "items": STRING}},
                  required=["status"]),
    "OpenApi": {"type": "object", "description": "This document."},
    **CALLBACK_SCHEMAS,
    "Tenant": TENANT,
    "TenantPage": page_of("Tenant"),
    "TenantCreate": obj({"name": TENANT_NAME, "metadata": {"type": "object"}},
                        required=["name"], closed=True),
    "TenantUpdate": obj({"name": TENANT_NAME, "metadata": {"type": "object"}},
                        required=[], closed=True),
    "TenantKeyCreate": obj({"name": {"type": "string", "maxLength": 100}}, required=[],
                           closed=True),
    "TenantKey": obj({"key": {"type": "string", "description": "The key, shown only here."},
                      "id": UUID_, "prefix": STRING, "name": STRING, "tenant_id": UUID_,
                      "tenant": STRING}),
    "AuditEntry": obj({
        "seq": {"type": "integer", "minimum": 1,
                "description": "Position in the hash chain (gapless)."},
        "timestamp": MS,
        "actor": obj({
            "type": {"type": "string", "enum": ["operator_key", "tenant_key", "portal_token",
                                                "local", "system"]},
            "id": {"type": "string", "description": "The key id, the portal token's tenant "
                   "id, cli:<user> or system:<job>."},
            "via": {"type": "string", "enum": ["api", "console", "cli", "engine",
                                               "maintenance"]},
            "key_id": {**UUID_, "type": ["string", "null"]},
            "session_id": {**UUID_, "type": ["string", "null"],
                           "description": "The console session, when via console."},
            "address": {**NULLABLE_STRING, "description": "The client's address."},
        }),
        "tenant_id": {**UUID_, "type": ["string", "null"],
                      "description": "null: an entry of the deployment (operators only)."},
        "action": {"type": "string", "examples": ["endpoint.update"]},
        "target": obj({"type": STRING, "id": STRING}),
        "changes": {"type": "object", "description": "Changed fields as {old, new}; "
                    "secrets only as \"rotated\" or \"revealed\"."},
        "hash": {"type": "string", "description": "SHA-256 (hex) over the previous entry's "
                 "hash and this entry."},
    }),
    "AuditPage": page_of("AuditEntry"),
    "SessionsEnded": obj({
        "key_id": UUID_,
        "ended": {"type": "integer", "minimum": 0,
                  "description": "How many open console sessions of the key were ended."},
    }),
    "TenantStats": obj({
        "tenant_id": UUID_,
        "endpoints": obj({"active": {"type": "integer"}, "paused": {"type": "integer"},
                          "disabled": {"type": "integer"}}),
        "deliveries": obj({s.label: {"type": "integer"} for s in DeliveryStatus}),
        "failures_in_window": {"type": "integer",
                               "description": "Failed attempts within the health window."},
        "window_seconds": {"type": "integer"},
    }),
    "PortalLinkCreate": obj({"expires_in": {"type": "integer", "minimum": 60,
                                            "maximum": 2592000, "default": 3600,
                                            "description": "Seconds until the link expires."},
                             "read_only": {"type": "boolean", "default": False}},
                            required=[], closed=True),
    "PortalLink": obj({
        "url": {"type": "string", "description": "The web console, signed in as the tenant: "
                "`<server>/portal/#token=<token>`."},
        "token": {"type": "string", "description": "dpt_...: also a Bearer token for this API."},
        "tenant_id": UUID_,
        "read_only": {"type": "boolean"},
        "expires_timestamp": MS,
    }),
}
