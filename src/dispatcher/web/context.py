"""Typed application state, shared by both front ends (the API and the console) and
the background components the daemon mounts beside them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web

from dispatcher.catalogue import EventType
from dispatcher.clock import Clock
from dispatcher.config import Config
from dispatcher.operations.scope import Caller, Scope
from dispatcher.operations.services import Services
from dispatcher.readiness import Readiness
from dispatcher.retry import RetryPolicy
from dispatcher.secretbox import SecretBox
from dispatcher.transport import Transport
from dispatcher.web.keycache import KeyCache

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
READINESS = web.AppKey("readiness", Readiness)
# The process's one way out (dispatcher.transport), for the engine and the console.
TRANSPORT = web.AppKey("transport", Transport)
# Components registered by later layers (engine, scheduler) keyed by name.
COMPONENTS = web.AppKey("components", dict[str, Any])

# Set up by the management API (dispatcher.api.routes), used by both front ends.
SECRET_BOX = web.AppKey("secret_box", SecretBox)
POLICIES = web.AppKey("retry_policies", dict[str, RetryPolicy])
CATALOGUE = web.AppKey("event_type_catalogue", dict[str, EventType])
OPENAPI = web.AppKey("openapi_document", dict[str, Any])
# Credential hash -> Scope; a tenant name or id an operator sent -> the tenant's id.
KEY_CACHE: web.AppKey[KeyCache[bytes, Scope]] = web.AppKey("api_key_cache")
TENANT_CACHE: web.AppKey[KeyCache[str, UUID]] = web.AppKey("tenant_ref_cache")
# The key that signs portal tokens (derived from the master key).
PORTAL_KEY = web.AppKey("portal_signing_key", bytes)
# The tenant an API request acts on (api/auth.py resolves it once, for every route).
TENANT = web.RequestKey("tenant_id", UUID)
# What the request's credential may do.
SCOPE = web.RequestKey("scope", Scope)
# Who asks, for the operations (set by the API's authentication and the console's
# session check).
CALLER = web.RequestKey("caller", Caller)

_SERVICES = "operations.services"


def services(app: web.Application) -> Services:
    """The operations' Services of this application, built on first use (once the
    connection pool exists) and kept."""
    components = app[COMPONENTS]
    found: Services | None = components.get(_SERVICES)
    if found is None:
        found = Services(app[CONFIG], app[CLOCK], app[POOL], app[SECRET_BOX], app[POLICIES],
                         app[CATALOGUE])
        components[_SERVICES] = found
    return found
