"""The contenders: one FastAPI app, bare and with each way of logging its requests.

Every contender writes its log lines to ``os.devnull`` so that what is measured is the cost
of producing them, not of a terminal. Each builder configures process-wide logging, so each
contender runs in a process of its own (see ``bench_requests``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENDERS", "SERVICE", "build", "create"]

#: The ``service`` field of reqlog's lines and the floor's.
SERVICE = "bench"


def _routes(app: FastAPI) -> FastAPI:
    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        return {"id": item_id, "name": "widget", "tags": ["a", "b"]}

    @app.post("/items")
    async def create_item(item: dict[str, Any]) -> dict[str, Any]:
        return {"created": item}

    return app


def bare() -> ASGIApp:
    """FastAPI with no request logging at all."""
    return _routes(FastAPI())


def floor() -> ASGIApp:
    """FLOOR: the cheapest honest middleware writing reqlog's access line (bench/floor.py)."""
    from bench.floor import FloorMiddleware

    app = _routes(FastAPI())
    fd = os.open(os.devnull, os.O_WRONLY | os.O_APPEND)
    app.add_middleware(FloorMiddleware, fd=fd, service=SERVICE)
    return app


def article() -> ASGIApp:
    """The article's middleware: two BaseHTTPMiddleware and python-json-logger, as published.

    Copied from the article (Request ID Propagation + Structured Logging), with the handler's
    stream pointed at os.devnull.
    """
    from pythonjsonlogger import json as jsonlogger
    from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
    from starlette.requests import Request
    from starlette.responses import Response

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives with the process
    handler.setFormatter(jsonlogger.JsonFormatter())
    logger = logging.getLogger("article")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    class RequestIDMiddleware(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            request_id = request.headers.get("X-Request-ID") or str(uuid.uuid4())
            request.state.request_id = request_id
            response = await call_next(request)
            response.headers["X-Request-ID"] = request_id
            return response

    class StructuredLoggingMiddleware(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            method = request.method
            path = request.url.path
            query_string = str(request.url.query) if request.url.query else ""
            client_ip = request.client.host if request.client else "unknown"
            start_time = time.time()
            try:
                response = await call_next(request)
                duration_ms = (time.time() - start_time) * 1000
                logger.info(
                    "request_completed",
                    extra={
                        "request_id": request.state.request_id,
                        "method": method,
                        "path": path,
                        "query": query_string,
                        "status_code": response.status_code,
                        "duration_ms": round(duration_ms, 2),
                        "client_ip": client_ip,
                        "user_agent": request.headers.get("user-agent"),
                    },
                )
                return response
            except Exception as exc:
                duration_ms = (time.time() - start_time) * 1000
                logger.error(
                    "request_failed",
                    extra={
                        "method": method,
                        "path": path,
                        "query": query_string,
                        "error_type": type(exc).__name__,
                        "error_message": str(exc),
                        "duration_ms": round(duration_ms, 2),
                        "client_ip": client_ip,
                    },
                    exc_info=True,
                )
                raise

    app = _routes(FastAPI())
    app.add_middleware(StructuredLoggingMiddleware)
    app.add_middleware(RequestIDMiddleware)
    return app


def configure_plain_structlog() -> None:
    """structlog as its performance guide sets it up: contextvars, level, ISO time, orjson
    straight to bytes, the filtering bound logger cached on first use; into os.devnull."""
    import orjson
    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.BytesLoggerFactory(file=open(os.devnull, "wb")),  # noqa: SIM115
        cache_logger_on_first_use=True,
    )


def recipe() -> ASGIApp:
    """The best public recipe: asgi-correlation-id plus a pure-ASGI structlog access log.

    structlog with orjson rendering straight to bytes (``BytesLoggerFactory``), contextvars
    merged, the filtering bound logger, loggers cached on first use: what structlog's own
    performance guide recommends.
    """
    import structlog
    from asgi_correlation_id import CorrelationIdMiddleware, correlation_id

    configure_plain_structlog()
    access = structlog.get_logger("access")

    class AccessLogMiddleware:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            start = time.perf_counter()
            status = 500

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                headers = dict(scope["headers"])
                client = scope.get("client")
                access.info(
                    "request_completed",
                    request_id=correlation_id.get(),
                    method=scope["method"],
                    path=scope["path"],
                    query=scope["query_string"].decode("latin-1"),
                    status_code=status,
                    duration_ms=round((time.perf_counter() - start) * 1000, 3),
                    client_ip=client[0] if client else None,
                    user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
                )

    app = _routes(FastAPI())
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(CorrelationIdMiddleware)
    return app


def _reqlog(**options: Any) -> ASGIApp:
    import reqlog

    reqlog.configure(output=os.devnull, format="json", service=SERVICE)
    app = _routes(FastAPI())
    app.add_middleware(reqlog.RequestLoggingMiddleware, **options)
    # Starlette builds the middleware stack on the first request; build it now so that an
    # option this reqlog does not know fails here, not in the middle of a measurement.
    app.build_middleware_stack()
    return app


def reqlog_defaults() -> ASGIApp:
    """reqlog as the README sets it up: configure() and the middleware, nothing else.

    ``service`` is set so that the line has the floor's fields; the rest is reqlog's defaults:
    redaction, the background writer, asgi-correlation-id's context variable, the 500 with its
    ID, and OpenTelemetry trace context when opentelemetry-api is installed (as in .venv).
    """
    return _reqlog()


def reqlog_full() -> ASGIApp:
    """reqlog capturing request and response bodies and headers (redacted, capped)."""
    return _reqlog(log_request_body=True, log_response_body=True, log_headers=True)


#: Name -> (builder, what it is), in the order of the tables.
CONTENDERS: dict[str, tuple[Callable[[], ASGIApp], str]] = {
    "bare": (bare, "bare FastAPI, no request logging"),
    "floor": (floor, "FLOOR: cheapest honest middleware, reqlog's line (bench/floor.py)"),
    "article": (article, "the article: 2x BaseHTTPMiddleware + python-json-logger"),
    "recipe": (recipe, "best public recipe: asgi-correlation-id + pure-ASGI structlog/orjson"),
    "reqlog": (reqlog_defaults, "reqlog defaults"),
    "reqlog_full": (reqlog_full, "reqlog + bodies and headers captured"),
}


def build(name: str) -> ASGIApp:
    """The contender's app, with its logging configured for this process."""
    try:
        builder = CONTENDERS[name][0]
    except KeyError:
        msg = f"unknown contender {name!r}; one of {', '.join(CONTENDERS)}"
        raise SystemExit(msg) from None
    return builder()


def create() -> ASGIApp:
    """uvicorn factory: ``uvicorn --factory bench.apps:create`` with ``BENCH_APP=<name>``."""
    return build(os.environ.get("BENCH_APP", "bare"))


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(f"{k}: {v[1]}" for k, v in CONTENDERS.items()), file=sys.stdout)
