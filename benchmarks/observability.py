"""What the observability middleware (request id, Prometheus request counter
and latency histogram, ``core/metrics.py``) costs per request.

Run by hand (never a test)::

    .venv/bin/python benchmarks/observability.py [--requests 20000] [--rounds 7]

Two Litestar applications with the same trivial ``POST /api/v1/data`` route
(reads the body, answers 202), one with eeghub's middleware and one without,
are called through the ASGI interface directly (no sockets, no server), the
two alternating round by round. Prints the median microseconds per request of
each and their difference. Needs no services.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from litestar import Litestar, Request, Response, post

from eeghub.core.metrics import Metrics, observability_middleware

BODY = b'{"user_id": "u", "payload_base64": "' + b"A" * 13_000 + b'"}'


@post("/api/v1/data", status_code=202)
async def data(request: Request[Any, Any, Any]) -> Response[bytes]:
    await request.body()
    return Response(b'{"status":"accepted"}', status_code=202, media_type="application/json")


def make_app(with_middleware: bool) -> Litestar:
    app = Litestar(route_handlers=[data], logging_config=None, openapi_config=None)
    if with_middleware:  # as app/bootstrap.py does
        app.asgi_handler = observability_middleware(Metrics())(app.asgi_handler)
    return app


async def call(app: Any) -> None:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/v1/data", "raw_path": b"/api/v1/data", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
                    (b"x-user-id", b"u")],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(scope, receive, send)


async def round_us(app: Any, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await call(app)
    return (time.perf_counter() - started) / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    plain, observed = make_app(False), make_app(True)
    for app in (plain, observed):  # warm-up
        await round_us(app, 2_000)
    results: dict[str, list[float]] = {"without middleware": [], "with middleware": []}
    for _ in range(args.rounds):
        results["without middleware"].append(await round_us(plain, args.requests))
        results["with middleware"].append(await round_us(observed, args.requests))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        print(f"{name:>20}: median {medians[name]:6.1f} µs/request  (rounds {min(values):.1f}-{max(values):.1f})")
    extra = medians["with middleware"] - medians["without middleware"]
    print(f"{'difference':>20}: {extra:+6.1f} µs/request ({extra / medians['without middleware'] * 100:+.1f} %)")


if __name__ == "__main__":
    asyncio.run(main())
