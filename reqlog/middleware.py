"""RequestLoggingMiddleware: pure ASGI, one canonical access event per request."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from asgi_correlation_id.context import correlation_id
from asgi_correlation_id.extensions.sentry import get_sentry_extension
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reqlog import _config, context, output

__all__ = ["RequestLoggingMiddleware", "is_valid_request_id"]

_REQUEST_ID = re.compile(
    r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Whatever a custom validator accepts, a request ID is at most this long and printable ASCII
# without spaces: it goes into every log line and back out in a response header.
_MAX_ID_LENGTH = 128
_SAFE_ID = re.compile(r"[\x21-\x7e]{1,128}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# How many X-Forwarded-For hops are walked at most: a hostile client can send thousands.
_MAX_FORWARDED_HOPS = 32
# Starlette's client-gone exception on servers speaking ASGI 2.4 is an OSError.
_STATUS_CLIENT_CLOSED = 499


def is_valid_request_id(value: str) -> bool:
    """The default validator: a UUID (with or without hyphens) or 32 hex digits, nothing else.

    ``uuid.UUID()`` is looser (braces, ``urn:uuid:`` prefixes, surrounding whitespace and a
    leading newline all parse), so a regular expression matches the whole value instead.
    """
    return len(value) <= 36 and _REQUEST_ID.fullmatch(value) is not None


# Request IDs are UUID4s made 256 at a time from one os.urandom() call: building a
# uuid.UUID object per request cost more than the rest of the ID handling.
_ID_BATCH = 256
_spare_ids: list[str] = []


def _new_request_id() -> str:
    try:
        return _spare_ids.pop()
    except IndexError:
        pass
    raw = bytearray(os.urandom(16 * _ID_BATCH))
    for i in range(0, len(raw), 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = raw.hex()
    _spare_ids.extend(digits[i : i + 32] for i in range(0, len(digits), 32))
    return _spare_ids.pop()


if hasattr(os, "register_at_fork"):
    # A forked worker must not hand out the IDs its parent also holds.
    os.register_at_fork(after_in_child=_spare_ids.clear)


def _mark_logged(exc: BaseException) -> None:
    # Lets reqlog's stdlib handler drop the server's own "Exception in ASGI application"
    # report of an exception that already has its request_failed event.
    with contextlib.suppress(AttributeError, TypeError):
        exc._reqlog_logged = True  # type: ignore[attr-defined]


class RequestLoggingMiddleware:
    """Logs one access event per request and binds the request's context for every other event.

    Pure ASGI: it wraps ``send`` and ``receive`` and keeps every request's state in locals, so
    streaming responses flow untouched and context variables set here are seen by the app.

    >>> app.add_middleware(reqlog.RequestLoggingMiddleware, trusted_proxies=["10.0.0.0/8"])
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        request_id_header: str = "X-Request-ID",
        request_id_validator: Callable[[str], bool] | None = is_valid_request_id,
        request_id_generator: Callable[[], str] = _new_request_id,
        trusted_proxies: Iterable[str] = (),
        exclude_paths: Iterable[str] = (),
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        if not isinstance(request_id_header, str) or not _TOKEN.fullmatch(request_id_header):
            msg = f"request_id_header: not a valid header name: {request_id_header!r}"
            raise ValueError(msg)
        if request_id_validator is not None and not callable(request_id_validator):
            msg = f"request_id_validator: expected a callable or None, got {request_id_validator!r}"
            raise ValueError(msg)
        if not callable(request_id_generator):
            msg = f"request_id_generator: expected a callable, got {request_id_generator!r}"
            raise ValueError(msg)
        self.request_id_header = request_id_header
        self._header_key = request_id_header.lower().encode("latin-1")
        self._validator = request_id_validator
        self._generator = request_id_generator
        self._trusted = _parse_networks(trusted_proxies)
        self._is_trusted = functools.lru_cache(maxsize=4096)(self._check_trusted)
        self._exclude_exact, self._exclude_prefixes = _parse_excludes(exclude_paths)
        self._clock = clock
        self._sentry = get_sentry_extension()
        self._log = _config.access_logger()
        # request_completed replaces the server's access line.
        logging.getLogger("uvicorn.access").disabled = True

    # -- request ID and client -----------------------------------------------------------------

    def _accept_id(self, value: str) -> bool:
        if not _SAFE_ID.fullmatch(value):
            return False
        return self._validator is None or bool(self._validator(value))

    def _check_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def _client_ip(self, peer: str | None, forwarded: list[bytes]) -> str | None:
        if peer is None or not forwarded or not self._is_trusted(peer):
            return peer
        hops = b",".join(forwarded).decode("latin-1").split(",")[-_MAX_FORWARDED_HOPS:]
        client = peer
        for hop in reversed(hops):
            try:
                ip = ipaddress.ip_address(hop.strip())
            except ValueError:
                break  # not an address: the last believable hop stands
            client = str(ip)
            if not self._is_trusted(client):
                break
        return client

    # -- the request ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan":
                send = _flush_at_shutdown(send)
            await self.app(scope, receive, send)
            return

        start = self._clock()
        header_key = self._header_key
        inbound: bytes | None = None
        user_agent: str | None = None
        forwarded: list[bytes] = []
        for name, value in scope["headers"]:
            if name == header_key:
                inbound = value
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"x-forwarded-for" and self._trusted:
                forwarded.append(value)

        request_id: str | None = None
        if inbound is not None and len(inbound) <= _MAX_ID_LENGTH:
            candidate = inbound.decode("latin-1")
            if self._accept_id(candidate):
                request_id = candidate
        if request_id is None:
            request_id = self._generator()
            # The app reads the ID from the request like any other header; a rejected value
            # must not reach it either.
            headers = [(k, v) for k, v in scope["headers"] if k != header_key]
            headers.append((header_key, request_id.encode("latin-1")))
            scope = {**scope, "headers": headers}
        request_id_bytes = request_id.encode("latin-1")

        peer = scope.get("client")
        client_ip = self._client_ip(peer[0] if peer else None, forwarded)
        fields: dict[str, Any] = {"request_id": request_id, "client_ip": client_ip}
        ctx = context.RequestContext(fields, scope)

        snapshot = context.structlog_snapshot()
        ctx_token = context.enter(ctx)
        cid_token = correlation_id.set(request_id)
        self._sentry(request_id)
        try:
            if scope_type == "http":
                await self._http(scope, receive, send, ctx, start, request_id_bytes, user_agent)
            else:
                await self._websocket(
                    scope, receive, send, ctx, start, request_id_bytes, user_agent
                )
        finally:
            correlation_id.reset(cid_token)
            context.leave(ctx_token)
            context.structlog_restore(snapshot)

    async def _http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: context.RequestContext,
        start: float,
        request_id: bytes,
        user_agent: str | None,
    ) -> None:
        clock = self._clock
        header_name = self._header_key
        status_code = 0
        response_started = False
        response_complete = False
        response_bytes = 0
        end: float | None = None
        disconnected = False
        send_failed = False
        app_at_entry = scope.get("app")
        root_path_at_entry = scope.get("root_path", "")

        async def receive_wrapper() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code, response_started, response_complete, response_bytes, end
            nonlocal send_failed
            message_type = message["type"]
            if message_type == "http.response.start":
                message = _with_header(message, header_name, request_id)
                status_code = message["status"]
                response_started = True
            try:
                await send(message)
            except OSError:
                send_failed = True
                raise
            if message_type == "http.response.body":
                response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    response_complete = True
                    end = clock()
            elif message_type == "http.response.pathsend":
                response_complete = True
                end = clock()

        def access_fields() -> dict[str, Any]:
            finished = end if end is not None else clock()
            return {
                "method": scope["method"],
                "path": scope["path"],
                "route": _route_template(scope, root_path_at_entry),
                "query": scope.get("query_string", b"").decode("latin-1"),
                "status_code": status_code,
                "duration_ms": round((finished - start) * 1000.0, 3),
                "user_agent": user_agent,
                "http_version": scope.get("http_version"),
                "response_bytes": response_bytes,
            }

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            if send_failed or (disconnected and not response_complete):
                self._disconnected(scope, ctx, access_fields(), response_started)
                raise
            traceback = exc.__traceback__
            if not response_started:
                await _send_error_response(app_at_entry, exc, scope, receive, send_wrapper)
            self._failed(
                exc.with_traceback(traceback), access_fields(), response_started, response_complete
            )
            raise
        except BaseException as exc:
            if _is_cancellation(exc):
                self._disconnected(scope, ctx, access_fields(), response_started)
            raise
        if self._excluded(scope["path"]):
            return
        if not response_complete and (disconnected or send_failed):
            self._disconnected(scope, ctx, access_fields(), response_started)
            return
        fields = access_fields()
        if not response_complete:
            fields["response_incomplete"] = True
        self._completed(fields)

    # -- events --------------------------------------------------------------------------------

    def _excluded(self, path: str) -> bool:
        return path in self._exclude_exact or (
            bool(self._exclude_prefixes) and path.startswith(self._exclude_prefixes)
        )

    def _completed(self, fields: dict[str, Any], event: str = "request_completed") -> None:
        settings = _config.settings()
        slow = False
        if settings.slow.enabled:
            threshold = settings.slow.threshold(fields["route"])
            if threshold is not None and fields["duration_ms"] >= threshold:
                slow = True
                fields["slow"] = True
                fields["slow_threshold_ms"] = threshold
        level = settings.status_levels(fields["status_code"], slow)
        _config.emit_access(level, event, fields)

    def _disconnected(
        self, scope: Scope, ctx: context.RequestContext, fields: dict[str, Any], started: bool
    ) -> None:
        if self._excluded(scope["path"]):
            return
        if not started:
            fields["status_code"] = _STATUS_CLIENT_CLOSED
        fields["outcome"] = "client_disconnected"
        fields["response_incomplete"] = True
        self._completed(fields)

    def _failed(
        self, exc: BaseException, fields: dict[str, Any], started: bool, complete: bool
    ) -> None:
        # An exception after the response started keeps the status that was sent.
        _mark_logged(exc)
        if not started or not fields["status_code"]:
            fields["status_code"] = 500
        elif not complete:
            fields["response_incomplete"] = True
        self._log.error(
            "request_failed",
            error_type=type(exc).__qualname__,
            error_message=str(exc),
            exc_info=exc,
            **fields,
        )

    # -- websockets ----------------------------------------------------------------------------

    async def _websocket(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: context.RequestContext,
        start: float,
        request_id: bytes,
        user_agent: str | None,
    ) -> None:
        header_name = self._header_key
        accepted = False
        close_code: int | None = None
        closed_by: str | None = None
        root_path_at_entry = scope.get("root_path", "")

        async def receive_wrapper() -> Message:
            nonlocal close_code, closed_by
            message = await receive()
            if message["type"] == "websocket.disconnect" and closed_by is None:
                close_code = message.get("code", 1005)
                closed_by = "client"
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal accepted, close_code, closed_by
            message_type = message["type"]
            if message_type == "websocket.accept":
                message = _with_header(message, header_name, request_id)
                accepted = True
            elif message_type == "websocket.close" and closed_by is None:
                close_code = message.get("code", 1000)
                closed_by = "server"
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if not self._excluded(scope["path"]):
                fields: dict[str, Any] = {
                    "path": scope["path"],
                    "route": _route_template(scope, root_path_at_entry),
                    "accepted": accepted,
                    "close_code": close_code if close_code is not None else 1006,
                    "closed_by": closed_by,
                    "duration_ms": round((self._clock() - start) * 1000.0, 3),
                    "user_agent": user_agent,
                }
                if error is not None and not _is_cancellation(error):
                    _mark_logged(error)
                    self._log.error(
                        "websocket_failed",
                        error_type=type(error).__qualname__,
                        error_message=str(error),
                        exc_info=error,
                        **fields,
                    )
                else:
                    self._log.info("websocket_closed", **fields)


