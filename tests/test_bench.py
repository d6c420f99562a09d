"""bench/: the FLOOR contender writes reqlog's own access line, so that comparing them is fair."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

import reqlog
from bench.apps import SERVICE, _routes
from bench.floor import FloorMiddleware, redact_query
from tests.conftest import LogOutput

RID = "0123456789abcdef0123456789abcdef"
# Values that differ between any two runs; everything else must be byte for byte the same.
VARYING = ("duration_ms", "timestamp")

CASES = [
    ("/items/42?q=shoes", {}),
    ("/items/42?q=shoes&access_token=abc&api-key=k", {}),
    ("/items/7", {"X-Request-ID": RID}),
    ("/items/7", {"X-Request-ID": "../../etc/passwd"}),
    ("/items/7", {"X-Request-ID": "0123456789abcdef0123456789abcdeF0"}),
    ("/nowhere?page=2", {}),
    ("/items/not-a-number", {"User-Agent": "curl/8.5.0"}),
]


async def _serve(app: FastAPI) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return [await client.get(url, headers=headers) for url, headers in CASES]


def _comparable(event: dict[str, Any], response: httpx.Response) -> list[tuple[str, Any]]:
    """The event's items in order, varying values out, the request ID checked and out too."""
    request_id = event["request_id"]
    assert response.headers["x-request-id"] == request_id
    inbound = response.request.headers.get("x-request-id")
    if inbound == RID:
        assert request_id == RID
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    return [(k, "<id>" if k == "request_id" else v) for k, v in event.items() if k not in VARYING]


async def test_floor_writes_reqlog_access_line(log_output: LogOutput, tmp_path: Path) -> None:
    log_output.configure(service=SERVICE)
    with_reqlog = _routes(FastAPI())
    with_reqlog.add_middleware(reqlog.RequestLoggingMiddleware)
    reqlog_responses = await _serve(with_reqlog)

    path = tmp_path / "floor.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        with_floor = _routes(FastAPI())
        with_floor.add_middleware(FloorMiddleware, fd=fd, service=SERVICE)
        floor_responses = await _serve(with_floor)
    finally:
        os.close(fd)

    reqlog_events = log_output.access()
    floor_events = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert len(reqlog_events) == len(floor_events) == len(CASES)
    for ours, theirs, ours_response, theirs_response in zip(
        floor_events, reqlog_events, floor_responses, reqlog_responses, strict=True
    ):
        assert ours_response.status_code == theirs_response.status_code
        assert _comparable(ours, ours_response) == _comparable(theirs, theirs_response)
    assert reqlog_events[1]["query"] == "q=shoes&access_token=[REDACTED]&api-key=[REDACTED]"


@pytest.mark.parametrize(
    ("query", "secret"),
    [
        ("token=Bearer%20abc", "abc"),
        ("q=Bearer%20abcdefghijkl", "abcdefghijkl"),
        ("next=https://u:pw@example.com/", "pw@"),
        ("card=4111 1111 1111 1111", "4111 1111"),
        ("card=4111111111111111", "4111111111111111"),
        ("id=eyJhbGciOi.eyJzdWIi.sig", "eyJzdWIi"),
        ("cb=/x?secret=1", "secret=1"),
        ("key=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("x=ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abc"),
        ("note=password=hunter2", "hunter2"),
    ],
)
def test_floor_never_writes_a_secret_reqlog_would_redact(query: str, secret: str) -> None:
    # The floor does not search values: it censors any it cannot vouch for.
    assert secret not in redact_query(query.encode())
    assert "[REDACTED]" in redact_query(query.encode())
