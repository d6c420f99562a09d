"""RequestLoggingMiddleware: pure ASGI, one canonical access event per request."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from asgi_correlation_id.context import correlation_id
from asgi_correlation_id.extensions.sentry import get_sentry_extension
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reqlog import _config, _proxies, _starlette, bodies, context, output

__all__ = ["RequestLoggingMiddleware", "is_valid_request_id"]

_REQUEST_ID = re.compile(
    r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Whatever a custom validator accepts, a request ID is at most this long and printable ASCII
# without spaces: it goes into every log line and back out in a response header.
_MAX_ID_LENGTH = 128
_SAFE_ID = re.compile(r"[\x21-\x7e]{1,128}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# The status logged for a request whose client left before any response started (nginx's
# "client closed request"), and for one the server cancelled first (uvicorn and hypercorn
# answer it with a 500 when they still can).
_STATUS_CLIENT_CLOSED = 499
_STATUS_SERVER_CANCELLED = 500
# The scope key the outermost RequestLoggingMiddleware sets: a second one further in (added
# again by a router or a mounted app) passes the request through.
_LOGGED: Final = "reqlog.logged"
# A request still running after one to two of these intervals gets its disconnect watch (see
# _InFlight): cheaper than a timer per request, and a request that ends sooner needs none.
WATCH_INTERVAL_S: Final = 0.25
# What the disconnect watch reads ahead of an app that has not read the request body yet, at
# most: beyond it, the server's own flow control holds the client back, as it would without us.
READ_AHEAD_BYTES: Final = 65536
# At lifespan shutdown, how long to wait for requests the server has just cancelled to write
# their access events before the last flush.
SETTLE_TIMEOUT_S: Final = 1.0
_get_running_loop = asyncio.get_running_loop


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


class _FailsAtStartup(type):
    """Metaclass: invalid options fail the application's startup, not its first request.

    Starlette creates the user's middleware lazily, on the first ASGI call it gets; with the
    lifespan protocol that call is the startup, and an exception raised there, before the app
    has spoken the protocol, reads to uvicorn's default ``--lifespan auto`` as "lifespan
    unsupported": the server starts and answers every request with a 500. So when Starlette
    is building its stack that way, the ``ValueError`` is handed to an app that reports it as
    ``lifespan.startup.failed``, which every server treats as a failed start. Created directly,
    the middleware raises the ``ValueError`` as any constructor does.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValueError as exc:
            if not _starlette.building_lazily(1):
                raise
            app: ASGIApp = args[0] if args else kwargs["app"]
            return _FailedStartup(app, exc)


class _FailedStartup:
    """Stands in for a middleware whose options are invalid: startup fails, requests raise."""

    def __init__(self, app: ASGIApp, error: ValueError) -> None:
        self.app = app
        self.message = f"reqlog.RequestLoggingMiddleware: {error}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": self.message})
                return
        # No lifespan (uvicorn --lifespan off): the first request is the first moment.
        raise ValueError(self.message)


