"""A real gunicorn with uvicorn workers: its logs and the app's go through reqlog, once each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import listening_socket

pytestmark = pytest.mark.slow

pytest.importorskip("gunicorn")
pytest.importorskip("uvicorn_worker")

APP = textwrap.dedent(
    """
    import logging
    import os
    import time

    import reqlog
    from fastapi import FastAPI

    # A worker on a loaded machine can take seconds to import the app: SVC_BOOT_DELAY plays it.
    time.sleep(float(os.environ.get("SVC_BOOT_DELAY", "0")))
    reqlog.configure(format="json")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    log = reqlog.get_logger("svc")

    @app.get("/items/{item_id}")
    def read_item(item_id: int) -> dict[str, int]:
        log.info("loading_item", item_id=item_id)
        logging.getLogger("gunicorn.error").warning("through_gunicorn_error")
        return {"id": item_id}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")
    """
)

RID = "0123456789abcdef0123456789abcdef"


def _run_gunicorn(tmp_path: Path, *extra: str, boot_delay: float = 0.0) -> tuple[list[str], str]:
    """Start gunicorn on a socket bound here, make two requests, stop it; its output."""
    (tmp_path / "svc_app.py").write_text(APP)
    sock = listening_socket()
    port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQLOG_")}
    env.update(PYTHONPATH=str(tmp_path), REQLOG_SERVICE="svc", SVC_BOOT_DELAY=str(boot_delay))
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "svc_app:app",
        "--bind",
        f"fd://{sock.fileno()}",
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--workers",
        "1",
        "--access-logfile",
        "-",  # asked for, yet request_completed replaces it
        "--graceful-timeout",
        "5",
        "--no-control-socket",
        *extra,
    ]
    proc = subprocess.Popen(
        args,
        pass_fds=[sock.fileno()],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sock.close()
    base = f"http://127.0.0.1:{port}"
    try:
        # The socket is listening before gunicorn starts, so the first request needs no retry
        # loop: the kernel queues the connection until a worker accepts it, however slowly it
        # boots. Sent exactly once (a retry after a read timeout would send it twice); if
        # gunicorn dies instead, its end of the socket closes and the request fails at once.
        try:
            first = httpx.get(f"{base}/items/1", headers={"X-Request-ID": RID}, timeout=60)
        except httpx.TransportError as exc:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"gunicorn did not answer ({exc!r}):\n{out.decode()}\n{err.decode()}")
        assert first.status_code == 200
        assert httpx.get(f"{base}/boom", timeout=30).status_code == 500
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    return out.decode().splitlines(), err.decode()


def _parse(lines: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]


def _count(events: list[dict[str, Any]], event: str) -> int:
    return sum(1 for e in events if e["event"] == event)


def _worker_events_once(events: list[dict[str, Any]]) -> None:
    # The app's lines, gunicorn.error's and uvicorn's: each record exactly once.
    for event in (
        "loading_item",
        "through_gunicorn_error",
        "Application startup complete.",
        "Application shutdown complete.",
    ):
        assert _count(events, event) == 1, event
    [loading] = [e for e in events if e["event"] == "loading_item"]
    [via_gunicorn] = [e for e in events if e["event"] == "through_gunicorn_error"]
    assert (loading["request_id"], loading["service"], loading["logger"]) == (RID, "svc", "svc")
    assert (via_gunicorn["request_id"], via_gunicorn["logger"]) == (RID, "gunicorn.error")
    assert via_gunicorn["level"] == "warning"
    completed = [e for e in events if e["event"] == "request_completed"]
    assert [(e["route"], e["status_code"]) for e in completed] == [("/items/{item_id}", 200)]
    # The failure: one request_failed, and not uvicorn's "Exception in ASGI application".
    failed = [e for e in events if e["level"] == "error"]
    assert [(e["event"], e["route"], e["error_type"]) for e in failed] == [
        ("request_failed", "/boom", "RuntimeError")
    ]
    # No access lines from gunicorn or uvicorn: request_completed replaces them.
    assert not [e for e in events if e["logger"] in ("uvicorn.access", "gunicorn.access")]


def test_stock_gunicorn_worker_logs_go_through_reqlog(tmp_path: Path) -> None:
    """No logger class, no --preload: the workers' logs are reqlog's; the master keeps its own."""
    lines, err = _run_gunicorn(tmp_path)

    events = _parse(lines)  # every line on stdout is one JSON event
    _worker_events_once(events)
    assert {e["logger"] for e in events} >= {"svc", "reqlog.access", "uvicorn.error"}
    # gunicorn configured the master's logging before the app was imported: plain lines.
    assert "[INFO] Starting gunicorn" in err
    assert "{" not in err


def test_a_slow_worker_boot_gets_each_request_once(tmp_path: Path) -> None:
    """The first request waits for the worker however long it boots, and is sent once.

    (It used to be retried after a 2 s read timeout: a worker slower than that got it twice.)
    """
    lines, _ = _run_gunicorn(tmp_path, boot_delay=3.0)

    _worker_events_once(_parse(lines))


@pytest.mark.parametrize("preload", [False, True], ids=["fork", "preload"])
def test_logger_class_takes_over_master_and_workers(tmp_path: Path, preload: bool) -> None:
    extra = ["--logger-class", "reqlog.integrations.gunicorn.Logger"]
    lines, err = _run_gunicorn(tmp_path, *extra, *(["--preload"] if preload else []))

    assert err == ""  # nothing bypasses reqlog
    events = _parse(lines)
    _worker_events_once(events)
    master = [e for e in events if e["logger"] == "gunicorn.error" and "request_id" not in e]
    said = [e["event"] for e in master]
    for start in ("Starting gunicorn", "Booting worker with pid", "Shutting down: Master"):
        assert any(line.startswith(start) for line in said), start
    assert all(e["service"] == "svc" for e in master)
    # uvicorn's own worker lines (lost under --preload without the logger class) are here.
    started = [e for e in events if e["event"].startswith("Started server process")]
    assert len(started) == 1
