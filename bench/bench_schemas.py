"""What a field schema costs per event: the ECS and OTel processors alone, and the whole chain.

A typical ``request_completed`` event is logged through reqlog's chain (JSON, written to an
in-memory buffer) with ``schema="flat"``, ``"ecs"`` and ``"otel"``; the schema processors are
also timed on their own. Best of R repeats, microseconds per event.

    .venv/bin/python -m bench.bench_schemas [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import io
import timeit
from typing import Any

import reqlog
from reqlog import testing
from reqlog.schemas import ECSSchema, OTelSchema

ACCESS_FIELDS: dict[str, Any] = {
    "request_id": "0123456789abcdef0123456789abcdef",
    "client_ip": "10.0.0.1",
    "method": "GET",
    "path": "/items/3",
    "route": "/items/{item_id}",
    "query": "q=shoes",
    "status_code": 200,
    "duration_ms": 1.482,
    "user_agent": "curl/8.5.0",
    "http_version": "1.1",
    "response_bytes": 8,
    "user_id": "u-7",
}
EVENT: dict[str, Any] = {
    **ACCESS_FIELDS,
    "event": "request_completed",
    "logger": "reqlog.access",
    "level": "info",
    "timestamp": "2026-05-01T12:00:00.120932Z",
    "service": "orders",
}


def best_us(func: Any, number: int, repeat: int) -> float:
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    print(f"{'what':<34} {'us/event':>9}")
    for name, processor in (("ECSSchema processor", ECSSchema()), ("OTelSchema", OTelSchema())):
        us = best_us(lambda p=processor: p(None, "info", dict(EVENT)), args.events, args.repeat)
        print(f"{name:<34} {us:>9.2f}")
    for schema in ("flat", "ecs", "otel"):
        reqlog.configure(
            output=io.BytesIO(), format="json", schema=schema, service="orders", stdlib=False
        )
        log = reqlog.get_logger("reqlog.access")
        us = best_us(
            lambda log=log: log.info("request_completed", **ACCESS_FIELDS),
            args.events,
            args.repeat,
        )
        print(f"{'whole chain, schema=' + schema:<34} {us:>9.2f}")
        testing.reset()


if __name__ == "__main__":
    main()