class RequestLoggingMiddleware(metaclass=_FailsAtStartup):
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
        forwarded_header: str = "X-Forwarded-For",
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
        if not callable(clock):
            msg = f"clock: expected a callable, got {clock!r}"
            raise ValueError(msg)
        self.request_id_header = request_id_header
        self._header_key = request_id_header.lower().encode("latin-1")
        self._validator = request_id_validator
        self._generator = request_id_generator
        resolver = _proxies.ProxyResolver(trusted_proxies, forwarded_header)
        self._proxies = resolver if resolver else None
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
        # The requests in flight on the event loop this middleware last served (see _InFlight).
        self._in_flight: _InFlight | None = None
        self._warned_nested = False
        # request_completed replaces the server's access line.
        logging.getLogger("uvicorn.access").disabled = True
        _config.adopt_server_loggers()

    # -- request ID and client -----------------------------------------------------------------

    def _accept_id(self, value: str) -> bool:
        if not _SAFE_ID.fullmatch(value):
            return False
        return self._validator is None or bool(self._validator(value))

    # -- the request ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http":
            if scope_type == "websocket":
                await self._websocket(scope, receive, send)
            elif scope_type == "lifespan":
                await self.app(scope, receive, _flush_at_shutdown(send, self._settle))
            else:
                await self.app(scope, receive, send)
            return
        if _LOGGED in scope:
            await self._nested(scope, receive, send)
            return
        # Everything below runs for every request: it is kept to locals and closures, with as
        # few calls as it takes (bench/ measures it against the bare app).
        start = self._clock()
        sent_scope = scope
        scope, request_id, rejected, user_agent = self._identify(scope)
        scope[_LOGGED] = True
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
        # The client was seen to go: by the app's receive() or by the read-ahead (see watch()).
        disconnected = False
        gone_before_start = False
        send_failed = False
        # The app raised: its 500 goes out through send_wrapper, request_failed is the event.
        failing = False
        reading = 0  # the app's receive() calls in progress
        ahead: _ReadAhead | None = None
        app_at_entry = scope.get("app")
        root_path_at_entry = scope.get("root_path", "")
        peer = scope.get("client")
        client_ip = peer[0] if peer else None
        forwarded: _proxies.Client | None = None
        if self._proxies is not None:
            forwarded = self._proxies.resolve(peer, scope["headers"])
            if forwarded is not None:
                client_ip = forwarded.ip
        capture: bodies.Capture | None = None
        if self._capture is not None and not excluded and self._capture.applies(path):
            capture = bodies.Capture(
                self._capture, _as_sent(sent_scope, header_name, request_id_bytes)
            )
            receive = capture.wrap_receive(receive)
            send = capture.wrap_send(send)

        async def receive_wrapper() -> Message:
            nonlocal disconnected, reading
            if ahead is not None:
                message = await ahead.receive()
            else:
                reading += 1
                try:
                    message = await receive()
                finally:
                    reading -= 1
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        def watch() -> None:
            # Called on the event loop once the request has run a while: read ahead of an app
            # that is not reading, so that a client that leaves is seen even by an app that
            # never calls receive(). Never while the app is inside receive() (it will see the
            # disconnect itself), nor for a request that expects a "100 Continue" (the server
            # would send it on our first receive(), inviting a body the app may not want).
            nonlocal ahead
            if (
                ahead is None
                and not reading
                and not response_complete
                and not _expects_continue(scope)
            ):
                ahead = _ReadAhead(receive)

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code, response_started, response_complete, response_bytes, end
            nonlocal send_failed, gone_before_start
            message_type = message["type"]
            final = False
            if message_type == "http.response.start":
                message = _with_header(message, header_name, request_id_bytes)
                status_code = message["status"]
                response_started = True
                if disconnected or (ahead is not None and ahead.disconnected):
                    gone_before_start = True
            elif message_type == "http.response.body":
                final = not message.get("more_body", False)
            elif message_type == "http.response.pathsend":
                final = True
            if final and ahead is not None:
                await ahead.settle()
            try:
                await send(message)
            except OSError:
                send_failed = True
                raise
            if message_type == "http.response.body":
                response_bytes += len(message.get("body", b""))
            if final:
                # The access event belongs to the response: it is written now, with the time
                # of the last byte, before any background task the app runs after it.
                response_complete = True
                end = clock()
                if not (excluded or failing):
                    if disconnected or (ahead is not None and ahead.disconnected):
                        self._disconnected(access_fields(), not gone_before_start)
                    else:
                        self._completed(access_fields())

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
            if forwarded is not None:
                _add_forwarded(fields, forwarded)
            if rejected:
                fields["request_id_rejected"] = True
            if capture is not None:
                fields.update(capture.fields())
            return fields

        bound = self._enter(scope, request_id, client_ip)
        # Registered with this event loop's requests in flight: for the disconnect watch, and
        # for the wait at shutdown. Inline, it runs for every request.
        inflight: _InFlight | None = None
        if not excluded:
            try:
                loop = _get_running_loop()
            except RuntimeError:  # not asyncio (trio): no watch
                pass
            else:
                inflight = self._in_flight
                if inflight is None or inflight.loop is not loop:
                    inflight = self._in_flight = _InFlight(loop)
                inflight.requests.add(watch)
                if inflight.timer is None:
                    inflight.arm()
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            if excluded:
                raise
            if response_complete:
                # After the last byte: a background task failed. The access event stands.
                self._background_failed(exc, scope, path)
                raise
            gone = disconnected or (ahead is not None and ahead.disconnected)
            if send_failed or gone:
                self._disconnected(access_fields(), response_started and not gone_before_start)
                raise
            traceback = exc.__traceback__
            if not response_started:
                failing = True
                await _send_error_response(app_at_entry, exc, scope, receive, send_wrapper)
            self._failed(
                exc.with_traceback(traceback), access_fields(), response_started, response_complete
            )
            raise
        except BaseException as exc:
            if not excluded and _is_cancellation(exc):
                # The server cancelled the request's task: at a graceful-shutdown timeout, or
                # (some servers) when the client left.
                _mark_logged(exc)
                if response_complete:
                    self._background_failed(exc, scope, path)
                elif disconnected or (ahead is not None and ahead.disconnected):
                    self._disconnected(access_fields(), response_started and not gone_before_start)
                else:
                    self._cancelled(access_fields(), response_started)
            raise
        else:
            if excluded or response_complete:
                return
            fields = access_fields()
            if send_failed or disconnected or (ahead is not None and ahead.disconnected):
                self._disconnected(fields, response_started and not gone_before_start)
                return
            fields["response_incomplete"] = True
            self._completed(fields)
        finally:
            if ahead is not None:
                ahead.stop()
            if inflight is not None:
                requests = inflight.requests
                requests.discard(watch)
                if inflight.waiter is not None and not requests:
                    inflight.waiter.set()  # the shutdown is waiting for the last one
            _leave(bound)

    def _enter(self, scope: Scope, request_id: str, client_ip: str | None) -> _Bound:
        """Bind the request's context: reqlog's, asgi-correlation-id's (and Sentry's) ID."""
        ctx = context.RequestContext({"request_id": request_id, "client_ip": client_ip}, scope)
        bound = (
            context.structlog_snapshot(),
            context.CURRENT.set(ctx),
            correlation_id.set(request_id),
        )
        self._sentry(request_id)
        return bound

    def _identify(self, scope: Scope) -> tuple[Scope, str, bool, str | None]:
        """The request ID, whether an inbound one was rejected, and the user agent, in one pass
        over the headers.

        One rule for the app, the log and the echoed header: the last request-ID header
        counts, and the app sees exactly the ID that is logged. When the ID is new (none sent,
        or the one sent rejected) or the client sent several, the scope is copied with that
        one header in their place: a rejected or duplicate value never reaches the app.
        """
        header_key = self._header_key
        inbound: bytes | None = None
        seen = 0
        user_agent: str | None = None
        headers = scope["headers"]
        for name, value in headers:
            if name == header_key:
                inbound = value
                seen += 1
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        if inbound is not None and len(inbound) <= _MAX_ID_LENGTH:
            candidate = inbound.decode("latin-1")
            if self._accept_id(candidate):
                if seen == 1:
                    return scope, candidate, False, user_agent
                new_headers = _replace_header(headers, header_key, inbound)
                return {**scope, "headers": new_headers}, candidate, False, user_agent
        request_id = self._generator()
        value = request_id.encode("latin-1")
        if inbound is None:
            new_headers = [*headers, (header_key, value)]
        else:
            new_headers = _replace_header(headers, header_key, value)
        return {**scope, "headers": new_headers}, request_id, inbound is not None, user_agent

    async def _settle(self) -> None:
        """At lifespan shutdown: give the requests the server just cancelled a moment to log."""
        inflight = self._in_flight
        try:
            loop = _get_running_loop()
        except RuntimeError:  # not asyncio (trio): nothing is registered
            return
        if inflight is not None and inflight.loop is loop:
            await inflight.settled(SETTLE_TIMEOUT_S)

    async def _nested(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A second RequestLoggingMiddleware inside the first: it passes the request through."""
        if not self._warned_nested:
            self._warned_nested = True
            _config.get_logger("reqlog").warning(
                "middleware_added_twice",
                detail=(
                    "RequestLoggingMiddleware is in the stack twice (added again by a router "
                    "or a mounted app?): the outer one logs, this inner one passes requests "
                    "through with its options unused"
                ),
            )
        await self.app(scope, receive, send)

    # -- events --------------------------------------------------------------------------------

    def _excluded(self, path: str) -> bool:
        return path in self._exclude_exact or (
            bool(self._exclude_prefixes) and path.startswith(self._exclude_prefixes)
        )

    def _completed(
        self,
        fields: dict[str, Any],
        event: str = "request_completed",
        min_level: int = logging.NOTSET,
    ) -> None:
        settings = _config.settings()
        slow = False
        if settings.slow.enabled:
            threshold = settings.slow.threshold(fields["route"])
            if threshold is not None and fields["duration_ms"] >= threshold:
                slow = True
                fields["slow"] = True
                fields["slow_threshold_ms"] = threshold
        level = settings.status_levels(fields["status_code"], slow)
        _config.emit_access(level if level >= min_level else min_level, event, fields)

    def _disconnected(self, fields: dict[str, Any], started: bool) -> None:
        if not started:
            fields["status_code"] = _STATUS_CLIENT_CLOSED
        fields["outcome"] = "client_disconnected"
        fields["response_incomplete"] = True
        self._completed(fields)

    def _cancelled(self, fields: dict[str, Any], started: bool) -> None:
        if not started:
            fields["status_code"] = _STATUS_SERVER_CANCELLED
        fields["outcome"] = "server_cancelled"
        fields["response_incomplete"] = True
        self._completed(fields, min_level=logging.WARNING)

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

    def _background_failed(self, exc: BaseException, scope: Scope, path: str) -> None:
        """A background task (run by the app after the last byte) raised or was cancelled."""
        _mark_logged(exc)
        fields: dict[str, Any] = {
            "method": scope["method"],
            "path": path,
            "route": _route_template(scope, scope.get("root_path", ""), None),
            "task": _starlette.background_task_name(exc.__traceback__),
        }
        log = _config.get_logger("reqlog")
        if _is_cancellation(exc):
            log.warning("background_task_cancelled", **fields)
            return
        fields["error_type"] = type(exc).__qualname__
        fields["error_message"] = str(exc)
        log.error("background_task_failed", exc_info=exc, **fields)

    # -- websockets ----------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _LOGGED in scope:
            await self._nested(scope, receive, send)
            return
        start = self._clock()
        scope, request_id, rejected, user_agent = self._identify(scope)
        scope[_LOGGED] = True
        peer = scope.get("client")
        client_ip = peer[0] if peer else None
        forwarded = None
        if self._proxies is not None:
            forwarded = self._proxies.resolve(peer, scope["headers"], ws=True)
            if forwarded is not None:
                client_ip = forwarded.ip
        fields: dict[str, Any] = {}
        if forwarded is not None:
            _add_forwarded(fields, forwarded)
        if rejected:
            fields["request_id_rejected"] = True
        bound = self._enter(scope, request_id, client_ip)
        try:
            await self._websocket_session(
                scope, receive, send, start, request_id.encode("latin-1"), user_agent, fields
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
        extra: dict[str, Any],
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
                    **extra,
                }
                if error is not None and not _is_cancellation(error):
                    _mark_logged(error)
                    fields["error_type"] = type(error).__qualname__
                    fields["error_message"] = str(error)
                    fields["exc_info"] = error
                    _config.emit_access(logging.ERROR, "websocket_failed", fields)
                else:
                    _config.emit_access(logging.INFO, "websocket_closed", fields)


# --- the request lifecycle: disconnects and shutdown --------------------------------------------


class _InFlight:
    """The HTTP requests being served on one event loop, for the disconnect watch and shutdown.

    Each request registers a ``watch`` callable while it runs. One timer per loop, not per
    request (a timer handle cost about 19k instructions to create and cancel, more than the
    rest of the watch together), ticks every ``WATCH_INTERVAL_S`` while requests are in
    flight and calls the watch of every request it already saw on its previous tick: a
    request is watched from between one and two intervals after it started, and a request
    that ends sooner costs a set insertion and removal. The timer stops when no request is in
    flight.
    """

    __slots__ = ("_older", "loop", "requests", "timer", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # Each request adds its watch when it starts and discards it when it ends.
        self.requests: set[Callable[[], None]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self._older: set[Callable[[], None]] = set()
        # Set while the lifespan shutdown waits for the requests in flight to end.
        self.waiter: asyncio.Event | None = None

    def arm(self) -> None:
        # An empty context: the tick belongs to no request.
        tick, context = self._tick, contextvars.Context()
        self.timer = self.loop.call_later(WATCH_INTERVAL_S, tick, context=context)

    def _tick(self) -> None:
        requests = self.requests
        if not requests:
            self.timer = None
            self._older = set()
            return
        self.arm()
        for watch in self._older & requests:
            try:
                watch()
            except Exception as exc:  # noqa: BLE001 - the watch must never break the loop's timer
                _config.current_output().report("watch", f"disconnect watch failed: {exc!r}")
        self._older = set(requests)

    async def settled(self, timeout: float) -> None:
        """Wait until no request is in flight, for at most ``timeout`` seconds."""
        if not self.requests:
            return
        waiter = self.waiter = asyncio.Event()
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self.waiter = None


class _ReadAhead:
    """Reads a request's messages ahead of an app that is not reading, to see the client go.

    The messages are handed back to the app, in order, when it calls ``receive()``; while a
    read is pending, the app waits for that same read instead of calling the server's
    ``receive()`` a second time. At most ``READ_AHEAD_BYTES`` of body are held: past that,
    reading stops until the app reads, and the server's flow control applies as before.
    """

    __slots__ = ("_buffer", "_error", "_held", "_receive", "_task", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._buffer: deque[Message] = deque()
        self._held = 0
        self._error: Exception | None = None
        self.disconnected = False
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while self._held <= READ_AHEAD_BYTES:
                message = await self._receive()
                self._buffer.append(message)
                if message.get("type") == "http.disconnect":
                    self.disconnected = True
                    return
                self._held += len(message.get("body") or b"")
        except Exception as exc:  # noqa: BLE001 - handed to the app's next receive()
            self._error = exc

    async def receive(self) -> Message:
        """The app's ``receive()`` while reading ahead."""
        while True:
            if self._buffer:
                message = self._buffer.popleft()
                self._held -= len(message.get("body") or b"")
                return message
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._task.done():
                return await self._receive()
            # Waits for the pending read without cancelling it if the app's wait is
            # cancelled (Starlette's is_disconnected() does that on purpose).
            await asyncio.wait((self._task,))

    async def settle(self) -> None:
        """At the response's last message: let a read that already completed land, then stop.

        The server's ``receive()`` answers "disconnect" once the response is complete; that
        answer must not be taken for the client leaving.
        """
        if not self._task.done():
            await asyncio.sleep(0)
        self._task.cancel()

    def stop(self) -> None:
        self._task.cancel()


def _expects_continue(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"expect" and value.lower() == b"100-continue":
            return True
    return False


def _replace_header(
    headers: Iterable[tuple[bytes, bytes]], name: bytes, value: bytes
) -> list[tuple[bytes, bytes]]:
    """``headers`` with every ``name`` field removed and one ``name: value`` added at the end."""
    return [*((k, v) for k, v in headers if k != name), (name, value)]


def _as_sent(scope: Scope, name: bytes, used: bytes) -> Scope:
    """The scope with the request-ID headers as the client sent them, for ``log_headers``: a
    value that was not used (rejected, or a dropped duplicate) shows as ``[REJECTED]``."""
    headers = scope["headers"]
    if all(k != name or v == used for k, v in headers):
        return scope
    shown = [(k, v if k != name or v == used else b"[REJECTED]") for k, v in headers]
    return {**scope, "headers": shown}


def _add_forwarded(fields: dict[str, Any], client: _proxies.Client) -> None:
    """What trusted proxies said about the client's scheme and host, and an unnamed client."""
    if client.scheme is not None:
        fields["scheme"] = client.scheme
    if client.host is not None:
        fields["host"] = client.host
    if client.node is not None:
        fields["client_node"] = client.node


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


def _flush_at_shutdown(send: Send, settle: Callable[[], Awaitable[None]]) -> Send:
    """Wrap a lifespan ``send``: flush the logs before the server hears shutdown is complete.

    The server may exit right after (uvicorn re-raises SIGTERM, which skips atexit), so this
    is the last moment the background writer is sure to get: the flush is bounded in time,
    and the server's last lines after it are written synchronously. Before it, ``settle``
    gives the requests the server has just cancelled (uvicorn's ``--timeout-graceful-shutdown``)
    a bounded moment to write their access events, or they would come after the flush.
    """

    async def send_wrapper(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await settle()
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
