"""Typed application state shared by handlers and background components."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from dispatcher.clock import Clock
from dispatcher.config import Config

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
HTTP = web.AppKey("http", aiohttp.ClientSession)
# Components registered by later layers (engine, scheduler) keyed by name.
COMPONENTS = web.AppKey("components", dict[str, Any])
