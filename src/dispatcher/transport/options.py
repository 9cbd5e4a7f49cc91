"""Per-endpoint delivery options as the transport uses them: custom headers,
receiver authentication and client TLS. Plain frozen values; parsing and checking
what a user sends lives in `dispatcher.transport.validate`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


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
    # Identifies the material (TLS contexts are cached per identity, looked up on
    # every request), computed once; never logged.
    fingerprint: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        h = hashlib.sha256(self.identity_pem)
        h.update((self.ca_certificate or "").encode())
        object.__setattr__(self, "fingerprint", h.hexdigest())

    @property
    def identity_pem(self) -> bytes:
        return (self.client_certificate.strip() + "\n" + self.client_key.strip() + "\n").encode()


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    headers: tuple[tuple[str, str], ...] = ()
    auth: ReceiverAuth | None = None
    tls: ClientTls | None = None


NO_OPTIONS = EndpointOptions()
