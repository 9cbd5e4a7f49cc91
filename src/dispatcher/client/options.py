"""Delivery options of an endpoint (`auth`, `tls`) as the API takes them."""

from __future__ import annotations

from pathlib import Path


def basic_auth(username: str, password: str) -> dict[str, str]:
    """`auth` for a receiver that wants HTTP Basic authentication."""
    return {"type": "basic", "username": username, "password": password}


def bearer_auth(token: str) -> dict[str, str]:
    """`auth` for a receiver that wants `Authorization: Bearer <token>`."""
    return {"type": "bearer", "token": token}


def oauth2_auth(token_url: str, client_id: str, client_secret: str, *,
                scope: str | None = None, audience: str | None = None) -> dict[str, str]:
    """`auth` for a receiver that wants an OAuth2 access token (client credentials
    grant), fetched from `token_url` by the dispatcher."""
    out = {"type": "oauth2_client_credentials", "token_url": token_url,
           "client_id": client_id, "client_secret": client_secret}
    out.update({k: v for k, v in (("scope", scope), ("audience", audience)) if v is not None})
    return out


def client_tls(certificate: str | Path, key: str | Path,
               ca_certificate: str | Path | None = None) -> dict[str, str]:
    """`tls` for mutual TLS from PEM files (a Path) or PEM text (a str): the client
    certificate (the leaf first, then intermediates), its unencrypted key, and
    optionally a private CA to trust for this receiver."""

    def pem(value: str | Path) -> str:
        return value.read_text(encoding="ascii") if isinstance(value, Path) else value

    out = {"client_certificate": pem(certificate), "client_key": pem(key)}
    if ca_certificate is not None:
        out["ca_certificate"] = pem(ca_certificate)
    return out
