"""Cobo's own SDK (`cobo-waas2`) as a receiver: its webhook event types, and the
receiver its `server_demo.py` tells customers to start from (FastAPI; it verifies
`Biz-Resp-Signature` with pynacl, parses webhooks as `WebhookEvent` and callbacks
as `Transaction`, and answers callbacks `ok`), served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from cobo_waas2 import WebhookEventType, server_demo

SDK_TYPES = [t.value for t in WebhookEventType if t.value != "None"]


def demo_verifies(public_key_hex: str, headers: Any, body: bytes) -> bool:
    """The demo's own check, called exactly as its handlers call it."""
    return bool(server_demo.verify_signature(
        public_key_hex, headers["Biz-Resp-Signature"],
        f"{body.decode('utf8')}|{headers['Biz-Timestamp']}"))


@contextlib.asynccontextmanager
async def demo_receiver(public_key_hex: str) -> AsyncIterator[str]:
    """Run the demo app, trusting `public_key_hex`; yields its base URL."""
    previous = server_demo.pubkey
    server_demo.pubkey = public_key_hex
    config = uvicorn.Config(server_demo.app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        server_demo.pubkey = previous
