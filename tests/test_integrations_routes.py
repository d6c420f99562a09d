"""Route templates across routers, mounts and frameworks: the pattern, never the URL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, Router, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

import reqlog
from tests.conftest import LogOutput

pytestmark = pytest.mark.anyio


async def _get(app: Any, *paths: str) -> None:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in paths:
            await client.get(path)


def _routes(log_output: LogOutput) -> list[tuple[str, int, Any]]:
    return [(e["path"], e["status_code"], e["route"]) for e in log_output.access()]


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("raw")(scope, receive, send)


async def test_fastapi_nested_routers_keep_every_prefix(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    items = APIRouter(prefix="/items")

    @items.get("/{item_id}")
    def read_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    orgs = APIRouter(prefix="/orgs/{org}")
    orgs.include_router(items)
    app.include_router(orgs, prefix="/api")

    await _get(app, "/api/orgs/acme/items/3")

    assert _routes(log_output) == [
        ("/api/orgs/acme/items/3", 200, "/api/orgs/{org}/items/{item_id}")
    ]


async def test_mounted_sub_apps_and_routers(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    fastapi_sub = FastAPI()

    @fastapi_sub.get("/things/{tid}")
    def thing(tid: str) -> dict[str, str]:
        return {"tid": tid}

    app.mount("/v1", fastapi_sub)
    app.mount(
        "/st",
        Starlette(routes=[Route("/s/{sid}", _ok), Mount("/deeper", routes=[Route("/d/{d}", _ok)])]),
    )
    app.mount("/router", Router(routes=[Route("/r/{rid}", _ok)]))

    await _get(app, "/v1/things/abc", "/st/s/9", "/st/deeper/d/4", "/router/r/1")

    assert _routes(log_output) == [
        ("/v1/things/abc", 200, "/v1/things/{tid}"),
        ("/st/s/9", 200, "/st/s/{sid}"),
        ("/st/deeper/d/4", 200, "/st/deeper/d/{d}"),
        ("/router/r/1", 200, "/router/r/{rid}"),
    ]


async def test_mount_with_path_params_keeps_the_template(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    app.mount("/users/{uid}", Starlette(routes=[Route("/posts/{pid}", _ok)]))
    app.mount("/files/{bucket}", _raw_app)

    await _get(app, "/users/42/posts/7", "/files/b1/a/b.txt", "/users/42/nope")

    assert _routes(log_output) == [
        ("/users/42/posts/7", 200, "/users/{uid}/posts/{pid}"),
        ("/files/b1/a/b.txt", 200, "/files/{bucket}/{path}"),
        ("/users/42/nope", 404, None),
    ]


async def test_plain_starlette_app(log_output: LogOutput) -> None:
    log_output.configure()
    app = Starlette(
        routes=[
            Route("/items/{item_id:int}", _ok, methods=["POST"]),
            Mount("/api/{version}", routes=[Mount("/admin", routes=[Route("/u/{u}", _ok)])]),
            Mount("/static", app=_raw_app),
        ]
    )
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    await _get(app, "/api/v2/admin/u/7", "/static/css/site.css", "/items/3", "/nowhere")

    assert _routes(log_output) == [
        ("/api/v2/admin/u/7", 200, "/api/{version}/admin/u/{u}"),
        ("/static/css/site.css", 200, "/static/{path}"),
        ("/items/3", 405, "/items/{item_id}"),  # the route exists; the method does not
        ("/nowhere", 404, None),
    ]


async def test_middleware_around_the_app_finds_mounts_too(log_output: LogOutput) -> None:
    # Wrapping the app (instead of add_middleware) puts no "app" in the scope at entry.
    log_output.configure()
    inner = Starlette(routes=[Mount("/t/{tenant}", routes=[Route("/x/{x}", _ok)])])
    app = reqlog.RequestLoggingMiddleware(inner)

    await _get(app, "/t/acme/x/1")

    assert _routes(log_output) == [("/t/acme/x/1", 200, "/t/{tenant}/x/{x}")]


async def test_websocket_route_in_a_mount(log_output: LogOutput) -> None:
    log_output.configure()

    async def ws_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    app = Starlette(routes=[Mount("/rooms/{room}", routes=[WebSocketRoute("/ws", ws_endpoint)])])
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/rooms/r1/ws",
        "raw_path": b"/rooms/r1/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("10.0.0.1", 123),
        "server": ("test", 80),
        "scheme": "ws",
        "subprotocols": [],
    }
    await app(scope, receive, send)

    [event] = log_output.access()
    assert (event["event"], event["path"], event["route"]) == (
        "websocket_closed",
        "/rooms/r1/ws",
        "/rooms/{room}/ws",
    )


async def test_raw_asgi_app_has_no_route(log_output: LogOutput) -> None:
    log_output.configure()
    app = reqlog.RequestLoggingMiddleware(_raw_app)

    await _get(app, "/anything")

    [event] = log_output.access()
    assert (event["status_code"], event["route"], len(event["request_id"])) == (200, None, 32)
