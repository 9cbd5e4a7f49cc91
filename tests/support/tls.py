"""Certificates made at test time (a CA and the server and client certificates it
issues, shaped as rustls/webpki requires) and an HTTPS receiver on 127.0.0.1 that
can require a client certificate from a given CA."""

from __future__ import annotations

import ipaddress
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from multidict import CIMultiDict

from tests.support.receiver import Received, Receiver

# P-256: fast to generate, and every TLS stack in play (rustls, OpenSSL) takes it.
_CURVE = ec.SECP256R1()
# Backdated a little, so that a certificate made now is valid on a clock a bit behind.
_SKEW = timedelta(minutes=5)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedCertificate:
    """A leaf certificate, its key and the CA that issued it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    issuer: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return _pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        """PKCS#8, unencrypted."""
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def chain_pem(self) -> bytes:
        """The leaf, then the issuing CA."""
        return self.cert_pem + _pem(self.issuer)

    @property
    def identity_pem(self) -> bytes:
        """Certificate and key in one PEM, as a TLS client identity is given."""
        return self.cert_pem + self.key_pem

    @property
    def subject_cn(self) -> str:
        value = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return value if isinstance(value, str) else value.decode()


class CertificateAuthority:
    """A self-signed root CA that issues server and client certificates directly."""

    def __init__(self, name: str = "dispatcher test CA") -> None:
        self.key = ec.generate_private_key(_CURVE)
        now = datetime.now(UTC)
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return _pem(self.cert)

    def issue_server(self, hosts: Sequence[str] = ("127.0.0.1", "localhost"), *,
                     valid_for: timedelta = timedelta(days=365)) -> IssuedCertificate:
        """A server certificate with each of `hosts` as an IP or DNS SAN (webpki
        matches only SANs, never the CN)."""
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return self._issue(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, sans,
                           datetime.now(UTC) - _SKEW, valid_for)

    def issue_client(self, cn: str, *, valid_for: timedelta = timedelta(days=365),
                     valid_from: datetime | None = None) -> IssuedCertificate:
        """A client certificate for subject CN `cn`, valid from `valid_from` (default:
        now) for `valid_for`: `valid_for=timedelta(days=10)` expires in 10 days, a
        `valid_from` far enough back makes one that has expired."""
        start = valid_from if valid_from is not None else datetime.now(UTC) - _SKEW
        return self._issue(cn, ExtendedKeyUsageOID.CLIENT_AUTH, [], start, valid_for)

    def _issue(self, cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName],
               start: datetime, valid_for: timedelta) -> IssuedCertificate:
        key = ec.generate_private_key(_CURVE)
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return IssuedCertificate(builder.sign(self.key, hashes.SHA256()), key, self.cert)


# -- the HTTPS receiver ---------------------------------------------------------------

@dataclass
class TlsReceived(Received):
    peer_cn: str | None = None  # the client certificate's subject CN, when one was sent


def _peer_cn(request: web.Request) -> str | None:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def server_context(cert: IssuedCertificate,
                   client_ca: CertificateAuthority | None = None) -> ssl.SSLContext:
    """Serves `cert`; with `client_ca`, requires a client certificate issued by that
    CA and by no other (no system roots)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # The ssl module loads a certificate and key only from files.
    with tempfile.TemporaryDirectory() as d:
        certfile, keyfile = Path(d, "cert.pem"), Path(d, "key.pem")
        certfile.write_bytes(cert.chain_pem)
        keyfile.write_bytes(cert.key_pem)
        ctx.load_cert_chain(certfile, keyfile)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.cert_pem.decode())
    return ctx


class TlsReceiver(Receiver):
    """The test Receiver (script, reply_with, wait_for) over TLS; each request also
    records the client certificate's CN."""

    requests: list[TlsReceived]  # type: ignore[assignment]

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.ssl_context = context

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/hook"

    async def _record(self, request: web.Request) -> TlsReceived:
        return TlsReceived(request.method, request.path_qs, CIMultiDict(request.headers),
                           await request.read(), time.monotonic(), _peer_cn(request))


@asynccontextmanager
async def tls_receiver(server_ca: CertificateAuthority,
                       client_ca: CertificateAuthority | None = None
                       ) -> AsyncIterator[TlsReceiver]:
    """An HTTPS receiver on 127.0.0.1 with a certificate from `server_ca` for
    127.0.0.1 and localhost; with `client_ca`, it refuses the TLS handshake of a
    client without a certificate from that CA."""
    r = TlsReceiver(server_context(server_ca.issue_server(), client_ca))
    await r.start()
    try:
        yield r
    finally:
        await r.stop()
