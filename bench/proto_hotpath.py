"""A scratch prototype of issue 12's hot path, to check PLAN-hot-path.md's estimates. Not reqlog.

Not wired into anything: it subclasses reqlog's middleware and reads reqlog's configured state, so
that its lines can be compared with reqlog's own, byte for byte (``--check``), and its
instructions counted beside them (``python -m bench.proto_hotpath``). It covers the default
HTTP path only (no body capture, reqlog's default chain); anything else goes to reqlog's code.

- ``fused`` (``FusedAccess``, ``FusedLogger``): the access event (and an app event) built in its
  final order in one dict and rendered by one function chosen when the middleware starts, if
  the configured chain is reqlog's default one (nothing a user processor, schema, sampler or
  slow-request output would see differently): the Redactor asked only about the fields that can
  hold a secret, the timestamp formatted without big-integer division or a format
  specification, orjson without ``OPT_NON_STR_KEYS`` (retried with it when a key is not a
  string), OpenTelemetry's span looked up only when its context holds anything;
- ``responder``: the request's state in one slotted object whose bound methods wrap ``send``
  and ``receive`` (Starlette's gzip.py), instead of three closures sharing nine nonlocals.

    python -m bench.proto_hotpath           # instructions per request and per app event
    python -m bench.proto_hotpath --check   # the lines are reqlog's, byte for byte
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import types
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reqlog import _config, context, processors
from reqlog.middleware import RequestLoggingMiddleware, _leave, _route_template, _with_header

__all__ = ["STEPS", "FusedAccess", "ProtoMiddleware", "iso_timestamp"]

STEPS = ("fused", "responder")

_stamp: tuple[str, str] = ("", "")


def iso_timestamp(now: float) -> str:
    """What ``IsoTimeStamper`` writes for the clock reading ``now``, exactly, cheaper.

    The same microseconds, ``round(now * 1_000_000)``, written out once in decimal: its last six
    digits are the fraction, the rest the second, which keys the date and time formatted once
    per second. No big-integer division, no format specification.
    """
    global _stamp
    micros = round(now * 1_000_000)
    if micros < 1_000_000:  # before 1970-01-01T00:00:01: IsoTimeStamper's own arithmetic
        whole, micro = divmod(micros, 1_000_000)
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"
    digits = str(micros)
    second = digits[:-6]
    if second != _stamp[0]:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(second))))
    fraction = digits[-6:]
    if fraction == "000000":
        return _stamp[1] + "Z"
    return _stamp[1] + "." + fraction + "Z"


_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}
_JSON = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE
#: The request context's keys whose redaction the fused path knows (the middleware binds them).
_CONTEXT_KEYS = ("request_id", "client_ip")
#: How many fields the middleware puts on a completed request's access event.
_FIELDS = 9


class FusedAccess:
    """The access event's whole chain in one call, for reqlog's default chain only.

    ``build()`` returns ``None`` when the configured chain is anything else: then the generic
    path runs, and user processors and schemas see what they see today.
    """

    name = "request_completed"

    def __init__(
        self, service: str | None, trace: Any, redactor: processors.Redactor | None
    ) -> None:
        self.service = service
        self.trace = trace
        self.redactor = redactor
        # The access event's own fields that the Redactor does more than copy (the query).
        self.special: tuple[tuple[str, int], ...] = ()
        if redactor is not None:
            keys: tuple[str, ...] = (*_CONTEXT_KEYS, "method", "path", "route", "query")
            keys += ("status_code", "duration_ms", "user_agent", "http_version", "response_bytes")
            kinds = [(k, redactor._kinds[k]) for k in keys]
            plain = ("event", "logger", "level", "timestamp", "service", "trace_id", "span_id")
            assert all(redactor._kinds[k] == processors._PLAIN for k in plain[1:])
            self.special = tuple((k, kind) for k, kind in kinds if kind != processors._PLAIN)
            # The event name is free text: scanned once here, it is the same every time.
            assert redactor.redact_text("request_completed") == "request_completed"

    @classmethod
    def build(cls) -> FusedAccess | None:
        """The fused path for the configured chain, or ``None`` when it is not the default."""
        chain = list(_config._PROCESSORS)
        names = [getattr(p, "__name__", type(p).__name__) for p in chain]
        head = [
            "merge_structlog_contextvars",
            "merge_request_context",
            "add_logger_name",
            "add_log_level",
            "IsoTimeStamper",
        ]
        if names[:5] != head:
            return None
        steps = dict(zip(names[5:], chain[5:], strict=True))
        service = None
        if "AddStaticFields" in steps:
            static = steps.pop("AddStaticFields").fields
            if list(static) != ["service"]:
                return None
            service = static["service"]
        trace = None
        if steps.pop("add_trace_context", None) is not None:
            from opentelemetry import context as otel_context

            from reqlog.integrations.otel import add_trace_context

            trace = (otel_context.get_current, add_trace_context)
        steps.pop("WhenPresent", None)  # the event has neither exc_info nor stack_info
        redactor = steps.pop("Redactor", None)
        renderer = steps.pop("JSONRenderer", None)
        if list(steps) != ["_capture"] or renderer is None or renderer.as_text:
            return None
        return cls(service, trace, redactor)

    def emit(self, level: int, fields: dict[str, Any], ctx: context.RequestContext | None) -> None:
        """What ``emit_access(level, "request_completed", fields)`` does, in one call."""
        settings = _config._STATE.settings
        if (
            settings is None
            or level < settings.level
            or context._STRUCTLOG_VARS
            or _config._CAPTURES
        ):
            self._generic(level, fields)
            return
        if ctx is not None:
            if ctx.user_pending:
                ctx.resolve_user()
            # Only reqlog's own keys: the Redactor's verdict on them was taken at build time.
            known = len(ctx.fields) == len(_CONTEXT_KEYS) and len(fields) == _FIELDS
            event: dict[str, Any] = {**ctx.fields, **fields}
        else:
            known = False
            event = fields
        event["event"] = "request_completed"
        event["logger"] = _config.ACCESS_LOGGER
        method = _LEVEL_NAMES[level]
        event["level"] = method
        event["timestamp"] = iso_timestamp(time.time())
        if self.service is not None:
            event.setdefault("service", self.service)
        if self.trace is not None:
            get_current, add = self.trace
            if get_current():
                add(None, method, event)
        redactor = self.redactor
        if redactor is not None:
            if known:
                # The Redactor's own fast path for a flat event, on the special keys only.
                for key, kind in self.special:
                    value = event[key]
                    if kind == processors._TEXT:
                        if value in redactor._clean_text or type(value) is not str:
                            continue
                        new = redactor._scan(value)
                    elif kind == processors._SECRET:
                        new = redactor._mask(value)
                    elif value in redactor._clean_query or type(value) is not str:
                        continue
                    else:
                        new = redactor.redact_query(value)
                    if new is not value:
                        event[key] = new
            else:
                event = dict(redactor(None, method, event))
        try:
            line = orjson.dumps(event, default=_config._json_default, option=_JSON)
        except TypeError:
            line = _config.JSONRenderer()(None, method, event)
        output = _config._STATE.output
        if level >= logging.WARNING:
            output.write(line, logging.WARNING)
        else:
            output.write(line)

    def _generic(self, level: int, fields: dict[str, Any]) -> None:
        _config.emit_access(level, "request_completed", fields)


class FusedLogger:
    """What ``reqlog.get_logger(name).info(event, **kw)`` does, in one call (default chain).

    The event dict is built in its final order in one display: the request's context, then the
    keywords, then ``event``, ``logger``, ``level``, ``timestamp``, ``service``, exactly as
    structlog's bound logger and reqlog's head processors would; the Redactor then runs whole
    (an app event's keys are the app's), and the line is rendered and handed off as above.
    """

    def __init__(self, name: str, fused: FusedAccess) -> None:
        self.name = name
        self.fused = fused
        self.generic = _config.get_logger(name)

    def info(self, event: str, **kw: Any) -> None:
        settings = _config._STATE.settings
        if settings is None or settings.level > logging.INFO:
            return
        if context._STRUCTLOG_VARS or _config._CAPTURES or "exc_info" in kw or "stack_info" in kw:
            self.generic.info(event, **kw)
            return
        try:
            ctx = context._CURRENT.get()
            if ctx is not None:
                if ctx.user_pending:
                    ctx.resolve_user()
                event_dict = {**ctx.fields, **kw}
            else:
                event_dict = kw
            event_dict["event"] = event
            event_dict["logger"] = self.name
            event_dict["level"] = "info"
            event_dict["timestamp"] = iso_timestamp(time.time())
            fused = self.fused
            if fused.service is not None:
                event_dict.setdefault("service", fused.service)
            if fused.trace is not None:
                get_current, add = fused.trace
                if get_current():
                    add(None, "info", event_dict)
            if fused.redactor is not None:
                event_dict = dict(fused.redactor(None, "info", event_dict))
            try:
                line = orjson.dumps(event_dict, default=_config._json_default, option=_JSON)
            except TypeError:
                line = _config.JSONRenderer()(None, "info", event_dict)
            _config._STATE.output.write(line)
        except Exception as exc:  # noqa: BLE001 - logging never breaks the app
            _config._STATE.output.report("chain", f"could not log event {event!r}: {exc!r}")


class _Exchange:
    """One HTTP request's state, and the ``send``/``receive`` the app is given."""

    __slots__ = (
        "clock",
        "complete",
        "disconnected",
        "end",
        "header",
        "inner_receive",
        "inner_send",
        "request_id",
        "send_failed",
        "sent",
        "started",
        "status",
    )

    def __init__(
        self, receive: Receive, send: Send, header: bytes, request_id: bytes, clock: Any
    ) -> None:
        self.inner_receive = receive
        self.inner_send = send
        self.header = header
        self.request_id = request_id
        self.clock = clock
        self.status = 0
        self.sent = 0
        self.started = self.complete = self.disconnected = self.send_failed = False
        self.end: float | None = None

    async def receive(self) -> Message:
        message = await self.inner_receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            message = _with_header(message, self.header, self.request_id)
            self.status = message["status"]
            self.started = True
        try:
            await self.inner_send(message)
        except OSError:
            self.send_failed = True
            raise
        if kind == "http.response.body":
            self.sent += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                self.end = self.clock()
        elif kind == "http.response.pathsend":
            self.complete = True
            self.end = self.clock()


