"""End to end: a real ``uvicorn app:app`` subprocess with uvicorn's default logging config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import listening_socket

pytestmark = pytest.mark.slow

APP = textwrap.dedent(
    """
    import logging

    from fastapi import FastAPI

    import reqlog

    reqlog.configure(service="e2e")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    log = reqlog.get_logger("e2e.app")

    @app.get("/items/{item_id}")
    async def read_item(item_id: int):
        log.info("loading_item", item_id=item_id)
        logging.getLogger("some.library").warning("library says %s", "hi")
        return {"id": item_id}

    @app.get("/boom")
    async def boom():
        raise RuntimeError("kaput")
    """
)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str

    def stop(self) -> tuple[list[str], str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return out.decode().splitlines(), err.decode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "app.py").write_text(APP)
    sock = listening_socket()
    port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    env.pop("REQLOG_FORMAT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--fd", str(sock.fileno())],
        pass_fds=[sock.fileno()],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sock.close()  # requests wait in the backlog until uvicorn accepts: no readiness polling
    srv = Server(proc, f"http://127.0.0.1:{port}")
    yield srv
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def parse(lines: list[str]) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"not one JSON object per line: {line!r}")
        assert isinstance(event, dict), line
        events.append(event)
    return events


def test_one_pipeline_one_line_per_record(server: Server) -> None:
    rid = "4bf92f3577b34da6a3ce929d0e0e4736"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        ok = client.get("/items/42", headers={"X-Request-ID": rid})
        failed = client.get("/boom")
    assert ok.status_code == 200
    assert ok.headers["x-request-id"] == rid
    assert failed.status_code == 500
    failed_rid = failed.headers["x-request-id"]

    lines, stderr = server.stop()
    assert server.proc.returncode == -signal.SIGTERM
    events = parse(lines)
    # Nothing unstructured anywhere: uvicorn's own lines went through reqlog too.
    assert stderr == ""
    assert "Exception in ASGI application" not in "\n".join(lines)

    in_request = [e for e in events if e.get("request_id") == rid]
    assert [(e["event"], e["logger"]) for e in in_request] == [
        ("loading_item", "e2e.app"),
        ("library says hi", "some.library"),
        ("request_completed", "reqlog.access"),
    ]
    for event in in_request:
        assert event["service"] == "e2e"
        assert event["client_ip"] == "127.0.0.1"
        assert event["timestamp"].endswith("Z")
    assert in_request[1]["level"] == "warning"

    [failure] = [e for e in events if e.get("request_id") == failed_rid]
    assert (failure["event"], failure["status_code"], failure["error_type"]) == (
        "request_failed",
        500,
        "RuntimeError",
    )

    # uvicorn's access line is replaced by request_completed; each server record once.
    assert not [e for e in events if e["logger"] == "uvicorn.access"]
    server_events = [e["event"] for e in events if e["logger"] == "uvicorn.error"]
    assert server_events.count("Application startup complete.") == 1
    assert server_events.count(f"Finished server process [{server.proc.pid}]") == 1
    for event in events:
        assert {"event", "level", "timestamp", "logger"} <= event.keys(), event
