"""Signing material over the API: rotate an endpoint's secret, reveal it on an
explicit call, and export the tenant's cobo public key. HMAC secrets are shown as
they are; for Ed25519 schemes only the public key ever leaves the server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from dispatcher.api.context import CLOCK, CONFIG, POOL, SECRET_BOX, TENANT
from dispatcher.api.request import path_uuid
from dispatcher.api.spec import Route
from dispatcher.api.views import ms
from dispatcher.errors import Conflict, NotFound
from dispatcher.secretbox import SecretBox
from dispatcher.signing import COBO, STANDARD_V1A, public_key, public_key_pem
from dispatcher.store import endpoints as store
from dispatcher.store.pool import Conn
from dispatcher.store.secrets import (
    reveal_endpoint_secret,
    rotate_endpoint_secret,
    tenant_public_key,
)


async def secret_material(
    conn: Conn, box: SecretBox, tenant_id: UUID, scheme: str, secret: str | None
) -> dict[str, Any]:
    """What a receiver verifies with: the shared secret (HMAC schemes), or the
    public key as `whpk_...`/hex and PEM (standard-v1a, cobo's tenant key)."""
    if scheme == COBO:
        key = await tenant_public_key(conn, box, tenant_id)
        return {"public_key": key.hex, "public_key_pem": key.pem}
    assert secret is not None
    if scheme == STANDARD_V1A:
        return {"public_key": public_key(scheme, secret), "public_key_pem": public_key_pem(secret)}
    return {"secret": secret}


def _not_found(endpoint_id: UUID) -> NotFound:
    return NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")


async def rotate_secret(request: web.Request) -> web.Response:
    tenant_id = request[TENANT]
    endpoint_id = path_uuid(request, "endpoint_id")
    config = request.app[CONFIG]
    box = request.app[SECRET_BOX]
    now = request.app[CLOCK].now()
    overlap = config.signing.rotation_overlap_seconds
    async with request.app[POOL].acquire() as conn, conn.transaction():
        ep = await store.get_endpoint(conn, tenant_id, endpoint_id, for_update=True)
        if ep is None:
            raise _not_found(endpoint_id)
        if ep.signing_scheme == COBO:
            raise Conflict("cobo endpoints are signed with the tenant's key, which is not "
                           "rotated per endpoint", field="signing_scheme")
        had_secret = await conn.fetchval(
            "SELECT secret_enc IS NOT NULL FROM endpoints WHERE id = $1", endpoint_id
        )
        secret = await rotate_endpoint_secret(conn, box, endpoint_id, ep.signing_scheme, now,
                                              overlap, tenant_id=tenant_id)
        material = await secret_material(conn, box, tenant_id, ep.signing_scheme, secret)
    expires = now + timedelta(seconds=overlap) if had_secret else None
    return web.json_response({"signing_scheme": ep.signing_scheme, **material,
                              "previous_secret_expires_timestamp": ms(expires)})


async def reveal_secret(request: web.Request) -> web.Response:
    tenant_id = request[TENANT]
    endpoint_id = path_uuid(request, "endpoint_id")
    box = request.app[SECRET_BOX]
    async with request.app[POOL].acquire() as conn:
        ep = await store.get_endpoint(conn, tenant_id, endpoint_id)
        if ep is None:
            raise _not_found(endpoint_id)
        secret = None
        if ep.signing_scheme != COBO:
            secret = await reveal_endpoint_secret(conn, box, endpoint_id, tenant_id=tenant_id)
        material = await secret_material(conn, box, tenant_id, ep.signing_scheme, secret)
    return web.json_response({"signing_scheme": ep.signing_scheme, **material})


async def signing_key(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        key = await tenant_public_key(conn, request.app[SECRET_BOX], request[TENANT])
    return web.json_response({"scheme": COBO, "public_key": key.hex, "public_key_pem": key.pem})


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
