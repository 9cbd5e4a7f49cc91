"""The keys routes (operator keys only) over operations/keys.py: end every console
session opened with a key. Keys are created with `POST /v1/tenants/{t}/keys` (see
api/tenants.py) and listed and revoked with `dispatcher keys`."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.spec import Route
from dispatcher.operations import keys as ops
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import path_uuid


async def end_key_sessions(request: web.Request) -> web.Response:
    key_id = path_uuid(request, "key_id")
    done = await ops.end_sessions(services(request.app), request[CALLER], str(key_id),
                                  field="key_id")
    return web.json_response({"key_id": str(done.key.id), "ended": done.ended})


TAG = "Keys"

ROUTES = [
    Route("POST", "/v1/keys/{key_id}/sessions/end", end_key_sessions, "endKeySessions",
          "End every console session of a key", TAG, response="SessionsEnded",
          operator=True,
          description="Every open web console session signed in with this key is refused "
                      "from its next request, by every process; the key itself keeps "
                      "working (revoking a key ends its sessions too). Answers how many "
                      "were open."),
]
