"""RequestLoggingMiddleware: pure ASGI, one canonical access event per request."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
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
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reqlog import _config, bodies, context, output

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
        log_request_body: bool = False,
        log_response_body: bool = False,
        body_max_bytes: int = 4096,
        log_headers: bool = False,
        capture_paths: Iterable[str] = (),
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
        # None unless some capture is on: then the request path is exactly as without it.
        self._capture = bodies.CaptureOptions.create(
            log_request_body=log_request_body,
            log_response_body=log_response_body,
            body_max_bytes=body_max_bytes,
            log_headers=log_headers,
            paths=_parse_excludes(capture_paths, "capture_paths"),
        )
        self._clock = clock
        self._sentry = get_sentry_extension()
        # request_completed replaces the server's access line.
        logging.getLogger("uvicorn.access").disabled = True
        _config.adopt_server_loggers()

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
        if scope_type != "http":
            if scope_type == "websocket":
                await self._websocket(scope, receive, send)
            elif scope_type == "lifespan":
                await self.app(scope, receive, _flush_at_shutdown(send))
            else:
                await self.app(scope, receive, send)
            return
        # Everything below runs for every request: it is kept to locals and closures, with as
        # few calls as it takes (bench/ measures it against the bare app).
        start = self._clock()
        scope, request_id, user_agent = self._identify(scope)
        path = scope["path"]
        excluded = self._excluded(path)
        clock = self._clock
        header_name = self._header_key
        request_id_bytes = request_id.encode("latin-1")
        status_code = 0
        response_started = False
        response_complete = False
        response_bytes = 0
        end: float | None = None
        disconnected = False
        send_failed = False
        app_at_entry = scope.get("app")
        root_path_at_entry = scope.get("root_path", "")
        capture: bodies.Capture | None = None
        if self._capture is not None and not excluded and self._capture.applies(path):
            capture = bodies.Capture(self._capture, scope)
            receive = capture.wrap_receive(receive)
            send = capture.wrap_send(send)

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
                message = _with_header(message, header_name, request_id_bytes)
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
            fields = {
                "method": scope["method"],
                "path": path,
                "route": _route_template(scope, root_path_at_entry, app_at_entry or self.app),
                "query": scope["query_string"].decode("latin-1"),
                "status_code": status_code,
                "duration_ms": round((finished - start) * 1000.0, 3),
                "user_agent": user_agent,
                "http_version": scope.get("http_version"),
                "response_bytes": response_bytes,
            }
            if capture is not None:
                fields.update(capture.fields())
            return fields

        bound = self._enter(scope, request_id)
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            if excluded:
                raise
            if send_failed or (disconnected and not response_complete):
                self._disconnected(access_fields(), response_started)
                raise
            traceback = exc.__traceback__
            if not response_started:
                await _send_error_response(app_at_entry, exc, scope, receive, send_wrapper)
            self._failed(
                exc.with_traceback(traceback), access_fields(), response_started, response_complete
            )
            raise
        except BaseException as exc:
            if not excluded and _is_cancellation(exc):
                self._disconnected(access_fields(), response_started)
            raise
        else:
            if excluded:
                return
            if not response_complete and (disconnected or send_failed):
                self._disconnected(access_fields(), response_started)
                return
            fields = access_fields()
            if not response_complete:
                fields["response_incomplete"] = True
            self._completed(fields)
        finally:
            _leave(bound)

    def _enter(self, scope: Scope, request_id: str) -> _Bound:
        """Bind the request's context: reqlog's, asgi-correlation-id's (and Sentry's) ID."""
        ctx = context.RequestContext(
            {"request_id": request_id, "client_ip": self._peer_ip(scope)}, scope
        )
        bound = (
            context.structlog_snapshot(),
            context.CURRENT.set(ctx),
            correlation_id.set(request_id),
        )
        self._sentry(request_id)
        return bound

    def _identify(self, scope: Scope) -> tuple[Scope, str, str | None]:
        """The request ID (inbound when valid, else new) and the user agent, in one header pass.

        When the ID is new, the scope is copied with the header replaced: the app reads the ID
        from the request like any other header, and a rejected value must not reach it either.
        """
        header_key = self._header_key
        inbound: bytes | None = None
        user_agent: str | None = None
        headers = scope["headers"]
        for name, value in headers:
            if name == header_key:
                inbound = value
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        if inbound is not None and len(inbound) <= _MAX_ID_LENGTH:
            candidate = inbound.decode("latin-1")
            if self._accept_id(candidate):
                return scope, candidate, user_agent
        request_id = self._generator()
        if inbound is None:
            new_headers = [*headers, (header_key, request_id.encode("latin-1"))]
        else:
            new_headers = [(k, v) for k, v in headers if k != header_key]
            new_headers.append((header_key, request_id.encode("latin-1")))
        return {**scope, "headers": new_headers}, request_id, user_agent

    def _peer_ip(self, scope: Scope) -> str | None:
        peer = scope.get("client")
        host = peer[0] if peer else None
        if not self._trusted or host is None:
            return host
        forwarded = [v for k, v in scope["headers"] if k == b"x-forwarded-for"]
        return self._client_ip(host, forwarded)

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

    def _disconnected(self, fields: dict[str, Any], started: bool) -> None:
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
        fields["error_type"] = type(exc).__qualname__
        fields["error_message"] = str(exc)
        fields["exc_info"] = exc
        _config.emit_access(logging.ERROR, "request_failed", fields)

    # -- websockets ----------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = self._clock()
        scope, request_id, user_agent = self._identify(scope)
        bound = self._enter(scope, request_id)
        try:
            await self._websocket_session(
                scope, receive, send, start, request_id.encode("latin-1"), user_agent
            )
        finally:
            _leave(bound)

    async def _websocket_session(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        start: float,
        request_id: bytes,
        user_agent: str | None,
    ) -> None:
        header_name = self._header_key
        accepted = False
        close_code: int | None = None
        closed_by: str | None = None
        root_path_at_entry = scope.get("root_path", "")
        app_at_entry = scope.get("app") or self.app

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
                    "route": _route_template(scope, root_path_at_entry, app_at_entry),
                    "accepted": accepted,
                    "close_code": close_code if close_code is not None else 1006,
                    "closed_by": closed_by,
                    "duration_ms": round((self._clock() - start) * 1000.0, 3),
                    "user_agent": user_agent,
                }
                if error is not None and not _is_cancellation(error):
                    _mark_logged(error)
                    fields["error_type"] = type(error).__qualname__
                    fields["error_message"] = str(error)
                    fields["exc_info"] = error
                    _config.emit_access(logging.ERROR, "websocket_failed", fields)
                else:
                    _config.emit_access(logging.INFO, "websocket_closed", fields)


# --- helpers ------------------------------------------------------------------------------------


_Bound = tuple[
    contextvars.Context | None,
    contextvars.Token[context.RequestContext | None],
    contextvars.Token[str | None],
]


def _leave(bound: _Bound) -> None:
    """Undo ``_enter``: nothing of the request stays in the context, structlog's included."""
    snapshot, ctx_token, cid_token = bound
    correlation_id.reset(cid_token)
    context.CURRENT.reset(ctx_token)
    context.structlog_restore(snapshot)


