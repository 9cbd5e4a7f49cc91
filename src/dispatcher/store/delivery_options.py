"""Per-endpoint delivery options at rest: custom headers as a jsonb array of
[name, value] pairs; receiver auth and client TLS each as a public jsonb view
(what the API shows) plus the whole option as JSON text encrypted with the
SecretBox, bound to the endpoint's id and its purpose (`/auth`, `/tls`), so a
blob moved to another row or column does not decrypt. Every write bumps the
endpoint's `version`, so delivery workers reload it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from dispatcher.errors import NotFound
from dispatcher.secretbox import SecretBox, SecretDecryptionError
from dispatcher.store.pool import Conn
from dispatcher.store.secrets import endpoint_aad
from dispatcher.transport.options import (
    NO_OPTIONS,
    BasicAuth,
    BearerAuth,
    ClientTls,
    EndpointOptions,
    OAuth2ClientCredentials,
    ReceiverAuth,
)
from dispatcher.transport.validate import (
    BASIC,
    BEARER,
    auth_document,
    auth_view,
    tls_document,
    tls_view,
)

# The options a change may hold: headers (pairs), auth (ReceiverAuth | None),
# tls (ClientTls | None); None removes auth or TLS.
OPTION_KEYS = ("headers", "auth", "tls")


def auth_aad(endpoint_id: UUID) -> bytes:
    return endpoint_aad(endpoint_id) + b"/auth"


def tls_aad(endpoint_id: UUID) -> bytes:
    return endpoint_aad(endpoint_id) + b"/tls"


def _dump(document: Mapping[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def seal_auth(
    box: SecretBox, endpoint_id: UUID, auth: ReceiverAuth | None
) -> tuple[dict[str, Any] | None, bytes | None]:
    """(public view, encrypted whole) for the `auth` and `auth_secret_enc` columns."""
    if auth is None:
        return None, None
    return auth_view(auth), box.encrypt(_dump(auth_document(auth)), auth_aad(endpoint_id))


def seal_tls(
    box: SecretBox, endpoint_id: UUID, tls: ClientTls | None
) -> tuple[dict[str, Any] | None, bytes | None]:
    """(public description, encrypted PEMs) for the `tls` and `tls_secret_enc` columns."""
    if tls is None:
        return None, None
    return tls_view(tls), box.encrypt(_dump(tls_document(tls)), tls_aad(endpoint_id))


def _malformed(what: str) -> SecretDecryptionError:
    return SecretDecryptionError(f"stored {what} of an endpoint is not in the expected form",
                                 field=what)


def _open_auth(box: SecretBox, endpoint_id: UUID, blob: bytes) -> ReceiverAuth:
    try:
        doc = json.loads(box.decrypt(blob, auth_aad(endpoint_id)))
        kind = doc["type"]
        if kind == BASIC:
            return BasicAuth(username=doc["username"], password=doc["password"])
        if kind == BEARER:
            return BearerAuth(token=doc["token"])
        return OAuth2ClientCredentials(
            token_url=doc["token_url"], client_id=doc["client_id"],
            client_secret=doc["client_secret"], scope=doc.get("scope"),
            audience=doc.get("audience"))
    except (ValueError, KeyError, TypeError) as exc:
        raise _malformed("auth") from exc


def _open_tls(box: SecretBox, endpoint_id: UUID, blob: bytes) -> ClientTls:
    try:
        doc = json.loads(box.decrypt(blob, tls_aad(endpoint_id)))
        return ClientTls(client_certificate=doc["client_certificate"],
                         client_key=doc["client_key"],
                         ca_certificate=doc.get("ca_certificate"))
    except (ValueError, KeyError, TypeError) as exc:
        raise _malformed("tls") from exc


def open_delivery_options(
    box: SecretBox,
    endpoint_id: UUID,
    headers: list[list[str]] | str | None,
    auth_secret_enc: bytes | None,
    tls_secret_enc: bytes | None,
) -> EndpointOptions:
    """The options to send with, decrypted; SecretDecryptionError when a stored
    secret does not decrypt (wrong master key, altered or moved blob). `headers` is
    the jsonb column as decoded (or its text, on a connection without the codec)."""
    try:
        stored: list[list[str]] = (json.loads(headers) if isinstance(headers, str)
                                   else headers or [])
        pairs = tuple((str(name), str(value)) for name, value in stored)
    except (ValueError, TypeError) as exc:
        raise _malformed("headers") from exc
    auth = None if auth_secret_enc is None else _open_auth(box, endpoint_id, auth_secret_enc)
    tls = None if tls_secret_enc is None else _open_tls(box, endpoint_id, tls_secret_enc)
    if not pairs and auth is None and tls is None:
        return NO_OPTIONS
    return EndpointOptions(headers=pairs, auth=auth, tls=tls)


async def endpoint_delivery_options(
    conn: Conn, box: SecretBox, tenant_id: UUID, endpoint_id: UUID
) -> EndpointOptions:
    """One endpoint's options, decrypted (a sample sent from the console goes out as
    the engine would send it). NotFound if the tenant has no such endpoint."""
    row = await conn.fetchrow(
        "SELECT headers, auth_secret_enc, tls_secret_enc FROM endpoints"
        " WHERE id = $1 AND tenant_id = $2", endpoint_id, tenant_id)
    if row is None:
        raise NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")
    return open_delivery_options(box, endpoint_id, row["headers"], row["auth_secret_enc"],
                                 row["tls_secret_enc"])


async def set_delivery_options(
    conn: Conn,
    box: SecretBox,
    tenant_id: UUID,
    endpoint_id: UUID,
    changes: Mapping[str, Any],
    now: datetime,
) -> None:
    """Replace each option in `changes` (keys from OPTION_KEYS) wholesale, in one
    statement that also bumps the endpoint's version. NotFound if the tenant has
    no such endpoint."""
    unknown = set(changes) - set(OPTION_KEYS)
    assert not unknown, f"not delivery options: {unknown}"
    sets = ["version = version + 1", "updated_at = $3"]
    args: list[Any] = [endpoint_id, tenant_id, now]

    def put(column: str, value: Any, cast: str = "") -> None:
        args.append(value)
        sets.append(f"{column} = ${len(args)}{cast}")

    if "headers" in changes:
        put("headers", [[name, value] for name, value in changes["headers"]], "::jsonb")
    if "auth" in changes:
        public, secret = seal_auth(box, endpoint_id, changes["auth"])
        put("auth", public, "::jsonb")
        put("auth_secret_enc", secret, "::bytea")
    if "tls" in changes:
        public, secret = seal_tls(box, endpoint_id, changes["tls"])
        put("tls", public, "::jsonb")
        put("tls_secret_enc", secret, "::bytea")
    status = await conn.execute(
        f"UPDATE endpoints SET {', '.join(sets)} WHERE id = $1 AND tenant_id = $2", *args)
    if status == "UPDATE 0":
        raise NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")
