"""What operations run with: the parts of the process every front end shares. The
composition root (daemon.py) builds one per process; the API and the console find
it on their application, the local CLI builds its own around one connection pool."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from dispatcher.catalogue import EventType
from dispatcher.clock import Clock
from dispatcher.config import Config
from dispatcher.retry import RetryPolicy
from dispatcher.secretbox import SecretBox


@dataclass(frozen=True)
class Services:
    config: Config
    clock: Clock
    pool: asyncpg.Pool
    secret_box: SecretBox
    policies: dict[str, RetryPolicy]
    catalogue: dict[str, EventType]
