"""Runs the delivery engine for the life of the application."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