class ProtoMiddleware(RequestLoggingMiddleware):
    """reqlog's middleware, its default HTTP path rewritten (``steps``); the rest is reqlog's.

    Steps: ``fused`` (the access event), ``responder`` (the request's state in an object). For
    attributing the rest, not proposals: ``no_id`` (the scope passed on with a fixed ID),
    ``no_context``, ``no_event``. (Folding the request-ID step and the context into
    ``__call__``, tried too, saved nothing measurable: the calls are not where the cost is.)
    """

    def __init__(self, app: ASGIApp, *, steps: tuple[str, ...] = STEPS, **options: Any) -> None:
        super().__init__(app, **options)
        self._fused = FusedAccess.build() if "fused" in steps else None
        self._own_path = "responder" in steps and self._capture is None
        self._no_id, self._no_context = "no_id" in steps, "no_context" in steps
        self._no_event = "no_event" in steps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._own_path or self._excluded(scope["path"]):
            await super().__call__(scope, receive, send)
            return
        start = self._clock()
        user_agent: str | None
        if self._no_id:
            request_id, user_agent = "0" * 32, "bench/1.0"
        else:
            scope, request_id, _rejected, user_agent = self._identify(scope)
        app_at_entry = scope.get("app")
        root_path_at_entry = scope.get("root_path", "")
        exchange = _Exchange(
            receive, send, self._header_key, request_id.encode("latin-1"), self._clock
        )
        peer = scope.get("client")
        client_ip = peer[0] if peer else None
        bound = None if self._no_context else self._enter(scope, request_id, client_ip)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException:
            raise  # failures are rare: reqlog's own handling goes here (not prototyped)
        else:
            if not exchange.complete and (exchange.disconnected or exchange.send_failed):
                return  # not prototyped
            end = exchange.end if exchange.end is not None else self._clock()
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "route": _route_template(scope, root_path_at_entry, app_at_entry or self.app),
                "query": scope["query_string"].decode("latin-1"),
                "status_code": exchange.status,
                "duration_ms": round((end - start) * 1000.0, 3),
                "user_agent": user_agent,
                "http_version": scope.get("http_version"),
                "response_bytes": exchange.sent,
            }
            if not exchange.complete:
                fields["response_incomplete"] = True
            if not self._no_event:
                self._completed(fields)
        finally:
            if bound is not None:
                _leave(bound)

    def _completed(
        self,
        fields: dict[str, Any],
        event: str = "request_completed",
        min_level: int = logging.NOTSET,
    ) -> None:
        settings = _config._STATE.settings
        fused = self._fused
        if (
            settings is None
            or fused is None
            or settings.slow.enabled
            or event != fused.name
            or min_level > logging.NOTSET
        ):
            super()._completed(fields, event, min_level)
            return
        level = settings.status_levels(fields["status_code"], False)
        fused.emit(level, fields, context._CURRENT.get())


