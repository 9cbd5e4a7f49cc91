"""Property-based run of schemathesis against the daemon, driven by its own
OpenAPI document: for every operation, schema-valid and schema-invalid inputs
(random ids and real ones), no 5xx, and every answer matches the document
(status code, content type, body schema). Bounded to a few examples per
operation so it fits the test budget."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from dispatcher.store.tenants import create_api_key
from tests.integration import test_api_support as support
from tests.integration.test_api_support import ApiServer

api_server = support.api_server

EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _key(server: ApiServer) -> str:
    async def go() -> str:
        conn = await asyncpg.connect(server.dsn)
        try:
            return await create_api_key(conn, "fuzz")
        finally:
            await conn.close()

    return asyncio.run(go())


def _seed(server: ApiServer, auth: dict[str, str]) -> dict[str, Any]:
    """A real endpoint, event and event type, so some cases hit existing objects."""
    ep = requests.post(server.url + "/v1/endpoints", headers=auth, timeout=5,
                       json={"url": "https://hooks.example.com/in"}).json()
    ev = requests.post(server.url + "/v1/events", headers=auth, timeout=5,
                       json={"type": "transaction", "data": {"n": 1}}).json()
    requests.post(server.url + "/v1/event-types", headers=auth, timeout=5,
                  json={"name": "fuzz.type"})
    return {"endpoint_id": ep["id"], "event_id": ev["id"], "name": "fuzz.type"}


@pytest.mark.timeout(120)
def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_schema_break(
    api_server: ApiServer,
) -> None:
    auth = {"Authorization": f"Bearer {_key(api_server)}"}
    document = requests.get(api_server.url + "/v1/openapi.json", timeout=5).json()
    schema = schemathesis.openapi.from_dict(document)
    real = _seed(api_server, auth)
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 27
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        strategies = [operation.as_strategy(mode) for mode in GenerationMode]
        if names:
            strategies.append(operation.as_strategy(
                path_parameters={k: v for k, v in real.items() if k in names}))

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(strategies))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=api_server.url, session=session, headers=auth,
                                   checks=CHECKS, timeout=10)

        run()


@pytest.mark.timeout(60)
def test_schema_invalid_bodies_are_rejected(api_server: ApiServer) -> None:
    """Bodies that break the request schema never get a 2xx from the write routes."""
    auth = {"Authorization": f"Bearer {_key(api_server)}"}
    document = requests.get(api_server.url + "/v1/openapi.json", timeout=5).json()
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    for path, method in (("/v1/endpoints", "POST"), ("/v1/events", "POST"),
                         ("/v1/events/batch", "POST"), ("/v1/event-types", "POST")):
        operation = schema[path][method]

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(GenerationMode.NEGATIVE))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=api_server.url, session=session, headers=auth,
                                   checks=[not_a_server_error, negative_data_rejection],
                                   timeout=10)

        run()


@pytest.mark.timeout(60)
def test_odd_headers_and_encodings_never_get_a_5xx(api_server: ApiServer) -> None:
    """Idempotency-Key with any Latin-1 byte (not UTF-8 on the wire), and bodies that
    claim a Content-Encoding they may not have: a 4xx with the JSON error body, or a
    202, never a 5xx."""
    auth = {"Authorization": f"Bearer {_key(api_server)}"}
    session = requests.Session()

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(key=st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), min_size=1,
                       max_size=40),
           encoding=st.sampled_from(["gzip", "deflate", "br", "identity", "x-unknown", ""]),
           body=st.one_of(st.binary(max_size=64),
                          st.just(b'{"type": "transaction", "data": {}}')))
    def run(key: str, encoding: str, body: bytes) -> None:
        # (prefixed: the client refuses a header value that starts with whitespace)
        headers = {**auth, "Content-Type": "application/json", "Idempotency-Key": "k" + key}
        if encoding:
            headers["Content-Encoding"] = encoding
        resp = session.post(api_server.url + "/v1/events", data=body, headers=headers,
                            timeout=10)
        assert resp.status_code < 500, (resp.status_code, resp.text)
        if resp.status_code >= 400:
            assert set(resp.json()["error"]) == {"code", "message", "field"}

    run()
