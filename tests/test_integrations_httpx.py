"""reqlog.integrations.httpx: service B, a real uvicorn server, logs service A's request ID."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_correlation_id.context import correlation_id
from fastapi import FastAPI

import reqlog
from reqlog.integrations.httpx import instrument, request_id_headers
from tests.conftest import LogOutput, listening_socket

pytestmark = pytest.mark.anyio

A_ID = "0123456789abcdef0123456789abcdef"

SERVICE_B = textwrap.dedent(
    """
    import reqlog
    from fastapi import FastAPI, Request

    reqlog.configure(service="b", format="json")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    log = reqlog.get_logger("b")

    @app.get("/stock/{sku}")
    async def stock(sku: str, request: Request) -> dict[str, object]:
        log.info("stock_checked", sku=sku)
        return {"sku": sku, "seen_id": request.headers.get("x-request-id")}
    """
)


@contextmanager
def serve(tmp_path: Path, source: str) -> Iterator[tuple[str, Path]]:
    """Run ``source`` as ``app`` under a real uvicorn on a socket bound here (no port race)."""
    (tmp_path / "service_b.py").write_text(source)
    log_file = tmp_path / "b.log"
    sock = listening_socket()
    port = sock.getsockname()[1]
    env = {**os.environ, "REQLOG_OUTPUT": str(log_file), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service_b:app", "--fd", str(sock.fileno())],
        pass_fds=[sock.fileno()],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    sock.close()
    base_url = f"http://127.0.0.1:{port}"
    try:
        # The first request waits in the backlog until uvicorn is up: sent once, never retried.
        try:
            httpx.get(f"{base_url}/stock/ready", timeout=60)
        except httpx.TransportError as exc:
            proc.kill()
            out = proc.communicate()[0].decode()
            pytest.fail(f"service B did not answer ({exc!r}):\n{out}")
        yield base_url, log_file
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _events(log_file: Path, event: str) -> list[dict[str, Any]]:
    lines = log_file.read_bytes().splitlines()
    return [e for e in map(orjson.loads, lines) if e["event"] == event]


@pytest.mark.slow
async def test_service_b_logs_service_a_request_id(tmp_path: Path, log_output: LogOutput) -> None:
    log_output.configure(service="a")
    with serve(tmp_path, SERVICE_B) as (b_url, b_log):
        app = FastAPI()
        app.add_middleware(reqlog.RequestLoggingMiddleware)

        @app.get("/orders/async")
        async def order_async() -> Any:
            async with instrument(httpx.AsyncClient(base_url=b_url)) as client:
                return (await client.get("/stock/a1")).json()

        @app.get("/orders/sync")
        def order_sync() -> Any:  # a sync endpoint: the threadpool, a copied context
            with instrument(httpx.Client(base_url=b_url)) as client:
                return client.get("/stock/s1").json()

        @app.get("/orders/explicit")
        async def order_explicit() -> Any:
            async with instrument(httpx.AsyncClient(base_url=b_url)) as client:
                headers = {"X-Request-ID": "fedcba9876543210fedcba9876543210"}
                return (await client.get("/stock/e1", headers=headers)).json()

        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as a:
            r_async = await a.get("/orders/async", headers={"X-Request-ID": A_ID})
            r_sync = await a.get("/orders/sync")
            r_explicit = await a.get("/orders/explicit")
        # Outside a request an instrumented client adds nothing: B generates its own ID.
        with instrument(httpx.Client(base_url=b_url)) as plain:
            r_outside = plain.get("/stock/o1")

    a_ids = {e["path"]: e["request_id"] for e in log_output.access()}
    assert a_ids["/orders/async"] == A_ID
    sync_id = a_ids["/orders/sync"]
    assert r_async.json() == {"sku": "a1", "seen_id": A_ID}
    assert r_sync.json() == {"sku": "s1", "seen_id": sync_id}
    assert r_explicit.json()["seen_id"] == "fedcba9876543210fedcba9876543210"
    outside_id = r_outside.headers["x-request-id"]
    assert outside_id not in {A_ID, sync_id}

    # B's own log lines: its handler event and its access event carry A's ID.
    b_events = [
        (e["request_id"], e.get("sku") or e["path"], e["service"])
        for e in _events(b_log, "stock_checked") + _events(b_log, "request_completed")
    ]
    assert (A_ID, "a1", "b") in b_events
    assert (A_ID, "/stock/a1", "b") in b_events
    assert (sync_id, "s1", "b") in b_events
    assert (sync_id, "/stock/s1", "b") in b_events
    assert (outside_id, "/stock/o1", "b") in b_events


async def test_hook_without_a_server() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-correlation-id"))
        return httpx.Response(204)

    client = instrument(
        instrument(httpx.Client(transport=httpx.MockTransport(handler)), header="X-Correlation-ID"),
        header="X-Correlation-ID",
    )
    assert len(client.event_hooks["request"]) == 1  # instrumenting twice adds one hook

    client.get("http://b/")
    token = correlation_id.set("feedfeedfeedfeedfeedfeedfeedfeed")  # as in a Celery task
    try:
        client.get("http://b/")
        assert request_id_headers() == {"X-Request-ID": "feedfeedfeedfeedfeedfeedfeedfeed"}
    finally:
        correlation_id.reset(token)
    assert seen == [None, "feedfeedfeedfeedfeedfeedfeedfeed"]
    assert request_id_headers() == {}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="header: not a valid header name"):
        instrument(httpx.Client(), header="X Bad")
    with pytest.raises(ValueError, match=r"client: expected an httpx\.Client"):
        instrument(object(), header="X-Request-ID")  # type: ignore[type-var]