def main() -> None:
    """Instructions per request: reqlog's middleware, the prototype, each step alone."""
    from bench import callgrind

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drive", action="store_true")
    parser.add_argument("--check", action="store_true", help="compare the lines with reqlog's")
    args = parser.parse_args()
    if args.check:
        problems = check()
        print("\n".join(problems) or "the prototype's lines are reqlog's, byte for byte")
        raise SystemExit(1 if problems else 0)
    variants: dict[str, tuple[str, ...] | None] = {
        "bare": None,
        "reqlog": (),
        "fused": ("fused",),
        "fused+responder": ("fused", "responder"),
        "  without context": ("fused", "responder", "no_context"),
        "  without context, ID": ("fused", "responder", "no_context", "no_id"),
        "  without context, ID, event": ("fused", "responder", "no_context", "no_id", "no_event"),
    }
    if args.drive:
        _drive_variants(variants)
        return
    segments, stdout = callgrind.run(["bench.proto_hotpath", "--drive"])
    names = json.loads(stdout.strip().splitlines()[-1])
    events = [n for n in names if n.startswith("app event")]
    for name, count in zip(events, segments[1::2], strict=False):
        print(f"{name:30s} {count / 5000 / 1000:7.1f}k per event")
    measured = segments[1 + 2 * len(events) :: 2]
    per = dict(zip(names[len(events) :], (s / 1000 for s in measured), strict=True))
    for name, value in per.items():
        print(f"{name:18s} {value / 1000:7.1f}k  {(value - per['bare']) / 1000:+7.1f}k")


