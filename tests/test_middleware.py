"""RequestLoggingMiddleware: access events, request IDs, client IPs, users, failures, websockets."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_correlation_id import CorrelationIdFilter
from asgi_correlation_id.context import correlation_id
from fastapi import FastAPI, Request
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


async def test_cancellation_is_logged_once_and_propagates(log_output: LogOutput) -> None:
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
    assert (event["outcome"], event["status_code"], event["level"]) == (
        "client_disconnected",
        499,
        "warning",
    )
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
