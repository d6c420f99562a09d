"""What body and header capture costs per request, in process, against capture off.

Each variant serves the same FastAPI endpoint (a JSON order in, a JSON order out) through a
minimal in-process ASGI driver: no network and no HTTP client, so what differs between the rows
is reqlog alone. Events are rendered as JSON and written to /dev/null.

    .venv/bin/python -m bench.bench_bodies [--requests N] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Message

import reqlog

ORDER = {
    "customer": {"id": 1234, "email": "ann@example.com", "password": "hunter2"},
    "items": [{"sku": f"SKU-{i}", "qty": i, "price": 9.99} for i in range(8)],
    "note": "leave at the door",
}
BODY = orjson.dumps(ORDER)


def build_app(**options: Any) -> ASGIApp:
    app = FastAPI()

    @app.post("/orders")
    async def create(order: dict[str, Any]) -> dict[str, Any]:
        return {"id": 1, "status": "created", "items": order["items"]}

    if options.pop("reqlog", True):
        app.add_middleware(reqlog.RequestLoggingMiddleware, **options)
    return app


VARIANTS: dict[str, Callable[[], ASGIApp]] = {
    "no reqlog": lambda: build_app(reqlog=False),
    "reqlog, capture off (default)": build_app,
    "log_request_body": lambda: build_app(log_request_body=True),
    "log_request_body + log_response_body": lambda: build_app(
        log_request_body=True, log_response_body=True
    ),
    "bodies + log_headers": lambda: build_app(
        log_request_body=True, log_response_body=True, log_headers=True
    ),
}

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/orders",
    "raw_path": b"/orders",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"authorization", b"Bearer abc.def.ghi"),
        (b"user-agent", b"bench/1"),
    ],
    "client": ("10.0.0.1", 123),
    "server": ("bench", 80),
}


async def serve(app: ASGIApp, requests: int) -> float:
    """Seconds to serve ``requests`` requests one after another."""

    async def one() -> None:
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": BODY, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            return None

        await app(dict(SCOPE), receive, send)

    await one()  # warm up
    start = time.perf_counter()
    for _ in range(requests):
        await one()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    reqlog.configure(output=os.devnull, format="json", stdlib=False)
    print(f"{len(BODY)}-byte JSON body in, JSON body out; {args.requests} requests, best of")
    print(f"{args.repeat} runs, microseconds per request\n")
    baseline: float | None = None
    for name, factory in VARIANTS.items():
        app = factory()
        runs = [asyncio.run(serve(app, args.requests)) for _ in range(args.repeat)]
        per_request = min(runs) / args.requests * 1e6
        spread = statistics.pstdev(runs) / args.requests * 1e6
        if name == "reqlog, capture off (default)":
            baseline = per_request
        extra = "" if baseline is None else f"  {per_request - baseline:+7.1f} vs capture off"
        print(f"{name:40s} {per_request:8.1f} us  (sd {spread:4.1f}){extra}")
    reqlog.flush()


if __name__ == "__main__":
    main()
