"""RequestLoggingMiddleware: pure ASGI, one canonical access event per request."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from asgi_correlation_id.context import correlation_id
from asgi_correlation_id.extensions.sentry import get_sentry_extension, set_transaction_id
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reqlog import (
    _configure,
    _foreign,
    _lifecycle,
    _options,
    _proxies,
    _state,
    _stdlib,
    bodies,
    context,
)
from reqlog._access import AccessLog
from reqlog._error_response import is_cancellation, send_error_response
from reqlog._headers import as_sent, replace_header, with_header
from reqlog._lifecycle import InFlight, ReadAhead, expects_continue, flush_at_shutdown
from reqlog._logger import get_logger
from reqlog._request_id import MAX_ID_LENGTH, is_safe, is_valid_request_id, new_request_id
from reqlog._routes import route_template

__all__ = ["RequestLoggingMiddleware", "is_valid_request_id"]

# The status logged for a request whose client left before any response started (nginx's
# "client closed request"), and for one the server cancelled first (uvicorn and hypercorn
# answer it with a 500 when they still can).
_STATUS_CLIENT_CLOSED = 499
_STATUS_SERVER_CANCELLED = 500
# The scope key the outermost RequestLoggingMiddleware sets: a second one further in (added
# again by a router or a mounted app) passes the request through.
_LOGGED: Final = "reqlog.logged"
_get_running_loop = asyncio.get_running_loop
_CURRENT = context.CURRENT
# structlog's context variables, one per key ever bound (see reqlog._foreign).
_STRUCTLOG_VARS = _foreign.STRUCTLOG_CONTEXT_VARS
_RID: Final = "request_id"
_IP: Final = "client_ip"


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
            if not _foreign.building_lazily(1):
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

    >>> from fastapi import FastAPI
    >>> app = FastAPI()
    >>> app.add_middleware(reqlog.RequestLoggingMiddleware, trusted_proxies=["10.0.0.0/8"])
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        request_id_header: str = "X-Request-ID",
        request_id_validator: Callable[[str], bool] | None = is_valid_request_id,
        request_id_generator: Callable[[], str] = new_request_id,
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
        options = _options.middleware_options(
            request_id_header=request_id_header,
            request_id_validator=request_id_validator,
            request_id_generator=request_id_generator,
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
            exclude_paths=exclude_paths,
            clock=clock,
            log_request_body=log_request_body,
            log_response_body=log_response_body,
            body_max_bytes=body_max_bytes,
            log_headers=log_headers,
            capture_paths=capture_paths,
        )
        self.request_id_header = options.request_id_header
        self._header_key = options.header_key
        self._validator = options.validator
        self._generator = options.generator
        self._proxies = options.proxies
        self._exclude_exact, self._exclude_prefixes = (
            options.exclude_exact,
            options.exclude_prefixes,
        )
        self._excludes = bool(options.exclude_exact or options.exclude_prefixes)
        self._capture = options.capture
        self._clock = options.clock
        # asgi-correlation-id's Sentry hook, when sentry-sdk is installed (else a no-op: skipped).
        hook = get_sentry_extension()
        self._sentry: Callable[[str], None] | None = hook if hook is set_transaction_id else None
        # The requests in flight on the event loop this middleware last served (see InFlight).
        self._in_flight: InFlight | None = None
        self._warned_nested = False
        # request_completed replaces the server's access line.
        logging.getLogger("uvicorn.access").disabled = True
        _stdlib.adopt_server_loggers()

    # -- request ID and client -----------------------------------------------------------------

    def _accept_id(self, value: str) -> bool:
        if not is_safe(value):
            return False
        return self._validator is None or bool(self._validator(value))

    # -- the request ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http":
            if scope_type == "websocket":
                await self._websocket(scope, receive, send)
            elif scope_type == "lifespan":
                await self.app(scope, receive, flush_at_shutdown(send, self._settle))
            else:
                await self.app(scope, receive, send)
            return
        if _LOGGED in scope:
            await self._nested(scope, receive, send)
            return
        # Everything below runs for every request: bench/ measures it against the bare app, and
        # every statement here shows in the count. Rare cases are handled out of line.
        start = self._clock()
        header_key = self._header_key
        headers = scope["headers"]
        inbound, seen, user_agent = self._scan(headers)
        sent_scope = scope
        if inbound is None:
            # No ID sent: a new one, in the headers the app sees too (see _identify).
            request_id = self._generator()
            id_bytes = request_id.encode("latin-1")
            scope = scope.copy()  # type: ignore[attr-defined]  # a dict, as every server makes it
            scope["headers"] = [*headers, (header_key, id_bytes)]
            rejected = False
        else:
            scope, request_id, rejected = self._identify(scope, inbound, seen)
            id_bytes = request_id.encode("latin-1")
        scope[_LOGGED] = True
        path = scope["path"]
        excluded = self._excludes and self._excluded(path)
        peer = scope.get("client")
        client_ip = peer[0] if peer else None
        exchange = _Exchange(self, scope, receive, send, start, id_bytes, user_agent, path)
        if excluded:
            exchange.excluded = exchange.odd = True
        if rejected:
            exchange.rejected = exchange.odd = True
        if self._proxies is not None:
            forwarded = self._proxies.resolve(peer, headers)
            if forwarded is not None:
                exchange.forwarded = forwarded
                exchange.odd = True
                client_ip = forwarded.ip
        if self._capture is not None and not excluded and self._capture.applies(path):
            capture = exchange.capture = bodies.Capture(
                self._capture, as_sent(sent_scope, header_key, id_bytes)
            )
            receive = exchange.server_receive = capture.wrap_receive(receive)
            exchange.server_send = capture.wrap_send(send)
        # The request's context (_enter, inline): reqlog's, asgi-correlation-id's, Sentry's.
        exchange.fields = {_RID: request_id, _IP: client_ip}
        ctx_token = _CURRENT.set(exchange)
        cid_token = correlation_id.set(request_id)
        snapshot = context.structlog_snapshot() if _STRUCTLOG_VARS else None
        if self._sentry is not None:
            self._sentry(request_id)
        # Registered with this event loop's requests in flight: for the disconnect watch, and
        # for the wait at shutdown.
        inflight: InFlight | None = None
        watch = exchange.watch
        if not excluded:
            try:
                loop = _get_running_loop()
            except RuntimeError:  # not asyncio (trio): no watch
                pass
            else:
                inflight = self._in_flight
                if inflight is None or inflight.loop is not loop:
                    inflight = self._in_flight = InFlight(loop)
                inflight.requests.add(watch)
                if inflight.timer is None:
                    inflight.arm()
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception as exc:
            if excluded:
                raise
            if exchange.complete:
                # After the last byte: a background task failed. The access event stands.
                self._background_failed(exc, scope, path)
                raise
            gone = exchange.gone()
            if exchange.send_failed or gone:
                started = exchange.started and not exchange.gone_before_start
                self._disconnected(exchange.access_fields(), started)
                raise
            traceback = exc.__traceback__
            if not exchange.started:
                exchange.failing = exchange.odd = True
                await send_error_response(exchange.app_at_entry, exc, scope, receive, exchange.send)
            self._failed(
                exc.with_traceback(traceback),
                exchange.access_fields(),
                exchange.started,
                exchange.complete,
            )
            raise
        except BaseException as exc:
            if not excluded and is_cancellation(exc):
                # The server cancelled the request's task: at a graceful-shutdown timeout, or
                # (some servers) when the client left.
                _stdlib.mark_logged(exc)
                if exchange.complete:
                    self._background_failed(exc, scope, path)
                elif exchange.gone():
                    started = exchange.started and not exchange.gone_before_start
                    self._disconnected(exchange.access_fields(), started)
                else:
                    self._cancelled(exchange.access_fields(), exchange.started)
            raise
        else:
            if not (excluded or exchange.complete):
                self._incomplete(exchange)
        finally:
            if exchange.ahead is not None:
                exchange.ahead.stop()
            if inflight is not None:
                requests = inflight.requests
                requests.discard(watch)
                if inflight.waiter is not None and not requests:
                    inflight.waiter.set()  # the shutdown is waiting for the last one
            # _leave, inline: nothing of the request stays in the context, structlog's included.
            correlation_id.reset(cid_token)
            _CURRENT.reset(ctx_token)
            if _STRUCTLOG_VARS:
                context.structlog_restore(snapshot)

    def _incomplete(self, exchange: _Exchange) -> None:
        """The app returned without finishing its response."""
        fields = exchange.access_fields()
        if exchange.send_failed or exchange.gone():
            self._disconnected(fields, exchange.started and not exchange.gone_before_start)
            return
        fields["response_incomplete"] = True
        self._completed(fields)

    def _enter(self, scope: Scope, request_id: str, client_ip: str | None) -> _Bound:
        """Bind the request's context: reqlog's, asgi-correlation-id's (and Sentry's) ID."""
        ctx = context.RequestContext({"request_id": request_id, "client_ip": client_ip}, scope)
        bound = (
            context.structlog_snapshot(),
            context.CURRENT.set(ctx),
            correlation_id.set(request_id),
        )
        if self._sentry is not None:
            self._sentry(request_id)
        return bound

    def _identify(self, scope: Scope, inbound: bytes, seen: int) -> tuple[Scope, str, bool]:
        """The request ID for a request that sent ``inbound`` (the last of ``seen`` request-ID
        headers), the scope the app sees, and whether the inbound value was rejected.

        One rule for the app, the log and the echoed header: the last request-ID header
        counts, and the app sees exactly the ID that is logged. When the ID is new (none sent,
        or the one sent rejected) or the client sent several, the scope is copied with that
        one header in their place: a rejected or duplicate value never reaches the app.
        """
        header_key = self._header_key
        headers = scope["headers"]
        if len(inbound) <= MAX_ID_LENGTH:
            candidate = inbound.decode("latin-1")
            if self._accept_id(candidate):
                if seen == 1:
                    return scope, candidate, False
                new_headers = replace_header(headers, header_key, inbound)
                return {**scope, "headers": new_headers}, candidate, False
        request_id = self._generator()
        new_headers = replace_header(headers, header_key, request_id.encode("latin-1"))
        return {**scope, "headers": new_headers}, request_id, True

    def _scan(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, int, str | None]:
        """One pass over the request's headers: the last request-ID value, how many were sent,
        and the user agent."""
        header_key = self._header_key
        inbound: bytes | None = None
        seen = 0
        user_agent: str | None = None
        for name, value in headers:
            if name == header_key:
                inbound = value
                seen += 1
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        return inbound, seen, user_agent

    def _identify_websocket(self, scope: Scope) -> tuple[Scope, str, bool, str | None]:
        """What ``__call__`` does for an HTTP request's ID (see :meth:`_identify`)."""
        headers = scope["headers"]
        inbound, seen, user_agent = self._scan(headers)
        if inbound is not None:
            scope, request_id, rejected = self._identify(scope, inbound, seen)
            return scope, request_id, rejected, user_agent
        request_id = self._generator()
        new_headers = [*headers, (self._header_key, request_id.encode("latin-1"))]
        return {**scope, "headers": new_headers}, request_id, False, user_agent

    async def _settle(self) -> None:
        """At lifespan shutdown: give the requests the server just cancelled a moment to log."""
        inflight = self._in_flight
        try:
            loop = _get_running_loop()
        except RuntimeError:  # not asyncio (trio): nothing is registered
            return
        if inflight is not None and inflight.loop is loop:
            await inflight.settled(_lifecycle.SETTLE_TIMEOUT_S)

    async def _nested(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A second RequestLoggingMiddleware inside the first: it passes the request through."""
        if not self._warned_nested:
            self._warned_nested = True
            get_logger("reqlog").warning(
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
        _access_log().completed(fields, event, min_level)

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
        _stdlib.mark_logged(exc)
        if not started or not fields["status_code"]:
            fields["status_code"] = 500
        elif not complete:
            fields["response_incomplete"] = True
        fields["error_type"] = type(exc).__qualname__
        fields["error_message"] = str(exc)
        fields["exc_info"] = exc
        _access_log().emit(logging.ERROR, "request_failed", fields)

    def _background_failed(self, exc: BaseException, scope: Scope, path: str) -> None:
        """A background task (run by the app after the last byte) raised or was cancelled."""
        _stdlib.mark_logged(exc)
        fields: dict[str, Any] = {
            "method": scope["method"],
            "path": path,
            "route": route_template(scope, scope.get("root_path", ""), None),
            "task": _foreign.background_task_name(exc.__traceback__),
        }
        log = get_logger("reqlog")
        if is_cancellation(exc):
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
        scope, request_id, rejected, user_agent = self._identify_websocket(scope)
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
                message = with_header(message, header_name, request_id)
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
                    "route": route_template(scope, root_path_at_entry, app_at_entry),
                    "accepted": accepted,
                    "close_code": close_code if close_code is not None else 1006,
                    "closed_by": closed_by,
                    "duration_ms": round((self._clock() - start) * 1000.0, 3),
                    "user_agent": user_agent,
                    **extra,
                }
                if error is not None and not is_cancellation(error):
                    _stdlib.mark_logged(error)
                    fields["error_type"] = type(error).__qualname__
                    fields["error_message"] = str(error)
                    fields["exc_info"] = error
                    _access_log().emit(logging.ERROR, "websocket_failed", fields)
                else:
                    _access_log().emit(logging.INFO, "websocket_closed", fields)


class _Exchange(context.RequestContext):
    """One HTTP request as the middleware sees it: its state, and the ``receive`` and
    ``send`` the app is given (this object's bound methods). It is the request's context
    too (``fields``, ``scope``): one object per request, not two.

    Starlette's ``gzip.py`` keeps a response's state the same way: one small object instead of
    closures sharing a dozen ``nonlocal`` variables. What most requests never change is a
    class attribute, so that a request sets only what is its own.
    """

    # True once any of the attributes below that make a request unusual is set (excluded,
    # rejected, forwarded, failing, disconnected, ahead): send() then takes the long way.
    odd = False
    # Set by the middleware when they apply.
    excluded = False
    rejected = False
    forwarded: _proxies.Client | None = None
    capture: bodies.Capture | None = None
    # The response as it goes out.
    status = 0
    sent = 0
    started = False
    complete = False
    end: float | None = None
    # The client was seen to go: by the app's receive() or by the read-ahead (watch()).
    disconnected = False
    gone_before_start = False
    send_failed = False
    # The app raised: its 500 goes out through send(), request_failed is the event.
    failing = False
    reading = 0  # the app's receive() calls in progress
    ahead: ReadAhead | None = None

    def __init__(
        self,
        middleware: RequestLoggingMiddleware,
        scope: Scope,
        receive: Receive,
        send: Send,
        start: float,
        id_bytes: bytes,
        user_agent: str | None,
        path: str,
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.user_pending = True  # see RequestContext
        self.server_receive = receive
        self.server_send = send
        self.start = start
        self.id_bytes = id_bytes
        self.user_agent = user_agent
        self.path = path
        self.app_at_entry = scope.get("app")
        self.root_path_at_entry = scope.get("root_path", "")

    def gone(self) -> bool:
        """Whether the client was seen to leave (by the app, or by the read-ahead)."""
        return self.disconnected or (self.ahead is not None and self.ahead.disconnected)

    async def receive(self) -> Message:
        ahead = self.ahead
        if ahead is not None:
            message = await ahead.receive()
        else:
            self.reading += 1
            try:
                message = await self.server_receive()
            finally:
                self.reading -= 1
        if message["type"] == "http.disconnect":
            self.disconnected = self.odd = True
        return message

    def watch(self) -> None:
        """Called on the event loop once the request has run a while: read ahead of an app
        that is not reading, so that a client that leaves is seen even by an app that never
        calls receive(). Never while the app is inside receive() (it will see the disconnect
        itself), nor for a request that expects a "100 Continue" (the server would send it on
        our first receive(), inviting a body the app may not want)."""
        if (
            self.ahead is None
            and not self.reading
            and not self.complete
            and not expects_continue(self.scope)
        ):
            self.ahead = ReadAhead(self.server_receive)
            self.odd = True

    async def send(self, message: Message) -> None:
        message_type = message["type"]
        if message_type == "http.response.start":
            message = with_header(message, self.middleware._header_key, self.id_bytes)
            self.status = message["status"]
            self.started = True
            if self.odd and self.gone():
                self.gone_before_start = True
            final = False
        elif message_type == "http.response.body":
            final = not message.get("more_body", False)
        else:
            final = message_type == "http.response.pathsend"
        if final and self.ahead is not None:
            await self.ahead.settle()
        try:
            await self.server_send(message)
        except OSError:
            self.send_failed = True
            raise
        if message_type == "http.response.body":
            self.sent += len(message.get("body", b""))
        if final:
            # The access event belongs to the response: it is written now, with the time of
            # the last byte, before any background task the app runs after it.
            self.complete = True
            self.end = self.middleware._clock()
            if self.odd:
                self._finished_odd()
                return
            access = _state.STATE.access
            if access is None:
                access = _access_log()
            # The common request: its nine fields, handed over without a dict
            # (access_fields()), and what was captured.
            scope = self.scope
            app = self.app_at_entry
            access.request(
                scope["method"],
                self.path,
                route_template(
                    scope, self.root_path_at_entry, self.middleware.app if app is None else app
                ),
                scope["query_string"].decode("latin-1"),
                self.status,
                round((self.end - self.start) * 1000.0, 3),
                self.user_agent,
                scope.get("http_version"),
                self.sent,
                None if self.capture is None else self.capture.fields(_state.report),
            )

    def _finished_odd(self) -> None:
        """The last byte went out for a request that is not the common case (``odd``)."""
        if self.excluded or self.failing:
            return
        if self.gone():
            self.middleware._disconnected(self.access_fields(), not self.gone_before_start)
            return
        _access_log().completed(self.access_fields())

    def access_fields(self) -> dict[str, Any]:
        """The access event's fields, as the request stands."""
        end = self.end
        if end is None:
            end = self.middleware._clock()
        scope = self.scope
        app = self.app_at_entry
        fields = {
            "method": scope["method"],
            "path": self.path,
            "route": route_template(
                scope, self.root_path_at_entry, self.middleware.app if app is None else app
            ),
            "query": scope["query_string"].decode("latin-1"),
            "status_code": self.status,
            "duration_ms": round((end - self.start) * 1000.0, 3),
            "user_agent": self.user_agent,
            "http_version": scope.get("http_version"),
            "response_bytes": self.sent,
        }
        if self.forwarded is not None:
            _add_forwarded(fields, self.forwarded)
        if self.rejected:
            fields["request_id_rejected"] = True
        if self.capture is not None:
            fields.update(self.capture.fields(_state.report))
        return fields


def _access_log() -> AccessLog:
    """The access events' policy and emitter (the defaults configured now, if nothing was)."""
    access = _state.STATE.access
    if access is None:
        _configure.ensure_configured()
        access = _state.STATE.access
        assert access is not None
    return access


def _add_forwarded(fields: dict[str, Any], client: _proxies.Client) -> None:
    """What trusted proxies said about the client's scheme and host, and an unnamed client."""
    if client.scheme is not None:
        fields["scheme"] = client.scheme
    if client.host is not None:
        fields["host"] = client.host
    if client.node is not None:
        fields["client_node"] = client.node


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
