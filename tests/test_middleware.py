"""RequestLoggingMiddleware: access events, request IDs, client IPs, users, failures, websockets."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_correlation_id import CorrelationIdFilter
from asgi_correlation_id.context import correlation_id
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from freezegun import freeze_time
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

import reqlog
import reqlog._lifecycle
from reqlog.cli import main as cli_main
from tests.conftest import LogOutput

RID = "0123456789abcdef0123456789abcdef"


class FakeClock:
    """A clock the test moves by hand: durations without sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000.0


def client_for(app: Any, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(
        app=app, client=("10.0.0.1", 123), raise_app_exceptions=raise_app_exceptions
    )
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def make_app(**middleware: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, **middleware)
    return app


# -- the access event ------------------------------------------------------------------------


@freeze_time("2026-11-24 06:00:00")
async def test_get_item_writes_two_events_sharing_the_request_id(log_output: LogOutput) -> None:
    log_output.configure(service="orders")
    clock = FakeClock()
    app = make_app(clock=clock)
    log = reqlog.get_logger("app.items")

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        log.info("loading_item", item_id=item_id)
        clock.advance(12.5)
        return {"id": item_id}

    async with client_for(app) as client:
        response = await client.get(
            "/items/42?q=shoes", headers={"X-Request-ID": RID, "User-Agent": "pytest-agent"}
        )

    assert response.status_code == 200
    assert response.headers["x-request-id"] == RID
    common = {
        "request_id": RID,
        "client_ip": "10.0.0.1",
        "timestamp": "2026-11-24T06:00:00Z",
        "service": "orders",
    }
    assert log_output.events() == [
        {**common, "item_id": 42, "event": "loading_item", "logger": "app.items", "level": "info"},
        {
            **common,
            "event": "request_completed",
            "logger": "reqlog.access",
            "level": "info",
            "method": "GET",
            "path": "/items/42",
            "route": "/items/{item_id}",
            "query": "q=shoes",
            "status_code": 200,
            "duration_ms": 12.5,
            "user_agent": "pytest-agent",
            "http_version": "1.1",
            "response_bytes": 9,
        },
    ]


@pytest.mark.parametrize(
    ("status", "level"), [(200, "info"), (302, "info"), (404, "warning"), (503, "error")]
)
async def test_level_follows_status(log_output: LogOutput, status: int, level: str) -> None:
    log_output.configure()
    app = make_app()

    @app.get("/s")
    async def endpoint() -> PlainTextResponse:
        return PlainTextResponse("x", status_code=status)

    async with client_for(app) as client:
        await client.get("/s")
    [event] = log_output.access()
    assert (event["status_code"], event["level"]) == (status, level)


async def test_unknown_route_has_no_template(log_output: LogOutput) -> None:
    log_output.configure()
    async with client_for(make_app()) as client:
        await client.get("/nowhere")
    [event] = log_output.access()
    assert (event["route"], event["status_code"], event["level"]) == (None, 404, "warning")


async def test_duration_runs_to_last_byte_and_bytes_are_counted(log_output: LogOutput) -> None:
    log_output.configure()
    clock = FakeClock()
    app = make_app(clock=clock)

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"abc", b"defg", b"hi"):
            clock.advance(10)
            yield chunk

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="text/plain")

    async with client_for(app) as client:
        response = await client.get("/stream")
    assert response.text == "abcdefghi"
    [event] = log_output.access()
    assert (event["duration_ms"], event["response_bytes"]) == (30.0, 9)


