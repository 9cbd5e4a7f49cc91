"""`dispatcher serve --dev`: local development mode. Endpoints may use http, any port
and loopback/private addresses, so a receiver on the developer's machine can be
reached. Never the default; the daemon says so loudly when it starts."""

from __future__ import annotations

import dataclasses
import os
import sys

from dispatcher.config import Config

# Set in the environment too, so the worker processes (which load their own config)
# allow the same.
DEV_ENV = {
    "DISPATCHER_URLS__ALLOW_HTTP": "true",
    "DISPATCHER_URLS__ALLOW_ANY_PORT": "true",
    "DISPATCHER_URLS__ALLOW_PRIVATE_NETWORKS": "true",
}

BANNER = """\
!!! ------------------------------------------------------------------------- !!!
!!! DEVELOPMENT MODE (--dev): endpoints may use plain http, any port and        !!!
!!! loopback or private addresses. Never run a production daemon like this.     !!!
!!! ------------------------------------------------------------------------- !!!"""


def development_config(config: Config) -> Config:
    """`config` with local receivers allowed, here and in worker processes."""
    os.environ.update(DEV_ENV)
    print(BANNER, file=sys.stderr, flush=True)
    return dataclasses.replace(config, urls=dataclasses.replace(
        config.urls, allow_http=True, allow_any_port=True, allow_private_networks=True))
