"""Event-status routes over operations/events.py: the lookup shaped like Cobo's
`GET /webhooks/endpoints/{endpoint_id}/events/{event_id}`, an endpoint's events
filtered and paged, an event with one status per endpoint, per-attempt logs, and
retries (one event, or a bulk replay)."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.spec import CURSOR, LIMIT, SINCE, TYPE_FILTER, UNTIL, Param, Route
from dispatcher.operations import events as ops
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import page_query, path_uuid, query_list, query_ms, read_json
from dispatcher.web.views import attempt_json, event_json, event_status_json, page_json


def event_filter(request: web.Request, *, statuses: bool = False) -> ops.EventFilter:
    """The list filters of the query: `type`, `since`, `until` (and `status`)."""
    return ops.EventFilter(
        types=query_list(request, "type"),
        statuses=ops.parse_statuses(query_list(request, "status"), "status") if statuses
        else None,
        since=query_ms(request, "since"), until=query_ms(request, "until"))


async def get_endpoint_event(request: web.Request) -> web.Response:
    found = await ops.endpoint_event(services(request.app), request[CALLER],
                                     path_uuid(request, "endpoint_id"),
                                     path_uuid(request, "event_id"))
    return web.json_response(event_status_json(found))


async def list_endpoint_events(request: web.Request) -> web.Response:
    endpoint_id = path_uuid(request, "endpoint_id")
    found = await ops.endpoint_events(services(request.app), request[CALLER], endpoint_id,
                                      page_query(request), event_filter(request, statuses=True))
    return web.json_response(page_json(found, event_status_json))


async def get_event(request: web.Request) -> web.Response:
    found = await ops.get_event(services(request.app), request[CALLER],
                                path_uuid(request, "event_id"))
    return web.json_response(event_json(found.event, found.deliveries))


async def list_events(request: web.Request) -> web.Response:
    found = await ops.list_events(services(request.app), request[CALLER], page_query(request),
                                  event_filter(request))
    return web.json_response(page_json(found, event_json))


async def get_attempt_logs(request: web.Request) -> web.Response:
    endpoint_id = path_uuid(request, "endpoint_id")
    event_id = path_uuid(request, "event_id")
    delivery, attempts = await ops.attempt_logs(services(request.app), request[CALLER],
                                                endpoint_id, event_id, page_query(request))
    return web.json_response(page_json(attempts, lambda a: attempt_json(a, delivery.sent_body)))


async def retry_event(request: web.Request) -> web.Response:
    await ops.retry_event(services(request.app), request[CALLER],
                          path_uuid(request, "endpoint_id"), path_uuid(request, "event_id"))
    return web.json_response({"retried": True}, status=201)


async def retry_many(request: web.Request) -> web.Response:
    endpoint_id = path_uuid(request, "endpoint_id")
    queued = await ops.replay(services(request.app), request[CALLER], endpoint_id,
                              await read_json(request, required=False))
    return web.json_response({"queued": queued}, status=202)


TAG = "Event status"
STATUS_FILTER = Param("status", {"type": "string"},
                      "Only these statuses: Pending, Retrying, Success, Failed "
                      "(comma-separated or repeated).")

ROUTES = [
    Route("GET", "/v1/events", list_events, "listEvents", "List published events", TAG,
          response="EventPage", params=(LIMIT, CURSOR, TYPE_FILTER, SINCE, UNTIL),
          description="Newest first."),
    Route("GET", "/v1/events/{event_id}", get_event, "getEvent",
          "An event with its status at every endpoint", TAG, response="EventWithDeliveries"),
    Route("GET", "/v1/endpoints/{endpoint_id}/events", list_endpoint_events,
          "listEndpointEvents", "An endpoint's events with their status", TAG,
          response="EventStatusPage",
          params=(LIMIT, CURSOR, STATUS_FILTER, TYPE_FILTER, SINCE, UNTIL),
          description="Newest first, filtered by status, type and creation time."),
    Route("GET", "/v1/endpoints/{endpoint_id}/events/{event_id}", get_endpoint_event,
          "getEndpointEvent", "An event's status at one endpoint", TAG,
          response="EventStatus",
          description="Shaped like Cobo's webhook event record: `event_id`, `url`, "
                      "`created_timestamp`, `type`, `data`, `status`, `next_retry_timestamp`, "
                      "`retries_left`."),
    Route("GET", "/v1/endpoints/{endpoint_id}/events/{event_id}/logs", get_attempt_logs,
          "getAttemptLogs", "Every attempt to deliver an event to an endpoint", TAG,
          response="AttemptPage", params=(LIMIT, CURSOR),
          description="Oldest first: request headers and body, response status, headers "
                      "and body (capped), duration and failure reason."),
    Route("POST", "/v1/endpoints/{endpoint_id}/events/{event_id}/retry", retry_event,
          "retryEvent", "Retry an event now", TAG, ok=201, response="Retried", errors=(409,),
          description="Only for `Retrying` or `Failed` events (409 otherwise): one attempt is "
                      "made now."),
    Route("POST", "/v1/endpoints/{endpoint_id}/retry", retry_many, "retryEvents",
          "Replay an endpoint's Retrying/Failed events", TAG, ok=202, response="RetryQueued",
          body="BulkRetry", body_required=False,
          description="Every event of the endpoint with one of the statuses (default Failed) "
                      "created in [since, until) is attempted again now; answers the count."),
]
