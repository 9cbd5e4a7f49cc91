"""The OpenAPI document describes every route the application serves, and only
those; it is a loadable OpenAPI 3.1 document."""

from __future__ import annotations

import re
from collections.abc import Callable

import schemathesis
from aiohttp import web

from dispatcher.api.app import create_app
from dispatcher.api.openapi import OPENAPI_ROUTE, build_document
from dispatcher.api.routes import API_ROUTES, HEALTH_ROUTES
from dispatcher.config import Config
from dispatcher.web.context import OPENAPI


def _served(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        assert path, info
        if path.startswith(("/console", "/portal/")):  # the console's pages, not API operations
            continue
        out.add((route.method, path))
    return out


def test_every_served_route_is_in_the_document(make_config: Callable[..., Config]) -> None:
    app = create_app(make_config(), "postgresql://unused")
    served = _served(app)
    document = app[OPENAPI]
    documented = {(method.upper(), path) for path, ops in document["paths"].items()
                  for method in ops}
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented routes that are not served"
    assert ("POST", "/v1/events") in served and ("GET", "/metrics") in served


def test_document_is_openapi_31_with_known_refs() -> None:
    document = build_document([*HEALTH_ROUTES, *API_ROUTES, OPENAPI_ROUTE])
    assert document["openapi"] == "3.1.0"
    schemas = document["components"]["schemas"]
    text = repr(document)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in schemas, name
    loaded = schemathesis.openapi.from_dict(document)
    operations = [r.ok() for r in loaded.get_all_operations()]
    assert len(operations) == len(HEALTH_ROUTES) + len(API_ROUTES) + 1


def test_authenticated_operations_document_401_and_ids_404() -> None:
    document = build_document(API_ROUTES)
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            if op["security"]:
                assert "401" in responses, (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if "requestBody" in op:
                assert {"400", "413", "415", "422"} <= set(responses), (method, path)


def test_operation_ids_are_unique() -> None:
    ids = [r.operation_id for r in [*HEALTH_ROUTES, *API_ROUTES]]
    assert len(ids) == len(set(ids))