def _flush_at_shutdown(send: Send) -> Send:
    """Wrap a lifespan ``send``: flush the logs before the server hears shutdown is complete.

    The server may exit right after (uvicorn re-raises SIGTERM, which skips atexit), so this
    is the last moment the background writer is sure to get: the flush is bounded in time,
    and the server's last lines after it are written synchronously.
    """

    async def send_wrapper(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            _config.current_output().write_through(timeout=output.SHUTDOWN_FLUSH_TIMEOUT_S)
        await send(message)

    return send_wrapper


def _with_header(message: Message, name: bytes, value: bytes) -> Message:
    """The message with header ``name`` added, unless the app set it (names are lower case in
    ASGI responses); a copy: the app's own header list is left alone."""
    headers = message.get("headers") or ()
    for key, _ in headers:
        if key == name:
            return message
    return {**message, "headers": [*headers, (name, value)]}


def _route_template(scope: Scope, root_path_at_entry: str, app: Any = None) -> str | None:
    """The matched route as a template (``/users/{uid}/posts/{pid}``), or ``None`` (404).

    Routers record only the innermost route in ``scope["route"]``; the mounts crossed on the
    way show only as the growth of ``root_path``, with actual values (``/users/42``). So the
    mount part is found again by walking the mounts from the app the request entered, which
    costs a few regex matches and only on requests that went through a mount.
    """
    route = scope.get("route")
    root_path = scope.get("root_path", "")
    consumed = len(root_path) - len(root_path_at_entry)
    prefix = ""
    mount: Mount | None = None
    if consumed > 0 and root_path.startswith(root_path_at_entry):
        found = _mount_templates(app, scope.get("path", "")[len(root_path_at_entry) :], consumed)
        if found is None:  # not Starlette mounts: name them by their values, as matched
            prefix = root_path[len(root_path_at_entry) :]
        else:
            prefix, mount = found
    if route is None or isinstance(route, Mount):
        if isinstance(route, Mount) and route is not mount:
            prefix, mount = prefix + route.path, route
        if mount is not None and not mount.routes:
            # A plain ASGI app or static files: they say nothing about what matched.
            return prefix + "/{path}"
        # Not found (here or in a mounted app), unless the framework names it in the scope
        # (Litestar: ``path_template``).
        template = scope.get("path_template")
        return prefix + template if isinstance(template, str) and mount is None else None
    # FastAPI keeps included routers unflattened: their route knows only its own path, the
    # full template (prefixes included) is on FastAPI's effective route context.
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    template = getattr(effective, "path_format", None) or getattr(route, "path_format", None)
    if not isinstance(template, str):
        template = getattr(route, "path", None)
    return prefix + template if isinstance(template, str) else None


def _mount_templates(app: Any, path: str, consumed: int) -> tuple[str, Mount | None] | None:
    # Starlette's Router takes the first Mount whose pattern matches; the same walk here.
    template = ""
    mount: Mount | None = None
    routes = getattr(app, "routes", None)
    while consumed > 0:
        for candidate in routes or ():
            match = candidate.path_regex.match(path) if isinstance(candidate, Mount) else None
            if match is not None:
                break
        else:
            return None
        rest = "/" + match.group("path")
        consumed -= len(path) - len(rest)
        path, mount = rest, candidate
        template += candidate.path
        routes = candidate.routes
    return (template, mount) if consumed == 0 else None


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

    async def closing_send(message: Message) -> None:
        # The exception goes on to the server, which then closes the connection (uvicorn
        # does): say so, or a keep-alive client sends its next request into a closing socket.
        if message["type"] == "http.response.start":
            message = _with_header(message, b"connection", b"close")
        await send(message)

    if app is None or not hasattr(app, "exception_handlers"):
        # Not Starlette: answer as the server would, with the ID.
        await PlainTextResponse("Internal Server Error", status_code=500)(
            scope, receive, closing_send
        )
        return
    handler = None
    for key, value in app.exception_handlers.items():
        if key in (500, Exception):
            handler = value
    debug = bool(getattr(app, "debug", False))
    outer = getattr(app, "middleware_stack", None)
    if handler is not None and isinstance(outer, ServerErrorMiddleware):
        # The outer ServerErrorMiddleware calls the handler before it checks whether a
        # response started: without this, a handler that reports errors would run twice.
        if outer.handler is not None and not isinstance(outer.handler, _SkipAnswered):
            outer.handler = _SkipAnswered(outer.handler)
        if isinstance(outer.handler, _SkipAnswered):
            handler = outer.handler.handler

    async def reraise(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    try:
        await ServerErrorMiddleware(reraise, handler=handler, debug=debug)(
            scope, receive, closing_send
        )
    except Exception as raised:  # noqa: BLE001 - the app's handler must not hide the original
        if raised is not exc:
            # The app's own error handler failed: the server will answer with its own 500.
            _config.current_output().report(
                "error_handler", f"the application's 500 handler raised {raised!r}"
            )
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


def _parse_excludes(
    values: Iterable[str], option: str = "exclude_paths"
) -> tuple[frozenset[str], tuple[str, ...]]:
    if isinstance(values, str):
        values = [values]
    exact: set[str] = set()
    prefixes: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value.startswith("/"):
            msg = f"{option}: paths start with '/', got {value!r}"
            raise ValueError(msg)
        if value.endswith("*"):
            prefixes.append(value[:-1])
        else:
            exact.add(value)
    return frozenset(exact), tuple(prefixes)
