"""Per-endpoint delivery options as the transport uses them: custom headers,
receiver authentication and client TLS. Plain frozen values; parsing and checking
what a user sends lives in `dispatcher.transport.validate`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class BearerAuth:
    token: str


@dataclass(frozen=True, slots=True)
class OAuth2ClientCredentials:
    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    audience: str | None = None


ReceiverAuth = BasicAuth | BearerAuth | OAuth2ClientCredentials


@dataclass(frozen=True, slots=True)
class ClientTls:
    """A client certificate (and key) for mutual TLS, and optionally a private CA
    trusted for this receiver only (in addition to the system roots)."""

    client_certificate: str  # PEM, the leaf first, then any intermediates
    client_key: str  # PEM, PKCS#8 or traditional
    ca_certificate: str | None = None

    @property
    def identity_pem(self) -> bytes:
        return (self.client_certificate.strip() + "\n" + self.client_key.strip() + "\n").encode()

    @property
    def fingerprint(self) -> str:
        """Identifies the material (clients are cached per identity), never logged."""
        h = hashlib.sha256(self.identity_pem)
        h.update((self.ca_certificate or "").encode())
        return h.hexdigest()


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    headers: tuple[tuple[str, str], ...] = ()
    auth: ReceiverAuth | None = None
    tls: ClientTls | None = None


NO_OPTIONS = EndpointOptions()
