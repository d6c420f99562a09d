"""The middleware on a framework that is not Starlette: Litestar."""

from __future__ import annotations

import httpx
import pytest

import reqlog
from tests.conftest import LogOutput

pytest.importorskip("litestar")
import litestar
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath

pytestmark = pytest.mark.anyio


async def _get(app: object, *paths: str) -> None:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in paths:
            await client.get(path)


async def test_litestar_routes_and_request_context(log_output: LogOutput) -> None:
    log_output.configure()
    log = reqlog.get_logger("orders")

    @litestar.get("/items/{item_id:int}")
    async def read_item(item_id: FromPath[int]) -> dict[str, int]:
        log.info("loading_item", item_id=item_id)
        return {"id": item_id}

    @litestar.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    api = litestar.Router(path="/api/{org:str}", route_handlers=[read_item])
    # Inside Litestar, middleware runs after routing: an unknown path never reaches it.
    # Wrapped around the app, it sees every request, 404s included.
    handlers: list[litestar.types.ControllerRouterHandler] = [read_item, boom, api]
    inside = litestar.Litestar(
        route_handlers=handlers,
        # Litestar types ASGI callables its own way; the middleware is plain ASGI.
        middleware=[DefineMiddleware(reqlog.RequestLoggingMiddleware)],  # type: ignore[arg-type]
        logging_config=None,
    )
    around = reqlog.RequestLoggingMiddleware(
        litestar.Litestar(route_handlers=handlers, logging_config=None)  # type: ignore[arg-type]
    )

    await _get(inside, "/items/3", "/api/acme/items/4", "/boom")
    await _get(around, "/items/5", "/nope")

    events = [e for e in log_output.events() if e["logger"] != "httpx"]
    assert [(e["event"], e.get("path"), e.get("status_code"), e.get("route")) for e in events] == [
        ("loading_item", None, None, None),
        ("request_completed", "/items/3", 200, "/items/{item_id}"),
        ("loading_item", None, None, None),
        ("request_completed", "/api/acme/items/4", 200, "/api/{org}/items/{item_id}"),
        ("request_completed", "/boom", 500, "/boom"),
        ("loading_item", None, None, None),
        ("request_completed", "/items/5", 200, "/items/{item_id}"),
        ("request_completed", "/nope", 404, None),
    ]
    # The handler's own event carries the request's ID, like under Starlette.
    assert events[0]["request_id"] == events[1]["request_id"]
    assert events[0]["item_id"] == 3
