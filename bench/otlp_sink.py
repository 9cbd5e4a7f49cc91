"""An OTLP/HTTP traces endpoint that accepts and counts what it is sent, for
measuring tracing's cost (`make bench BENCH_ARGS="--telemetry 1.0"`).

    python bench/otlp_sink.py PORT

Answers every POST /v1/traces with 200 and an empty ExportTraceServiceResponse; on
SIGTERM prints how many requests and bytes it took. Listens on 127.0.0.1 only."""

from __future__ import annotations

import signal
import sys

from aiohttp import web

received = {"requests": 0, "bytes": 0}


async def traces(request: web.Request) -> web.Response:
    body = await request.read()
    received["requests"] += 1
    received["bytes"] += len(body)
    return web.Response(body=b"", content_type="application/x-protobuf")


def main() -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)

    def report(*_: object) -> None:
        print(f"otlp_sink: {received['requests']} requests, {received['bytes']} bytes",
              file=sys.stderr, flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, report)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