def check() -> list[str]:
    """What differs between reqlog's lines and the prototype's for the same input (nothing)."""
    import io
    import random

    from fastapi import FastAPI
    from freezegun import freeze_time

    import reqlog
    from bench.apps import SERVICE, _routes
    from bench.bench_requests import _drive

    problems: list[str] = []
    stamper = processors.IsoTimeStamper()
    clock = types.SimpleNamespace(time=None, strftime=time.strftime, gmtime=time.gmtime)
    setattr(processors, "time", clock)  # noqa: B010 - IsoTimeStamper reads time.time()
    try:
        for _ in range(200_000):
            now = random.choice(
                [random.uniform(-1e9, 4e9), random.randrange(2**32) + 0.9999995, random.random()]
            )
            clock.time = lambda now=now: now
            expected = stamper(None, "info", {})["timestamp"]
            if iso_timestamp(now) != expected and len(problems) < 5:
                problems.append(f"timestamp {now!r}: {iso_timestamp(now)} != {expected}")
    finally:
        setattr(processors, "time", time)  # noqa: B010
    buffer = io.BytesIO()
    reqlog.configure(output=buffer, format="json", service=SERVICE)
    fixed = {"request_id_generator": lambda: "0" * 32, "clock": lambda: 1.0}
    apps = []
    for middleware in (RequestLoggingMiddleware, ProtoMiddleware):
        app = _routes(FastAPI())
        app.add_middleware(middleware, **fixed)
        apps.append(app)
    fused = FusedAccess.build()
    assert fused is not None
    loggers = (reqlog.get_logger("app"), FusedLogger("app", fused))
    token = context.CURRENT.set(
        context.RequestContext({"request_id": "0" * 32, "client_ip": "10.0.0.1"}, {})
    )
    with freeze_time("2026-01-02 03:04:05.123456"):
        for app in apps:
            asyncio.run(_drive(app, 2))
        for log in loggers:
            log.info("loading_item", item_id=42)
            log.info("login", password="hunter2", url="https://u:pw@h/", request_id="x")
    context.CURRENT.reset(token)
    reqlog.flush()
    lines = buffer.getvalue().splitlines()
    pairs = [(lines[0], lines[2]), (lines[1], lines[3]), (lines[4], lines[6]), (lines[5], lines[7])]
    problems += [f"{a!r}\n != {b!r}" for a, b in pairs if a != b]
    return problems


def _drive_variants(variants: dict[str, tuple[str, ...] | None]) -> None:
    from fastapi import FastAPI

    import reqlog
    from bench import callgrind
    from bench.apps import SERVICE, _routes, bare
    from bench.bench_requests import _drive

    reqlog.configure(output="/dev/null", format="json", service=SERVICE)
    fused = FusedAccess.build()
    assert fused is not None
    app_events: dict[str, Any] = {
        "app event: reqlog": reqlog.get_logger("app"),
        "app event: fused": FusedLogger("app", fused),
    }
    token = context.CURRENT.set(
        context.RequestContext({"request_id": "0" * 32, "client_ip": "10.0.0.1"}, {})
    )
    for log in app_events.values():
        for count in (500, 5000):
            for _ in range(count):
                log.info("loading_item", item_id=42)
            reqlog.flush()
            callgrind.mark()
    context.CURRENT.reset(token)
    for _name, steps in variants.items():
        if steps is None:
            app = bare()
        elif not steps:
            app = _routes(FastAPI())
            app.add_middleware(RequestLoggingMiddleware)
        else:
            app = _routes(FastAPI())
            app.add_middleware(ProtoMiddleware, steps=steps)  # type: ignore[arg-type]
        asyncio.run(_drive(app, 200))
        reqlog.flush()
        callgrind.mark()
        asyncio.run(_drive(app, 1000))
        reqlog.flush()
        callgrind.mark()
    print(json.dumps([*app_events, *variants]))


if __name__ == "__main__":
    main()
