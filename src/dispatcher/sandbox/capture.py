"""A capture receiver: records every request it gets (method, path, headers, raw
body), verifies the signature when it knows the key, answers with a fixed status
(or whatever a `respond` hook says), keeps the last N requests and serves them as
JSON at `GET /_requests`."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from dispatcher.clock import SystemClock, to_ms
from dispatcher.errors import ValidationError
from dispatcher.sandbox.samples import signing_key
from dispatcher.signing import COBALT, COBO, SCHEMES, STANDARD_V1, STANDARD_V1A, public_key
from dispatcher.verify import VerificationError, verify_cobalt, verify_cobo, verify_standard

REQUESTS_PATH = "/_requests"
MAX_BODY = 10 * 1024 * 1024


@dataclass(frozen=True)
class Verifier:
    """Checks a request with `dispatcher.verify` for one scheme and key (the shared
    secret, or the Ed25519 public key)."""

    scheme: str
    key: str

    def check(self, headers: Mapping[str, str], body: bytes,
              now: float | None = None) -> str | None:
        """None when the request verifies (its timestamp judged at `now`, default the
        current time, in Unix seconds), else why not."""
        try:
            if self.scheme == COBALT:
                verify_cobalt(self.key, headers, body)
            elif self.scheme == COBO:
                verify_cobo(self.key, headers, body, now=now)
            else:
                verify_standard(self.key, headers, body, now=now)
        except VerificationError as exc:
            return str(exc)
        return None


def make_verifier(scheme: str, secret: str | None, public: str | None) -> Verifier | None:
    """A verifier from `--secret` (any scheme; the private key of an Ed25519 scheme is
    turned into its public key) or `--public-key` (standard-v1a, cobo)."""
    if scheme not in SCHEMES:
        raise ValidationError(f"unknown signing scheme {scheme!r}; expected one of "
                              f"{', '.join(SCHEMES)}", field="scheme")
    if secret is not None and public is not None:
        raise ValidationError("give --secret or --public-key, not both", field="public_key")
    if public is not None:
        if scheme not in (STANDARD_V1A, COBO):
            raise ValidationError(f"{scheme} uses a shared secret: pass --secret",
                                  field="public_key")
        text = public.strip()
        if scheme == STANDARD_V1A and not text.startswith(("whpk_", "-----BEGIN")):
            raise ValidationError("a standard-v1a public key starts with whpk_",
                                  field="public_key")
        return Verifier(scheme, _public_key_text(scheme, text))
    if secret is None:
        return None
    text = secret.strip()
    if scheme in (STANDARD_V1, COBALT):
        signing_key(scheme, text)  # validates
        return Verifier(scheme, text)
    key = signing_key(scheme, text)
    found = public_key(scheme, key.secret)
    assert found is not None
    return Verifier(scheme, found)


def _public_key_text(scheme: str, text: str) -> str:
    """The public key as `verify_standard` (`whpk_` + base64) or `verify_cobo` (hex)
    take it; a PEM key is converted. An unreadable key is refused now, not on the
    first request."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )

    if text.startswith("-----BEGIN"):
        try:
            loaded = load_pem_public_key(text.encode())
        except ValueError as exc:
            raise ValidationError(f"unreadable public key: {exc}", field="public_key") from exc
        if not isinstance(loaded, Ed25519PublicKey):
            raise ValidationError("the PEM key is not an Ed25519 public key",
                                  field="public_key")
        raw = loaded.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return ("whpk_" + base64.b64encode(raw).decode()) if scheme == STANDARD_V1A else raw.hex()
    try:
        raw = (base64.b64decode(text[5:], validate=True) if text.startswith("whpk_")
               else bytes.fromhex(text))
    except ValueError as exc:
        raise ValidationError(f"unreadable public key: {exc}", field="public_key") from exc
    if len(raw) != 32:
        raise ValidationError("an Ed25519 public key is 32 bytes", field="public_key")
    return text


@dataclass
class Captured:
    n: int
    received_ms: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None = None  # None: no key to verify with
    verification_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        try:
            text: str | None = self.body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        out: dict[str, Any] = {
            "n": self.n, "received_timestamp": self.received_ms, "method": self.method,
            "path": self.path, "headers": self.headers, "body": text,
            "verified": self.verified, "verification_error": self.verification_error,
        }
        if text is None:
            out["body_base64"] = base64.b64encode(self.body).decode("ascii")
        return out


Respond = Callable[[Captured], Awaitable[web.Response]]
OnCapture = Callable[[Captured], None]


class CaptureServer:
    """`await start(host, port)`, then requests arrive in `requests` (the last `keep`)."""

    def __init__(self, *, status: int = 200, keep: int = 100,
                 verifier: Verifier | None = None, save_dir: Path | None = None,
                 respond: Respond | None = None, on_capture: OnCapture | None = None,
                 answer: str | None = None) -> None:
        self.status = status
        # Answer callbacks with this body (ok or deny); never to a forged request.
        self.answer = answer
        self.verifier = verifier
        self.save_dir = save_dir
        self.requests: deque[Captured] = deque(maxlen=keep)
        self.count = 0
        self._respond = respond
        self._on_capture = on_capture
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get(REQUESTS_PATH, self._list)
        app.router.add_route("*", "/{tail:.*}", self._capture)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.host = host
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Captured]:
        """Wait until `count` requests have arrived in all."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: self.count >= count)
        return list(self.requests)

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [c.to_json() for c in self.requests]},
                                 dumps=lambda d: json.dumps(d, ensure_ascii=False))

    async def _capture(self, request: web.Request) -> web.Response:
        body = await request.read()
        captured = Captured(self.count + 1, to_ms(SystemClock().now()), request.method,
                            request.path_qs, dict(request.headers), body)
        if self.verifier is not None:
            why = self.verifier.check(request.headers, body)
            captured.verified = why is None
            captured.verification_error = why
        self.count += 1
        self.requests.append(captured)
        if self.save_dir is not None:
            path = self.save_dir / f"{captured.n:06d}.json"
            await asyncio.to_thread(path.write_text,
                                    json.dumps(captured.to_json(), indent=2, ensure_ascii=False),
                                    "utf-8")
        if self._on_capture is not None:
            self._on_capture(captured)
        async with self._arrived:
            self._arrived.notify_all()
        if self._respond is not None:
            return await self._respond(captured)
        if self.answer is not None:
            if captured.verified is False:
                return web.Response(status=401, text=f"signature does not verify: "
                                                     f"{captured.verification_error}")
            return web.Response(status=self.status, text=self.answer)
        if self.status in (204, 304):
            return web.Response(status=self.status)
        return web.json_response({"received": captured.n}, status=self.status)