async def test_excluded_paths_get_an_id_but_no_access_event(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app(exclude_paths=["/health", "/static/*"])

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/static/{name}")
    async def static(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/work")
    async def work() -> dict[str, str]:
        return {}

    async with client_for(app) as client:
        health_response = await client.get("/health")
        await client.get("/static/app.js")
        await client.get("/work")
    assert "x-request-id" in health_response.headers
    assert [e["path"] for e in log_output.access()] == ["/work"]


@pytest.mark.parametrize("bad", ["health", ["/ok", 3]])
def test_invalid_middleware_options_raise(bad: Any) -> None:
    with pytest.raises(ValueError, match="exclude_paths"):
        reqlog.RequestLoggingMiddleware(FastAPI(), exclude_paths=bad)


def test_invalid_trusted_proxy_and_header_raise() -> None:
    with pytest.raises(ValueError, match="trusted_proxies: 'ten' is not an IP"):
        reqlog.RequestLoggingMiddleware(FastAPI(), trusted_proxies=["ten"])
    with pytest.raises(ValueError, match="request_id_header"):
        reqlog.RequestLoggingMiddleware(FastAPI(), request_id_header="X Request\nID")


# -- request IDs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inbound",
    [
        RID,
        RID.upper(),
        "12345678-1234-5678-1234-567812345678",
        str(uuid.uuid4()),
    ],
)
async def test_valid_inbound_id_is_kept(log_output: LogOutput, inbound: str) -> None:
    log_output.configure()
    app = make_app()
    seen: dict[str, Any] = {}

    @app.get("/")
    async def root(request: Request) -> dict[str, str]:
        seen["header"] = request.headers["x-request-id"]
        seen["reqlog"] = reqlog.get_request_id()
        seen["correlation_id"] = correlation_id.get()
        return {}

    async with client_for(app) as client:
        response = await client.get("/", headers={"X-Request-ID": inbound})
    assert response.headers["x-request-id"] == inbound
    assert seen == {"header": inbound, "reqlog": inbound, "correlation_id": inbound}
    assert log_output.access()[0]["request_id"] == inbound


@pytest.mark.parametrize(
    "inbound",
    [
        "\n" + RID,
        RID + "\n",
        " " + RID,
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        RID + "00",
        "x" * 5000,
        "0123456789abcdef\x1b[31m0123456789abcdef",
        "12345678123456781234567812345678-",
        "not-an-id",
        "",
    ],
)
async def test_invalid_inbound_id_is_replaced_never_echoed(
    log_output: LogOutput, inbound: str
) -> None:
    log_output.configure()
    app = make_app()
    seen: dict[str, str] = {}

    @app.get("/")
    async def root(request: Request) -> dict[str, str]:
        seen["header"] = request.headers["x-request-id"]
        return {}

    # httpx refuses control characters in headers: speak ASGI directly.
    messages = await call_asgi(app, headers=[(b"x-request-id", inbound.encode("latin-1"))])
    start = messages[0]
    echoed = dict(start["headers"])[b"x-request-id"].decode()
    assert echoed != inbound
    assert reqlog.middleware.is_valid_request_id(echoed)
    assert seen["header"] == echoed
    raw = b"".join(log_output.lines())
    assert inbound.encode("latin-1") not in raw or inbound == ""
    assert log_output.access()[0]["request_id"] == echoed


async def test_custom_header_generator_and_validator(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app(
        request_id_header="X-Correlation-ID",
        request_id_generator=lambda: "generated-1",
        request_id_validator=lambda value: value.startswith("req-"),
    )

    @app.get("/")
    async def root() -> dict[str, str]:
        return {}

    async with client_for(app) as client:
        kept = await client.get("/", headers={"X-Correlation-ID": "req-77"})
        replaced = await client.get("/", headers={"X-Correlation-ID": "bad-77"})
    assert kept.headers["x-correlation-id"] == "req-77"
    assert replaced.headers["x-correlation-id"] == "generated-1"
    assert "x-request-id" not in kept.headers


async def test_stdlib_correlation_filter_sees_the_id(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(CorrelationIdFilter())
    lib = logging.getLogger("third.party")
    lib.addHandler(handler)
    try:

        @app.get("/")
        async def root() -> dict[str, str]:
            lib.warning("from a library")
            return {}

        async with client_for(app) as client:
            await client.get("/", headers={"X-Request-ID": RID})
    finally:
        lib.removeHandler(handler)
    assert [r.correlation_id for r in records] == [RID]  # type: ignore[attr-defined]
    assert correlation_id.get() is None
    library_event = next(e for e in log_output.events() if e["logger"] == "third.party")
    assert library_event["request_id"] == RID


# -- client IP ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        ((), "10.0.0.1", "1.2.3.4", "10.0.0.1"),
        (["10.0.0.1"], "10.0.0.1", "1.2.3.4", "1.2.3.4"),
        (["10.0.0.0/8"], "10.0.0.1", "6.6.6.6, 1.2.3.4, 10.1.1.1", "1.2.3.4"),
        (["10.0.0.0/8"], "192.0.2.9", "1.2.3.4", "192.0.2.9"),
        (["10.0.0.0/8"], "10.0.0.1", "10.9.9.9, 10.1.1.1", "10.9.9.9"),
        (["10.0.0.0/8"], "10.0.0.1", "1.2.3.4, garbage, 10.1.1.1", "10.1.1.1"),
        (["10.0.0.0/8", "fd00::/8"], "fd00::1", "2001:db8::7", "2001:db8::7"),
        (["10.0.0.0/8"], "10.0.0.1", "", "10.0.0.1"),
    ],
)
async def test_client_ip(
    log_output: LogOutput, trusted: Any, peer: str, forwarded: str, expected: str
) -> None:
    log_output.configure()
    app = make_app(trusted_proxies=trusted)
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    await call_asgi(app, headers=headers, client=(peer, 5000))
    assert log_output.access()[0]["client_ip"] == expected


async def test_repeated_forwarded_headers_are_joined(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app(trusted_proxies=["10.0.0.0/8"])
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-for", b"10.2.2.2")]
    await call_asgi(app, headers=headers, client=("10.0.0.1", 5000))
    assert log_output.access()[0]["client_ip"] == "1.2.3.4"


# -- users and bound fields ---------------------------------------------------------------------


async def test_bind_user_and_bind_reach_every_later_event(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()
    log = reqlog.get_logger("app")

    @app.get("/me")
    async def me() -> dict[str, str]:
        reqlog.bind_user(user_id=7, email="ada@example.com", plan="pro")
        reqlog.bind(order_id="o-1")
        log.info("profile_loaded")
        return {}

    async with client_for(app) as client:
        await client.get("/me")
    expected = {
        "user_id": "7",
        "user_email": "ada@example.com",
        "user_plan": "pro",
        "order_id": "o-1",
    }
    for event in log_output.events():
        assert expected.items() <= event.items(), event


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


async def test_starlette_authenticated_user_is_picked_up(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(AuthenticationMiddleware, backend=HeaderAuth())
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    log = reqlog.get_logger("app")

    @app.get("/")
    async def root() -> dict[str, str]:
        log.info("inside")
        return {}

    async with client_for(app) as client:
        await client.get("/", headers={"X-User": "grace"})
        await client.get("/")
    events = log_output.events()
    assert [(e["event"], e.get("user_id")) for e in events] == [
        ("inside", "grace"),
        ("request_completed", "grace"),
        ("inside", None),
        ("request_completed", None),
    ]


# -- failures ----------------------------------------------------------------------------------


async def test_unhandled_exception_logs_once_and_reraises(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()

    @app.get("/boom")
    async def boom() -> None:
        password = "hunter2"  # a local variable that must not reach the log
        raise RuntimeError("kaput " + password[:0])

    async with client_for(app) as client:
        with pytest.raises(RuntimeError, match="kaput"):
            await client.get("/boom", headers={"X-Request-ID": RID})
    [event] = log_output.access()
    exception = event.pop("exception")
    assert {k: event[k] for k in ("event", "level", "status_code", "error_type")} == {
        "event": "request_failed",
        "level": "error",
        "status_code": 500,
        "error_type": "RuntimeError",
    }
    assert event["error_message"] == "kaput "
    assert event["request_id"] == RID
    assert exception[0]["exc_type"] == "RuntimeError"
    assert exception[0]["frames"][-1]["name"] == "boom"
    assert "hunter2" not in str(exception)
    assert all("locals" not in frame for frame in exception[0]["frames"])


async def test_default_500_carries_the_request_id(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("no")

    async with client_for(app, raise_app_exceptions=False) as client:
        response = await client.get("/boom", headers={"X-Request-ID": RID})
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert response.headers["x-request-id"] == RID
    # The server closes the connection after an exception: the response says so.
    assert response.headers["connection"] == "close"
    assert [e["event"] for e in log_output.events()] == ["request_failed"]


@pytest.mark.parametrize("key", [500, Exception])
async def test_registered_error_handler_response_is_kept(log_output: LogOutput, key: Any) -> None:
    log_output.configure()
    app = make_app()
    calls: list[str] = []

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        calls.append(type(exc).__name__)
        return JSONResponse({"detail": "custom", "id": reqlog.get_request_id()}, status_code=500)

    app.add_exception_handler(key, handler)

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("k")

    async with client_for(app, raise_app_exceptions=False) as client:
        response = await client.get("/boom", headers={"X-Request-ID": RID})
    assert response.json() == {"detail": "custom", "id": RID}
    assert response.headers["x-request-id"] == RID
    assert calls == ["KeyError"]
    [event] = log_output.access()
    assert (event["event"], event["status_code"]) == ("request_failed", 500)


async def test_debug_page_is_kept_in_debug_mode(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI(debug=True)
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("debug me")

    async with client_for(app, raise_app_exceptions=False) as client:
        response = await client.get("/boom", headers={"X-Request-ID": RID, "Accept": "text/html"})
    assert response.status_code == 500
    assert "debug me" in response.text
    assert "Traceback" in response.text
    assert response.headers["x-request-id"] == RID


async def test_exception_after_response_started(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        raise RuntimeError("mid-stream")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(chunks())

    messages: list[Message] = []
    with pytest.raises(RuntimeError, match="mid-stream"):
        await call_asgi(app, path="/stream", sink=messages)
    assert messages[0]["status"] == 200
    [event] = log_output.access()
    assert (event["event"], event["status_code"], event["response_incomplete"]) == (
        "request_failed",
        200,
        True,
    )
    assert event["response_bytes"] == 5


async def test_server_report_of_a_logged_exception_is_dropped(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("once")

    try:
        await call_asgi(app, path="/boom")
    except RuntimeError as exc:
        # What uvicorn does with an exception that escapes the app.
        logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=exc)
    assert [e["event"] for e in log_output.events()] == ["request_failed"]


# -- disconnects and cancellation --------------------------------------------------------------


async def test_client_disconnect_mid_stream(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()
    first_sent = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        first_sent.set()
        await asyncio.sleep(10)
        yield b"never"

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(chunks())

    async def receive() -> Message:
        await first_sent.wait()
        return {"type": "http.disconnect"}

    messages: list[Message] = []
    await asyncio.wait_for(call_asgi(app, path="/stream", sink=messages, receive=receive), 5)
    [event] = log_output.access()
    assert (event["event"], event["outcome"], event["status_code"]) == (
        "request_completed",
        "client_disconnected",
        200,
    )
    assert event["response_incomplete"] is True
    assert "exception" not in event


async def test_cancellation_by_the_server_is_logged_once_and_propagates(
    log_output: LogOutput,
) -> None:
    log_output.configure()
    app = make_app()
    entered = asyncio.Event()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        entered.set()
        await asyncio.sleep(10)
        return {}

    task = asyncio.create_task(call_asgi(app, path="/slow"))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [event] = log_output.access()
    # No disconnect was seen: the server cut the request (and answers 500 when it still can).
    assert (event["outcome"], event["status_code"], event["level"]) == (
        "server_cancelled",
        500,
        "error",
    )
    assert event["response_incomplete"] is True
    assert "exception" not in event


# -- websockets and other scopes ---------------------------------------------------------------


def test_websocket_gets_an_id_and_one_event_at_close(log_output: LogOutput) -> None:
    log_output.configure()
    log = reqlog.get_logger("ws")
    clock = FakeClock()

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        log.info("ws_message", size=len(text))
        clock.advance(40)
        await websocket.send_text(text)
        await websocket.close(code=4001)

    app = Starlette(routes=[WebSocketRoute("/ws/{room}", echo)])
    app.add_middleware(reqlog.RequestLoggingMiddleware, clock=clock)
    with (
        TestClient(app) as client,
        client.websocket_connect("/ws/lobby", headers={"X-Request-ID": RID}) as ws,
    ):
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
    events = log_output.events()
    assert events[0]["event"] == "ws_message"
    assert events[0]["request_id"] == RID
    closed = events[-1]
    assert {k: closed[k] for k in closed if k not in ("timestamp", "user_agent")} == {
        "event": "websocket_closed",
        "level": "info",
        "logger": "reqlog.access",
        "request_id": RID,
        "client_ip": "testclient",
        "path": "/ws/lobby",
        "route": "/ws/{room}",
        "accepted": True,
        "close_code": 4001,
        "closed_by": "server",
        "duration_ms": 40.0,
    }


async def test_lifespan_and_unknown_scopes_pass_through_untouched() -> None:
    seen: list[tuple[str, Any]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope["type"], await receive()))
        await send({"type": "custom.reply"})

    middleware = reqlog.RequestLoggingMiddleware(inner)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    for scope_type in ("lifespan", "custom"):
        await middleware({"type": scope_type}, receive, send)
    assert seen == [
        ("lifespan", {"type": "lifespan.startup"}),
        ("custom", {"type": "lifespan.startup"}),
    ]
    assert sent == [{"type": "custom.reply"}] * 2


# -- context -----------------------------------------------------------------------------------


async def test_no_request_context_after_the_request(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()
    log = reqlog.get_logger("app")

    @app.get("/")
    async def root() -> dict[str, str]:
        return {}

    await call_asgi(app)
    log.info("after")
    assert reqlog.get_request_id() is None
    assert "request_id" not in log_output.events()[-1]


# -- background tasks --------------------------------------------------------------------------


def fail_job(order_id: int) -> None:
    secret = "hunter2"  # a local variable that must not reach the log
    raise RuntimeError(f"job {order_id} failed" + secret[:0])


async def async_fail_job(order_id: int) -> None:
    fail_job(order_id)


async def test_access_event_is_written_at_the_last_byte(log_output: LogOutput) -> None:
    log_output.configure()
    clock = FakeClock()
    app = make_app(clock=clock)
    log = reqlog.get_logger("jobs")

    async def slow_job() -> None:
        clock.advance(2000)  # a 2 s background job
        reqlog.bind(job="done")
        log.info("job_finished")

    @app.post("/orders")
    async def create(tasks: BackgroundTasks) -> dict[str, str]:
        clock.advance(15)
        tasks.add_task(slow_job)
        return {}

    async with client_for(app) as client:
        response = await client.post("/orders", headers={"X-Request-ID": RID})
    assert response.status_code == 200
    access, job = log_output.events()
    assert (access["event"], access["duration_ms"], access["status_code"]) == (
        "request_completed",
        15.0,
        200,
    )
    assert "job" not in access
    assert (job["event"], job["request_id"], job["job"]) == ("job_finished", RID, "done")


@pytest.mark.parametrize("job", [fail_job, async_fail_job])
async def test_failing_background_task_has_its_own_event(
    log_output: LogOutput, job: Callable[[int], Any]
) -> None:
    log_output.configure()
    app = make_app()

    @app.post("/orders")
    async def create(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(job, 7)
        return {"ok": "yes"}

    async with client_for(app) as client:
        # The exception still goes on to the server, as Starlette lets it.
        with pytest.raises(RuntimeError, match="job 7 failed"):
            await client.post("/orders", headers={"X-Request-ID": RID})
    access, failed = log_output.events()
    assert {k: access[k] for k in ("event", "level", "status_code", "request_id")} == {
        "event": "request_completed",
        "level": "info",
        "status_code": 200,
        "request_id": RID,
    }
    assert "error_type" not in access
    exception = failed.pop("exception")
    failed.pop("timestamp")
    assert failed == {
        "event": "background_task_failed",
        "level": "error",
        "logger": "reqlog",
        "request_id": RID,
        "client_ip": "10.0.0.1",
        "method": "POST",
        "path": "/orders",
        "route": "/orders",
        "task": job.__qualname__,
        "error_type": "RuntimeError",
        "error_message": "job 7 failed",
    }
    assert exception[0]["frames"][-1]["name"] == "fail_job"
    assert all("locals" not in frame for frame in exception[0]["frames"])
    assert "hunter2" not in str(exception)


async def test_server_report_of_a_failed_task_is_dropped(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()

    @app.get("/")
    async def root(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(fail_job, 1)
        return {}

    try:
        await call_asgi(app)
    except RuntimeError as exc:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application\n", exc_info=exc)
    assert [e["event"] for e in log_output.events()] == [
        "request_completed",
        "background_task_failed",
    ]


async def test_trace_shows_background_events_after_the_access_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``reqlog trace`` must keep: events written after the access event (background
    tasks) are found, in the order they happened, with offsets past the response's end."""
    log_file = tmp_path / "app.log"
    reqlog.configure(format="json", output=str(log_file))
    app = make_app()
    log = reqlog.get_logger("shop")

    def send_receipt() -> None:
        log.info("receipt_sent")

    @app.post("/checkout")
    async def checkout(tasks: BackgroundTasks) -> dict[str, str]:
        log.info("cart_loaded")
        tasks.add_task(send_receipt)
        tasks.add_task(fail_job, 3)
        return {}

    async with client_for(app, raise_app_exceptions=False) as client:
        await client.post("/checkout", headers={"X-Request-ID": RID})
    reqlog.flush()
    capsys.readouterr()

    assert cli_main(["trace", RID[:8], str(log_file), "--json"]) == 0
    traced = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in traced] == [
        "cart_loaded",
        "request_completed",
        "receipt_sent",
        "background_task_failed",
    ]
    offsets = [e["offset_ms"] for e in traced]
    assert offsets == sorted(offsets)
    assert offsets[0] >= 0
    assert offsets[1] == pytest.approx(traced[1]["duration_ms"], abs=0.01)


# -- disconnects the app never reads -----------------------------------------------------------


class FakeServer:
    """``receive``/``send`` as a server gives them, with the client's leaving in the test's hand.

    The request body comes in ``chunks``; after it, ``receive()`` waits for the client to go
    (``leave()``), or answers ``http.disconnect`` once the response is complete, as uvicorn does.
    """

    def __init__(self, chunks: tuple[bytes, ...] = (b"",)) -> None:
        self.chunks = list(chunks)
        self.calls = 0
        self.waiting = asyncio.Event()  # a receive() is waiting past the body
        self.gone = asyncio.Event()
        self.complete = asyncio.Event()
        self.disconnect_taken = asyncio.Event()
        self.sent: list[Message] = []

    def leave(self) -> None:
        self.gone.set()

    async def receive(self) -> Message:
        self.calls += 1
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}
        self.waiting.set()
        gone = asyncio.ensure_future(self.gone.wait())
        complete = asyncio.ensure_future(self.complete.wait())
        try:
            await asyncio.wait((gone, complete), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            complete.cancel()
        if self.gone.is_set():
            self.disconnect_taken.set()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.complete.set()


async def serve(app: Any, server: FakeServer, method: str = "GET", path: str = "/") -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("10.0.0.1", 123),
        "server": ("testserver", 80),
    }
    await app(scope, server.receive, server.send)


def held_app(release: asyncio.Event) -> FastAPI:
    """An app whose GET / answers once `release` is set, never reading the request."""
    app = make_app()

    @app.get("/")
    async def held() -> dict[str, str]:
        await release.wait()
        return {}

    return app


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    # The watch starts after one to two ticks; short ticks keep these tests short.
    monkeypatch.setattr(reqlog._lifecycle, "WATCH_INTERVAL_S", 0.01)


@pytest.mark.usefixtures("fast_watch")
async def test_disconnect_is_seen_when_the_app_never_reads(log_output: LogOutput) -> None:
    log_output.configure()
    release = asyncio.Event()
    app = held_app(release)

    server = FakeServer()
    request = asyncio.create_task(serve(app, server))
    # Only reqlog's read-ahead can be past the body: the app never calls receive().
    await asyncio.wait_for(server.waiting.wait(), 10)
    server.leave()
    await asyncio.wait_for(server.disconnect_taken.wait(), 10)
    release.set()
    await asyncio.wait_for(request, 10)
    [event] = log_output.access()
    assert (event["status_code"], event["outcome"], event["response_incomplete"]) == (
        499,
        "client_disconnected",
        True,
    )


@pytest.mark.usefixtures("fast_watch")
async def test_read_ahead_hands_every_message_back_in_order(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()
    release = asyncio.Event()

    @app.post("/echo")
    async def echo(request: Request) -> PlainTextResponse:
        await release.wait()
        return PlainTextResponse(await request.body())

    server = FakeServer((b"first ", b"second ", b"third"))
    request = asyncio.create_task(serve(app, server, "POST", "/echo"))
    await asyncio.wait_for(server.waiting.wait(), 10)  # the whole body was read ahead
    release.set()
    await asyncio.wait_for(request, 10)
    body = b"".join(m.get("body", b"") for m in server.sent if m["type"] == "http.response.body")
    assert body == b"first second third"
    [event] = log_output.access()
    assert (event["status_code"], "outcome" in event) == (200, False)


@pytest.mark.usefixtures("fast_watch")
async def test_read_ahead_holds_a_bounded_part_of_the_body(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()
    release = asyncio.Event()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        await release.wait()
        return {"size": len(await request.body())}

    chunk = b"x" * 16384
    server = FakeServer((chunk,) * 64)  # 1 MiB the app has not read yet
    request = asyncio.create_task(serve(app, server, "POST", "/upload"))
    while server.calls < 3:
        await asyncio.sleep(0.01)
    for _ in range(20):  # the read-ahead stops at its limit, however long it runs
        await asyncio.sleep(0.01)
    assert server.calls <= reqlog._lifecycle.READ_AHEAD_BYTES // len(chunk) + 2
    release.set()
    await asyncio.wait_for(request, 10)
    assert orjson.loads(server.sent[1]["body"]) == {"size": 64 * len(chunk)}


@pytest.mark.usefixtures("fast_watch")
async def test_a_client_that_stays_is_not_taken_for_gone(log_output: LogOutput) -> None:
    log_output.configure()
    release = asyncio.Event()
    app = held_app(release)

    server = FakeServer()
    request = asyncio.create_task(serve(app, server))
    await asyncio.wait_for(server.waiting.wait(), 10)
    release.set()  # the server answers "disconnect" once the response is complete
    await asyncio.wait_for(request, 10)
    [event] = log_output.access()
    assert (event["status_code"], "outcome" in event) == (200, False)


@pytest.mark.usefixtures("fast_watch")
async def test_no_read_ahead_for_expect_100_continue(log_output: LogOutput) -> None:
    log_output.configure()
    release = asyncio.Event()
    app = held_app(release)

    server = FakeServer((b"body",))

    async def receive() -> Message:
        pytest.fail("receive() called: the server would have sent 100 Continue")

    scope_headers = [(b"host", b"testserver"), (b"expect", b"100-continue")]
    task = asyncio.create_task(
        call_asgi(app, headers=scope_headers, receive=receive, sink=server.sent)
    )
    for _ in range(10):  # several watch ticks
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.wait_for(task, 10)
    assert log_output.access()[0]["status_code"] == 200


async def test_cancelled_after_the_client_left_is_a_disconnect(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()

    @app.post("/")
    async def read_then_wait(request: Request) -> dict[str, str]:
        async for _ in request.stream():
            pass
        await request.is_disconnected()
        await asyncio.sleep(3600)
        return {}

    server = FakeServer((b"x",))
    server.leave()
    task = asyncio.create_task(serve(app, server, "POST"))
    await asyncio.wait_for(server.disconnect_taken.wait(), 10)
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [event] = log_output.access()
    assert (event["outcome"], event["status_code"]) == ("client_disconnected", 499)


# -- guard rails -------------------------------------------------------------------------------


async def test_middleware_added_twice_logs_once_and_warns_once(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    sub = make_app(exclude_paths=["/nothing"])
    app.mount("/sub", sub)

    @app.get("/")
    async def root() -> dict[str, str]:
        return {}

    @sub.get("/x")
    async def sub_x() -> dict[str, str]:
        return {}

    async with client_for(app) as client:
        for path in ("/", "/", "/sub/x"):
            response = await client.get(path)
            assert list(response.headers.keys()).count("x-request-id") == 1
    events = log_output.events()
    assert [e["path"] for e in events if e["event"] == "request_completed"] == ["/", "/", "/sub/x"]
    warnings = [e for e in events if e["event"] == "middleware_added_twice"]
    # Once per inner copy: the one added twice, and the mounted app's.
    assert [(w["level"], w["logger"]) for w in warnings] == [("warning", "reqlog")] * 2


@pytest.mark.parametrize(
    ("sent", "rejected"),
    [([], False), ([RID], False), (["not-an-id"], True), (["x" * 500], True)],
)
async def test_a_rejected_id_is_flagged_never_logged(
    log_output: LogOutput, sent: list[str], rejected: bool
) -> None:
    log_output.configure()
    headers = [(b"x-request-id", value.encode()) for value in sent]
    await call_asgi(make_app(), headers=headers)
    [event] = log_output.access()
    assert event.get("request_id_rejected", False) is rejected
    if rejected:
        assert sent[0].encode() not in b"".join(log_output.lines())


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        # The last field counts; the app, the log and the echo agree; others never reach the app.
        (["\x1b[31mevil", RID], RID),
        (["0" * 32, RID], RID),
        ([RID, "\x1b[31mevil"], None),
    ],
)
async def test_duplicate_request_ids_follow_one_rule(
    log_output: LogOutput, sent: list[str], expected: str | None
) -> None:
    log_output.configure()
    app = make_app(log_headers=True)
    seen: dict[str, Any] = {}

    @app.get("/")
    async def root(request: Request) -> dict[str, str]:
        seen["headers"] = request.headers.getlist("x-request-id")
        seen["id"] = reqlog.get_request_id()
        return {}

    headers = [(b"x-request-id", value.encode("latin-1")) for value in sent]
    messages = await call_asgi(app, headers=headers)
    echoed = dict(messages[0]["headers"])[b"x-request-id"].decode()
    [event] = log_output.access()
    if expected is None:
        assert event["request_id_rejected"] is True
        assert reqlog.middleware.is_valid_request_id(echoed)
    else:
        assert echoed == expected
        assert "request_id_rejected" not in event
    assert seen == {"headers": [echoed], "id": echoed}
    assert event["request_id"] == echoed
    # log_headers shows what the client sent: the value used, others as [REJECTED].
    logged = event["request_headers"]["x-request-id"]
    assert logged == [value if value == echoed else "[REJECTED]" for value in sent]
    assert b"\x1b" not in b"".join(log_output.lines())


@pytest.mark.parametrize(("sent", "logged"), [(None, None), ("bad id", "[REJECTED]"), (RID, RID)])
async def test_logged_request_id_header_is_what_the_client_sent(
    log_output: LogOutput, sent: str | None, logged: str | None
) -> None:
    log_output.configure()
    headers = [] if sent is None else [(b"x-request-id", sent.encode())]
    await call_asgi(make_app(log_headers=True), headers=headers)
    [event] = log_output.access()
    assert event["request_headers"].get("x-request-id") == logged


def test_invalid_options_raise_when_created_or_built_by_hand() -> None:
    with pytest.raises(ValueError, match="body_max_bytes"):
        reqlog.RequestLoggingMiddleware(FastAPI(), body_max_bytes=0)
    app = make_app(body_max_bytes=0)
    with pytest.raises(ValueError, match="body_max_bytes"):
        app.build_middleware_stack()


async def test_invalid_options_fail_the_lifespan_startup(log_output: LogOutput) -> None:
    log_output.configure()
    app = make_app(body_max_bytes=0)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == [
        {
            "type": "lifespan.startup.failed",
            "message": "reqlog.RequestLoggingMiddleware: body_max_bytes: expected a positive "
            "number of bytes, got 0",
        }
    ]
    # Without a lifespan, each request raises it.
    with pytest.raises(ValueError, match="body_max_bytes"):
        await call_asgi(app)


# -- helpers -----------------------------------------------------------------------------------


async def call_asgi(
    app: Any,
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] = ("10.0.0.1", 123),
    sink: list[Message] | None = None,
    receive: Callable[[], Any] | None = None,
) -> list[Message]:
    """One HTTP request straight through the ASGI interface, for what httpx cannot send."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": client,
        "server": ("testserver", 80),
    }
    messages = sink if sink is not None else []
    body_sent = False

    async def default_receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive or default_receive, send)
    return messages


def test_new_request_ids_are_uuid4s_and_distinct() -> None:
    # Two batches' worth: every ID a UUID4 (version 4, RFC 4122 variant) in 32 hex digits.
    from reqlog._request_id import new_request_id

    ids = [new_request_id() for _ in range(600)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
