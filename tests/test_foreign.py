"""reqlog/_foreign.py reads other projects' insides: these fail loudly when one changes them."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI, Request
from starlette.applications import Starlette
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reqlog import _foreign


def send_mail(to: str) -> None:
    raise RuntimeError(to)


async def audit() -> None:
    raise KeyError("audit")


@pytest.mark.parametrize(
    ("task", "name"),
    [
        (BackgroundTask(send_mail, "a@example.com"), "send_mail"),
        (BackgroundTask(audit), "audit"),
        (BackgroundTask(functools.partial(send_mail, "b@example.com")), "send_mail"),
    ],
)
async def test_background_task_name_is_found_in_the_traceback(
    task: BackgroundTask, name: str
) -> None:
    tasks = BackgroundTasks([BackgroundTask(lambda: None), task])
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any of the tasks' exceptions
        await tasks()
    assert _foreign.background_task_name(caught.value.__traceback__) == name


def test_no_task_no_name() -> None:
    with pytest.raises(ValueError, match="not in a task") as caught:
        raise ValueError("not in a task")
    assert _foreign.background_task_name(caught.value.__traceback__) is None


class Probe:
    """A middleware that records whether Starlette is building its stack lazily."""

    seen: ClassVar[list[bool]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # One frame up is this __init__'s caller: the code that created the middleware.
        Probe.seen.append(_foreign.building_lazily(1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def test_lazy_build_is_recognised() -> None:
    Probe.seen = []
    Starlette(middleware=[Middleware(Probe)]).build_middleware_stack()
    app = Starlette(middleware=[Middleware(Probe)])

    async def receive() -> Message:
        return {"type": "lifespan.shutdown"}

    sent: list[Any] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "state": {}}, receive, send)
    assert Probe.seen == [False, True]


# --- structlog -----------------------------------------------------------------------------------


def test_structlog_keeps_its_context_variables_in_the_private_dict() -> None:
    # reqlog skips merging and restoring structlog's context variables while this dict is
    # empty; if structlog stops filling it, _foreign's stand-in keeps reqlog correct but slow.
    assert _foreign.STRUCTLOG_CONTEXT_VARS is getattr(
        structlog.contextvars, "_CONTEXT_VARS", None
    ), "structlog.contextvars._CONTEXT_VARS is gone: see reqlog/_foreign.py"
    key = "foreign_probe_key"
    tokens = structlog.contextvars.bind_contextvars(**{key: 1})
    try:
        assert f"structlog_{key}" in _foreign.STRUCTLOG_CONTEXT_VARS, (
            "bind_contextvars() no longer registers its variables: see reqlog/_foreign.py"
        )
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


# --- FastAPI -------------------------------------------------------------------------------------


async def test_fastapi_puts_the_full_template_on_its_route_context() -> None:
    seen: list[Any] = []
    router = APIRouter(prefix="/shop")

    @router.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> dict[str, int]:
        seen.append(_foreign.fastapi_route_template(request.scope))
        return {"id": item_id}

    app = FastAPI()
    app.include_router(router, prefix="/api")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/api/shop/items/3")).status_code == 200
    assert seen == ["/api/shop/items/{item_id}"], (
        "FastAPI's scope['fastapi']['effective_route_context'] changed: see reqlog/_foreign.py"
    )


# --- Starlette's outer ServerErrorMiddleware -----------------------------------------------------


async def test_the_outer_error_middleware_calls_its_handler_after_a_response_started() -> None:
    # Why reqlog wraps the outer instance's handler (_foreign.server_error_handler): it calls
    # the app's 500 handler even when the response already started. If this test fails,
    # Starlette checks first now, and the wrapping can go.
    calls: list[str] = []

    async def handler(request: Any, exc: Exception) -> PlainTextResponse:
        calls.append(str(exc))
        return PlainTextResponse("handled", status_code=500)

    async def answered_then_raised(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"answered"})
        raise RuntimeError("already answered")

    middleware = ServerErrorMiddleware(answered_then_raised, handler=handler)
    assert middleware.handler is handler, "ServerErrorMiddleware.handler: see reqlog/_foreign.py"
    with pytest.raises(RuntimeError):
        await middleware(_http_scope(), _no_body, _discard)
    assert calls == ["already answered"]


async def test_the_outer_error_middleware_handler_is_wrapped_once() -> None:
    async def handler(request: Any, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("handled", status_code=500)

    app = Starlette(exception_handlers={500: handler})
    app.middleware_stack = app.build_middleware_stack()  # what Starlette does on its first call
    outer = app.middleware_stack
    assert isinstance(outer, ServerErrorMiddleware), "Starlette's outer middleware changed"
    for _ in range(2):
        found, debug = _foreign.server_error_handler(app)
        assert (found, debug) == (handler, False)
    wrapped = outer.handler
    assert wrapped is not handler
    assert getattr(wrapped, "handler", None) is handler
    answered = RuntimeError("answered")
    _foreign.mark_answered(answered)
    skipped = await wrapped(None, answered)  # type: ignore[arg-type, misc]
    assert skipped.status_code == 500
    assert skipped.body == b"Internal Server Error"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (audit, True),
        (send_mail, False),
        (functools.partial(audit), True),
        (functools.partial(functools.partial(send_mail, "x")), False),
        (Probe.__call__, True),
    ],
)
def test_is_async_callable(obj: Any, expected: bool) -> None:
    assert _foreign.is_async_callable(obj) is expected


def _http_scope() -> Scope:
    return {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Message) -> None:
    pass


def test_opentelemetry_keeps_its_current_context_in_a_context_variable() -> None:
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    from reqlog.integrations import otel

    fast = _foreign.otel_current_context()
    assert fast is not None, "reqlog._foreign: OpenTelemetry's runtime context changed"
    assert otel.current_context == fast  # the same variable's get
    assert fast() is otel_context.get_current()
    assert not fast()  # nothing entered yet
    span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    with trace.use_span(span):
        assert fast() is otel_context.get_current()
        assert fast()
    assert fast() is otel_context.get_current()
