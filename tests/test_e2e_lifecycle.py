"""End to end, the edges of a request's life under real servers: a client that leaves while
the app never reads (uvicorn h11 and httptools, hypercorn), a graceful shutdown that cuts a
stream, invalid middleware options at startup, and uvicorn's own proxy-header handling."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import listening_socket

APP = textwrap.dedent(
    """
    import asyncio
    import os
    import time

    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    import reqlog

    reqlog.configure(service="e2e", format="json")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, **OPTIONS)
    log = reqlog.get_logger("e2e.app")
    FLAG = os.environ.get("E2E_FLAG", "")


    @app.get("/slow")
    async def slow():
        # Never reads the request. It ends once the test has disconnected (the flag), and
        # not before 1.5 s, well past the disconnect watch's start (0.25-0.5 s).
        log.info("slow_started")
        started = time.monotonic()
        while not os.path.exists(FLAG) or time.monotonic() - started < 1.5:
            await asyncio.sleep(0.02)
        # The client's leaving is in the kernel before the flag exists: any later turn of
        # the event loop reads it; this lets one happen before the response goes out.
        await asyncio.sleep(0.05)
        return {"done": True}


    async def forever():
        yield b"first\\n"
        await asyncio.sleep(3600)


    @app.get("/stream")
    async def stream():
        return StreamingResponse(forever(), media_type="text/plain")


    @app.get("/who")
    async def who():
        return {}
    """
)


class Server:
    """A server subprocess whose stdout lines are read as they come.

    It serves a socket bound and listening before it starts (``listening_socket``): a client
    may connect at once, its connection waits in the backlog until the server is up.
    """

    def __init__(self, args: list[str], tmp_path: Path, options: str, sock: socket.socket) -> None:
        (tmp_path / "app.py").write_text(APP.replace("**OPTIONS", options))
        self.flag = tmp_path / "flag"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
            "E2E_FLAG": str(self.flag),
        }
        env.pop("REQLOG_FORMAT", None)
        self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=[sock.fileno()],
        )
        sock.close()  # the server's now: if it dies, connections fail instead of waiting
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event (seen or to come) for which ``predicate`` holds; 30 s at most."""
        for seen in self.events:
            if predicate(seen):
                return seen
        deadline = time.monotonic() + 30
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"no such event; so far {self.events}; {self.finish()}")
            event: dict[str, Any] = orjson.loads(line)
            self.events.append(event)
            if predicate(event):
                return event

    def finish(self, sig: int = signal.SIGTERM) -> str:
        """Stop the server (if still running) and read everything it wrote."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        while not self.lines.empty():
            self.events.append(orjson.loads(self.lines.get()))
        return self.stderr.decode(errors="replace")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(kind: str = "h11", options: str = "", *extra: str) -> Server:
        sock = listening_socket()
        if kind == "hypercorn":
            args = ["hypercorn", "app:app", "--bind", f"fd://{sock.fileno()}", *extra]
        else:
            args = ["uvicorn", "app:app", "--fd", str(sock.fileno()), "--http", kind, *extra]
        server = Server(args, tmp_path, options, sock)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.mark.parametrize("kind", ["h11", "httptools", "hypercorn"])
def test_client_that_leaves_an_app_that_never_reads(
    start: Callable[..., Server], kind: str
) -> None:
    server = start(kind)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        started = server.wait_for(lambda e: e["event"] == "slow_started")
    # `curl -m` giving up: the connection is closed while the handler runs.
    server.flag.touch()
    event = server.wait_for(lambda e: e["event"] == "request_completed")
    assert event["request_id"] == started["request_id"]
    assert (event["status_code"], event["outcome"], event["response_incomplete"]) == (
        499,
        "client_disconnected",
        True,
    )
    assert event["duration_ms"] >= 1500
    server.finish()


def test_graceful_shutdown_cut_is_logged(start: Callable[..., Server]) -> None:
    server = start("h11", "", "--timeout-graceful-shutdown", "2")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"first" not in received:
            chunk = sock.recv(4096)
            assert chunk, "the server closed the connection before the first chunk"
            received += chunk
        stderr = server.finish()
    assert server.proc.returncode == -signal.SIGTERM
    assert stderr == ""
    [event] = [e for e in server.events if e["event"] == "request_completed"]
    assert {k: event[k] for k in ("path", "status_code", "outcome", "response_incomplete")} == {
        "path": "/stream",
        "status_code": 200,
        "outcome": "server_cancelled",
        "response_incomplete": True,
    }
    assert event["level"] == "warning"
    messages = [e["event"] for e in server.events]
    assert "Exception in ASGI application" not in "\n".join(messages)
    # Written before the server's last lines, which come after the final flush.
    assert messages.index("request_completed") < messages.index("Application shutdown complete.")


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_invalid_option_fails_the_startup(start: Callable[..., Server], lifespan: str) -> None:
    server = start("h11", "body_max_bytes=0", "--lifespan", lifespan)
    server.proc.wait(timeout=30)
    server.finish()
    assert server.proc.returncode == 3
    errors = [(e["level"], e["event"]) for e in server.events if e["level"] == "error"]
    assert errors == [
        (
            "error",
            "reqlog.RequestLoggingMiddleware: body_max_bytes: expected a positive number of "
            "bytes, got 0",
        ),
        ("error", "Application startup failed. Exiting."),
    ]


def test_invalid_option_without_lifespan_fails_every_request(
    start: Callable[..., Server],
) -> None:
    server = start("h11", "body_max_bytes=0", "--lifespan", "off")
    response = httpx.get(f"http://127.0.0.1:{server.port}/who", timeout=60)
    assert response.status_code == 500
    report = server.wait_for(lambda e: e["event"].startswith("Exception in ASGI application"))
    assert "body_max_bytes" in str(report["exception"])
    server.finish()


@pytest.mark.parametrize(
    ("extra", "client_ip"),
    [
        # uvicorn (trusting 127.0.0.1, its default) took 10.0.0.5; reqlog carries on from there.
        ((), "1.2.3.4"),
        # reqlog alone reads the header: the local hop is not a proxy it trusts.
        (("--no-proxy-headers",), "127.0.0.1"),
    ],
)
def test_uvicorn_proxy_headers_are_not_read_twice(
    start: Callable[..., Server], extra: tuple[str, ...], client_ip: str
) -> None:
    server = start("h11", "trusted_proxies=['10.0.0.0/8']", *extra)
    headers = {"X-Forwarded-For": "1.2.3.4, 10.0.0.5, 127.0.0.1", "X-Forwarded-Proto": "https"}
    httpx.get(f"http://127.0.0.1:{server.port}/who", headers=headers, timeout=60)
    event = server.wait_for(lambda e: e["event"] == "request_completed")
    assert event["client_ip"] == client_ip
    assert event.get("scheme") == ("https" if client_ip == "1.2.3.4" else None)
    server.finish()
