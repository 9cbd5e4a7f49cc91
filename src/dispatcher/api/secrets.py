"""Signing material over the API, over operations/secrets.py: rotate an endpoint's
secret, reveal it on an explicit call, and export the tenant's cobo public key."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.endpoints import NO_STORE
from dispatcher.api.spec import Route
from dispatcher.operations import secrets as ops
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import path_uuid
from dispatcher.web.views import material_json, rotated_json


async def rotate_secret(request: web.Request) -> web.Response:
    rotated = await ops.rotate_secret(services(request.app), request[CALLER],
                                      path_uuid(request, "endpoint_id"))
    return web.json_response(rotated_json(rotated), headers=NO_STORE)


async def reveal_secret(request: web.Request) -> web.Response:
    material = await ops.reveal_secret(services(request.app), request[CALLER],
                                       path_uuid(request, "endpoint_id"))
    return web.json_response({"signing_scheme": material.signing_scheme,
                              **material_json(material)}, headers=NO_STORE)


async def signing_key(request: web.Request) -> web.Response:
    key = await ops.signing_key(services(request.app), request[CALLER])
    return web.json_response({"scheme": key.signing_scheme, "public_key": key.public_key,
                              "public_key_pem": key.public_key_pem})


TAG = "Signing"

ROUTES = [
    Route("POST", "/v1/endpoints/{endpoint_id}/rotate-secret", rotate_secret,
          "rotateEndpointSecret", "Rotate an endpoint's signing secret", TAG,
          response="SecretRotated", errors=(409,),
          description="The new secret (or public key) is answered once. Deliveries are "
                      "signed with both the new and the old secret until "
                      "`previous_secret_expires_timestamp`."),
    Route("GET", "/v1/endpoints/{endpoint_id}/secret", reveal_secret, "revealEndpointSecret",
          "Reveal an endpoint's current secret", TAG, response="EndpointSecret",
          description="HMAC schemes: the shared secret. Ed25519 schemes: the public key."),
    Route("GET", "/v1/signing-key", signing_key, "getSigningKey",
          "The tenant's cobo public key", TAG, response="SigningKey",
          description="Receivers of `cobo`-signed deliveries verify `Biz-Resp-Signature` "
                      "with this Ed25519 public key (hex of the raw 32 bytes, and PEM)."),
]