# --- helpers ------------------------------------------------------------------------------------


def _flush_at_shutdown(send: Send) -> Send:
    """Wrap a lifespan ``send``: flush the logs before the server hears shutdown is complete.

    The server may exit right after (uvicorn re-raises SIGTERM, which skips atexit), so this
    is the last moment the background writer is sure to get. The flush is bounded in time.
    """

    async def send_wrapper(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            _config.current_output().flush(timeout=output.SHUTDOWN_FLUSH_TIMEOUT_S)
        await send(message)

    return send_wrapper


def _with_header(message: Message, name: bytes, value: bytes) -> Message:
    headers = list(message.get("headers") or ())
    for key, _ in headers:
        if key.lower() == name:
            return message
    headers.append((name, value))
    return {**message, "headers": headers}


def _route_template(scope: Scope, root_path_at_entry: str) -> str | None:
    route = scope.get("route")
    if route is None:
        return None
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    root_path = scope.get("root_path", "")
    prefix = (
        root_path[len(root_path_at_entry) :] if root_path.startswith(root_path_at_entry) else ""
    )
    if isinstance(route, Mount):
        # The mounted app did not say which of its routes matched (static files, a plain ASGI
        # app): name the mount. Its matched path is already in the root path.
        return (prefix or template) + "/{path}"
    return prefix + template


async def _send_error_response(
    app: Any, exc: Exception, scope: Scope, receive: Receive, send: Send
) -> None:
    """Send the 500 the application itself would send, through reqlog's ``send``.

    Starlette's ``ServerErrorMiddleware`` sits outside every user middleware and writes the
    500 straight to the server, where no request-ID header can be added. So reqlog builds that
    same response here (the app's 500/``Exception`` handler, or the debug page in debug mode)
    by running Starlette's own ``ServerErrorMiddleware`` on the exception; the outer one then
    sees a response already started and only re-raises.
    """
    handler = None
    debug = False
    if app is not None and hasattr(app, "exception_handlers"):
        for key, value in app.exception_handlers.items():
            if key in (500, Exception):
                handler = value
        debug = bool(getattr(app, "debug", False))

    async def reraise(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    try:
        if app is None or not hasattr(app, "exception_handlers"):
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
        else:
            await ServerErrorMiddleware(reraise, handler=handler, debug=debug)(scope, receive, send)
    except Exception as raised:  # noqa: BLE001
        if raised is not exc:
            # The app's own error handler failed: the server will answer with its own 500.
            _config.current_output().report(
                "error_handler", f"the application's 500 handler raised {raised!r}"
            )


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, asyncio.CancelledError):
        return True
    try:
        import anyio

        return isinstance(exc, anyio.get_cancelled_exc_class())
    except Exception:  # noqa: BLE001 - outside an async backend
        return False


def _parse_networks(
    values: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            msg = (
                f"trusted_proxies: {value!r} is not an IP address or CIDR network "
                "(examples: '10.0.0.1', '10.0.0.0/8', 'fd00::/8')"
            )
            raise ValueError(msg) from None
    return tuple(networks)


def _parse_excludes(values: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    if isinstance(values, str):
        values = [values]
    exact: set[str] = set()
    prefixes: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value.startswith("/"):
            msg = f"exclude_paths: paths start with '/', got {value!r}"
            raise ValueError(msg)
        if value.endswith("*"):
            prefixes.append(value[:-1])
        else:
            exact.add(value)
    return frozenset(exact), tuple(prefixes)
