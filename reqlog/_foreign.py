"""Every use of another project's private API or undocumented behaviour, and nothing else.

Each function here depends on how Starlette, FastAPI or structlog are written, not on what
they promise, where no public API says what reqlog needs. tests/test_foreign.py checks each
assumption against the installed versions and fails loudly, naming this module, when one of
them changes. Where a public API exists it is used instead (Starlette's private
``is_async_callable`` is replaced by :func:`is_async_callable` below, which uses only
``inspect``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

import structlog
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import Scope

__all__ = [
    "STRUCTLOG_CONTEXT_VARS",
    "background_task_name",
    "building_lazily",
    "fastapi_route_template",
    "is_async_callable",
    "mark_answered",
    "otel_current_context",
    "server_error_handler",
]

# --- structlog ------------------------------------------------------------------------------------

#: structlog creates one ContextVar per key on the first ``bind_contextvars()`` of that key and
#: keeps them in this private dict: while it is empty, nothing can be bound, and merging or
#: restoring structlog's context variables can be skipped (``get_contextvars()``, the public
#: way, copies the whole context on every call). Should the dict ever go, a stand-in that is
#: never empty keeps reqlog correct (it then always merges), only slower.
STRUCTLOG_CONTEXT_VARS: Final[dict[str, Any]] = getattr(
    structlog.contextvars, "_CONTEXT_VARS", {"structlog_?": None}
)

# --- Starlette ------------------------------------------------------------------------------------

_TASK_CALL = BackgroundTask.__call__.__code__


def background_task_name(traceback: TracebackType | None) -> str | None:
    """The function of the ``BackgroundTask`` an exception came out of, by its qualified name.

    Starlette runs a response's background tasks one after the other inside the app call and
    lets the first exception out; the exception says nothing of which task raised. Its
    traceback does: the innermost ``BackgroundTask.__call__`` frame holds the task as ``self``.
    """
    task = None
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code is _TASK_CALL:
            task = frame.f_locals.get("self")
        traceback = traceback.tb_next
    func: Any = getattr(task, "func", None)
    while isinstance(func, functools.partial):
        func = func.func
    if func is None:
        return None
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__qualname__


def building_lazily(depth: int) -> bool:
    """Whether the code ``depth`` frames above this function's caller is a Starlette app
    building its middleware stack on its first ASGI call (``Starlette.__call__`` ->
    ``build_middleware_stack``). A middleware's ``__init__`` asks with ``depth=1``.

    Starlette creates the user's middleware on the first call it gets, which is the lifespan
    startup when the server runs the lifespan protocol: an exception raised then, before the
    app has spoken the protocol, reads to uvicorn (``--lifespan auto``) as "lifespan
    unsupported", and the server starts serving 500s. Knowing the build is lazy lets the
    middleware report the error as a failed startup instead.
    """
    try:
        frame = sys._getframe(depth + 1)
    except (AttributeError, ValueError):  # not CPython, or no such frame
        return False
    caller = frame.f_back
    return (
        frame.f_code.co_name == "build_middleware_stack"
        and caller is not None
        and caller.f_code.co_name == "__call__"
    )


def server_error_handler(app: Any) -> tuple[Callable[..., Any] | None, bool]:
    """The app's 500 handler (``exception_handlers[500]`` or ``[Exception]``) and its debug
    flag, for answering a failed request the way the app itself would.

    Starlette's outer ``ServerErrorMiddleware`` (the app's ``middleware_stack``) calls that
    handler before it checks whether a response already started: once reqlog has answered,
    the handler would run a second time (an error reporter would report twice). So the outer
    instance's ``handler`` attribute is wrapped, once, to skip exceptions reqlog answered
    (:func:`mark_answered`).
    """
    handler = None
    for key, value in getattr(app, "exception_handlers", {}).items():
        if key in (500, Exception):
            handler = value
    debug = bool(getattr(app, "debug", False))
    outer = getattr(app, "middleware_stack", None)
    if handler is not None and isinstance(outer, ServerErrorMiddleware):
        if outer.handler is not None and not isinstance(outer.handler, _SkipAnswered):
            outer.handler = _SkipAnswered(outer.handler)
        if isinstance(outer.handler, _SkipAnswered):
            handler = outer.handler.handler
    return handler, debug


def mark_answered(exc: BaseException) -> None:
    """Tell the outer ``ServerErrorMiddleware``'s wrapped handler that reqlog answered."""
    with contextlib.suppress(AttributeError, TypeError):
        exc._reqlog_answered = True  # type: ignore[attr-defined]


class _SkipAnswered:
    """The app's 500 handler, skipped for an exception reqlog already answered."""

    def __init__(self, handler: Callable[..., Any]) -> None:
        self.handler = handler

    async def __call__(self, request: Any, exc: Exception) -> Any:
        if getattr(exc, "_reqlog_answered", False):
            # Never sent: the outer middleware sees the response reqlog already started.
            return PlainTextResponse("Internal Server Error", status_code=500)
        if is_async_callable(self.handler):
            return await self.handler(request, exc)
        return await run_in_threadpool(self.handler, request, exc)


def is_async_callable(obj: Any) -> bool:
    """Whether calling ``obj`` returns a coroutine: a coroutine function, one wrapped in
    ``functools.partial``, or an object whose ``__call__`` is one (what Starlette's private
    ``is_async_callable`` decides, with ``inspect`` only)."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004
    )


# --- FastAPI --------------------------------------------------------------------------------------


def fastapi_route_template(scope: Scope) -> Any:
    """The full template of the route FastAPI matched, prefixes of included routers included
    (``None`` when FastAPI said nothing).

    FastAPI keeps included routers unflattened: the matched route (``scope["route"]``) knows
    only its own path; the whole template is on the undocumented
    ``scope["fastapi"]["effective_route_context"]``.
    """
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    return getattr(effective, "path_format", None)


# --- OpenTelemetry --------------------------------------------------------------------------------


def otel_current_context() -> Callable[[], Any] | None:
    """``opentelemetry.context.get_current`` without its two Python calls (asked on every
    event): the ``get`` of the context variable in which OpenTelemetry's default runtime
    context (``ContextVarsRuntimeContext``, the private ``_RUNTIME_CONTEXT``) keeps the
    current context. ``None`` when OpenTelemetry is not installed, another runtime context is
    configured (``OTEL_PYTHON_CONTEXT``), or it keeps the context elsewhere: then
    ``get_current`` itself.
    """
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    except ImportError:
        return None
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime) is not ContextVarsRuntimeContext or type(var) is not contextvars.ContextVar:
        return None
    return var.get
