"""The fused path: reqlog's default JSON chain as one call, for access events and app events.

The generic path (``reqlog._emit``) runs an event through the list of processors, one call
each, behind structlog's bound-logger layers: for the events every request logs, those layers
and calls cost more than the work. When configure() built the default chain and nothing could
tell the difference (JSON with reqlog's flat names, no user processor, no sampling, no
slow-request output, no OTLP), it installs :class:`FusedChain` instead: the same steps in the
same order, inline where a step is one assignment, through the chain's own objects (the time
stamper, the Redactor, the renderer) for the rest. Where an event is not the common case it
hands over to the generic processors at that very step: structlog's context variables are
merged by structlog's own processor, an event with ``exc_info`` or ``stack_info`` runs the
rest of the chain as it is, and while a test captures events (``reqlog.testing``,
``structlog.testing.capture_logs``) or a logger was built with other processors or another
wrapped logger, the generic path runs whole.

So the line written is the generic chain's, byte for byte, and a user processor or schema,
which makes the chain ineligible, sees exactly what it always saw. tests/test_fused.py drives
arbitrary events through both and compares the bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import structlog
from structlog.typing import Processor

from reqlog import context
from reqlog._access import REQUEST_FIELDS
from reqlog._emit import ACCESS, ACCESS_LOGGER, METHOD_NAMES, OutputLogger, emit_access
from reqlog._foreign import STRUCTLOG_CONTEXT_VARS
from reqlog._render import JSONRenderer
from reqlog._state import STATE
from reqlog.processors import IsoTimeStamper, Redactor

__all__ = ["FusedChain"]

#: structlog's ``map_method_name``: what ``add_log_level`` writes for a method name.
_LEVEL_NAMES: Final = {"warn": "warning", "exception": "error"}
#: The wrapped logger's methods that hand a line on as important (the last a full queue drops).
_IMPORTANT: Final = frozenset(
    {"warning", "warn", "error", "critical", "exception", "fatal", "failure"}
)
_RID: Final = "request_id"
_IP: Final = "client_ip"
_ERROR: Final = logging.ERROR
_WARNING: Final = logging.WARNING
_INFO: Final = logging.INFO
#: The common request's event, key by key: the request context's two fields, the
#: middleware's nine, then what the chain's head adds.
#: The types of the common request's values that are not reqlog's own doing (request ID,
#: client IP, method, path, status, duration, HTTP version) when all of them are flat.
_FLAT_REQUEST: Final = frozenset(
    (str, ip, str, str, int, float, version)
    for ip in (str, type(None))
    for version in (str, type(None))
)
_REQUEST_KEYS: Final = (
    *(_RID, _IP, "method", "path", "route", "query", "status_code", "duration_ms"),
    *("user_agent", "http_version", "response_bytes", "event", "logger", "level", "timestamp"),
)
#: The capture fields' key tuples a FusedChain remembers plans for (a handful in practice).
_MAX_CAPTURED_PLANS: Final = 64
_CURRENT = context.CURRENT
_merge_structlog = context.merge_structlog_contextvars
_DropEvent = structlog.DropEvent
_LogRecord = logging.LogRecord


class FusedChain:
    """reqlog's default chain (``processors``, as ``reqlog._pipeline`` built it) in one call.

    ``stamper``, ``service``, ``trace``, ``redactor`` and ``renderer`` are the chain's own
    steps (the time stamper, the static service field, OpenTelemetry's trace context, the
    Redactor, the JSON renderer); ``rest`` is where the chain goes on for an event with an
    exception or a stack to render.
    """

    __slots__ = (
        "captured_plans",
        "min_level",
        "processors",
        "redact",
        "redactor",
        "render",
        "renderer",
        "request_keys",
        "request_plan",
        "request_size",
        "rest",
        "service",
        "stamp",
        "trace",
        "trace_guard",
    )

    def __init__(
        self,
        processors: list[Processor],
        *,
        min_level: int,
        stamper: IsoTimeStamper,
        service: str | None,
        trace: Processor | None,
        trace_guard: Callable[[], Any] | None,
        redactor: Redactor | None,
        renderer: Processor,
        rest: Sequence[Processor],
    ) -> None:
        self.processors = processors
        self.min_level = min_level
        self.stamp = stamper.stamp
        self.service = service
        self.trace = trace
        # Cheaper than ``trace`` and false whenever it would add nothing (an empty context);
        # without one, ``trace`` runs on every event.
        if trace is not None and trace_guard is None:
            trace_guard = _always
        self.trace_guard = trace_guard
        self.redactor = redactor
        self.renderer = renderer
        # Their __call__ as bound methods: calling an instance looks __call__ up every time.
        self.redact = None if redactor is None else redactor.__call__
        self.render = renderer.__call__ if isinstance(renderer, JSONRenderer) else renderer
        self.rest = tuple(rest)
        # The common request's event, key by key (request()), and what the Redactor does to it.
        self.request_keys = (*_REQUEST_KEYS, *(("service",) if service is not None else ()))
        # Without the steps that leave the event's constant values as they are.
        constants = {"event": "request_completed", "logger": ACCESS_LOGGER}
        self.request_plan = tuple(
            (key, redact_value)
            for key, redact_value in (() if redactor is None else redactor.plan(self.request_keys))
            if key not in constants or redact_value(constants[key]) is not constants[key]
        )
        self.request_size = len(self.request_keys)
        #: The capture fields' keys -> what the Redactor does to them (captured()).
        self.captured_plans: dict[tuple[str, ...], tuple[tuple[Any, Callable[[Any], Any]], ...]]
        self.captured_plans = {}

    def _generic(self) -> bool:
        """Whether the generic path must run whole: a test captures events, or the chain in
        ``STATE`` is not the one this was built for (structlog's ``capture_logs``)."""
        processors = self.processors
        return bool(STATE.captures) or not processors or processors[-1] is not self.renderer

    def _line(self, logger: OutputLogger, method: str, event_dict: Any) -> Any:
        """The chain from the request's context on (``merge_request_context``): the line."""
        ctx = _CURRENT.get()
        if ctx is not None:
            if ctx.user_pending and "user" in ctx.scope:
                ctx.resolve_user()
            event_dict = {**ctx.fields, **event_dict}
        return self._merged(logger, method, _LEVEL_NAMES.get(method, method), event_dict)

    def _merged(self, logger: OutputLogger, method: str, level: str, event_dict: Any) -> Any:
        """The chain after the request's context was merged (``level``: the name
        ``add_log_level`` writes for ``method``): the line."""
        if "_record" in event_dict and isinstance(event_dict["_record"], _LogRecord):
            event_dict["logger"] = event_dict["_record"].name
        else:
            event_dict["logger"] = logger.name
        event_dict["level"] = level
        event_dict["timestamp"] = self.stamp()
        service = self.service
        if service is not None and "service" not in event_dict:
            event_dict["service"] = service
        trace_guard = self.trace_guard
        if trace_guard is not None and trace_guard():
            assert self.trace is not None
            event_dict = self.trace(logger, method, event_dict)
        if "stack_info" in event_dict or "exc_info" in event_dict:
            result: Any = event_dict
            for processor in self.rest:
                result = processor(logger, method, result)
            return result
        redact = self.redact
        if redact is not None:
            event_dict = redact(logger, method, event_dict)
        return self.render(logger, method, event_dict)

    # -- the access event ----------------------------------------------------------------------

    def access(self, level: int, event: str, fields: dict[str, Any]) -> None:
        """What ``reqlog._emit.emit_access`` does, in one call."""
        if level < self.min_level:
            return
        if self._generic():
            emit_access(level, event, fields)
            return
        method = METHOD_NAMES.get(level) or logging.getLevelName(level).lower()
        fields["event"] = event
        try:
            event_dict: Any = fields
            if STRUCTLOG_CONTEXT_VARS:
                event_dict = _merge_structlog(ACCESS, method, event_dict)
            line = self._line(ACCESS, method, event_dict)
        except _DropEvent:
            return
        except Exception as exc:  # noqa: BLE001 - logging never breaks the app
            STATE.output.report("chain", f"could not log event {event!r}: {exc!r}")
            return
        STATE.output.write(line, logging.WARNING if method in _IMPORTANT else logging.INFO)

    def request(
        self,
        levels: Mapping[Any, int],
        method: Any,
        path: Any,
        route: str | None,
        query: str,
        status: Any,
        duration: Any,
        user_agent: str | None,
        http_version: Any,
        sent: int,
        captured: dict[str, Any] | None = None,
    ) -> None:
        """The common request's ``request_completed``: what :meth:`access` writes for the
        middleware's nine fields (in its order), the event built in its final order in one
        go, and redacted by the Redactor's plan for that shape.

        ``captured``, with body or header capture on (``reqlog.bodies.Capture.fields``), follows
        the nine fields; the Redactor's plan for its keys walks the headers and bodies.

        ``route``, ``query``, ``user_agent`` and ``sent`` are what the middleware makes them
        (a string or None, a string, a string or None, an int); the other values are checked
        here. Whatever is not the common case takes :meth:`access`: structlog's context
        variables, a request context with more than reqlog's two fields, a value of any other
        type than the middleware's, a test capturing events. ``levels`` is the status table
        (reqlog._access): a status missing from it is an error.
        """
        level = levels.get(status, _ERROR)
        if level < self.min_level:
            return
        ctx = _CURRENT.get()
        processors = self.processors
        if (
            ctx is not None
            and not (STRUCTLOG_CONTEXT_VARS or STATE.captures)
            and processors
            and processors[-1] is self.renderer
        ):
            if ctx.user_pending and "user" in ctx.scope:
                ctx.resolve_user()
            ctx_fields = ctx.fields
            common = len(ctx_fields) == 2
            if common:
                (rid_key, rid), (ip_key, ip) = ctx_fields.items()
                common = (
                    rid_key == _RID
                    and ip_key == _IP
                    and (type(rid), type(ip), type(method), type(path), type(status),
                         type(duration), type(http_version)) in _FLAT_REQUEST
                )  # fmt: skip
        else:
            common = False
        if not common:
            values = (method, path, route, query, status, duration, user_agent, http_version, sent)
            fields = dict(zip(REQUEST_FIELDS, values, strict=True))
            if captured is not None:
                fields.update(captured)
            self.access(level, "request_completed", fields)
            return
        name = METHOD_NAMES.get(level) or logging.getLevelName(level).lower()
        try:
            if captured is None:
                # The whole event in one literal: built at its final size, no resizing.
                event_dict: Any = {
                    _RID: rid,
                    _IP: ip,
                    "method": method,
                    "path": path,
                    "route": route,
                    "query": query,
                    "status_code": status,
                    "duration_ms": duration,
                    "user_agent": user_agent,
                    "http_version": http_version,
                    "response_bytes": sent,
                    "event": "request_completed",
                    "logger": ACCESS_LOGGER,
                    "level": name,
                    "timestamp": self.stamp(),
                }
            else:
                # With capture on, the literal above's first eleven keys, then the captured ones.
                first = (method, path, route, query, status, duration, user_agent)
                event_dict = {_RID: rid, _IP: ip}
                event_dict.update(zip(REQUEST_FIELDS, (*first, http_version, sent), strict=True))
                event_dict.update(captured)
                event_dict["event"] = "request_completed"
                event_dict["logger"] = ACCESS_LOGGER
                event_dict["level"] = name
                event_dict["timestamp"] = self.stamp()
            service = self.service
            if service is not None:
                event_dict["service"] = service
            trace_guard = self.trace_guard
            if trace_guard is not None and trace_guard():
                assert self.trace is not None
                event_dict = self.trace(ACCESS, name, event_dict)
            redactor = self.redactor
            if redactor is not None:
                size = self.request_size
                if captured is not None:
                    size += len(captured)
                if len(event_dict) != size:  # trace IDs were added: the Redactor's own walk
                    event_dict = redactor(ACCESS, name, event_dict)
                else:
                    # Every value flat (checked or made so), the keys request_keys: what the
                    # Redactor does to such an event is its plan; and what it does to the
                    # capture fields, its plan for their keys.
                    for key, redact_value in self.request_plan:
                        value = event_dict[key]
                        new = redact_value(value)
                        if new is not value:
                            event_dict[key] = new
                    if captured is not None:
                        for key, redact_value in self._captured_plan(redactor, tuple(captured)):
                            value = event_dict[key]
                            new = redact_value(value)
                            if new is not value:
                                event_dict[key] = new
            line: Any = self.render(ACCESS, name, event_dict)
        except _DropEvent:
            return
        except Exception as exc:  # noqa: BLE001 - logging never breaks the app
            STATE.output.report("chain", f"could not log event {'request_completed'!r}: {exc!r}")
            return
        STATE.output.write(line, _WARNING if name in _IMPORTANT else _INFO)

    def _captured_plan(
        self, redactor: Redactor, keys: tuple[str, ...]
    ) -> tuple[tuple[Any, Callable[[Any], Any]], ...]:
        """The Redactor's plan for capture fields with these keys, remembered."""
        plan = self.captured_plans.get(keys)
        if plan is None:
            if len(self.captured_plans) >= _MAX_CAPTURED_PLANS:
                self.captured_plans.clear()
            plan = self.captured_plans[keys] = redactor.plan(keys, containers=True)
        return plan

    # -- app events: the bound logger's methods --------------------------------------------------

    def logger_methods(self, templates: Mapping[str, Callable[..., Any]]) -> dict[str, Any]:
        """Fused versions of the bound logger's enabled level methods (structlog's filtering
        methods in ``templates``; a level below the minimum keeps structlog's no-op)."""
        methods: dict[str, Any] = {}
        for name in ("debug", "info", "warning", "error", "critical"):
            if templates[name].__name__ == name:  # enabled: structlog's meth, not its _nop
                methods[name] = self._method(name)
        for alias, name in (("warn", "warning"), ("fatal", "critical"), ("msg", "info")):
            if name in methods:
                methods[alias] = methods[name]
        return methods

    def _method(self, method_name: str) -> Callable[..., Any]:
        fused = self
        important = _WARNING if method_name in _IMPORTANT else _INFO
        level = _LEVEL_NAMES.get(method_name, method_name)

        def method(self: Any, event: Any, *args: Any, **kw: Any) -> Any:
            if args:
                event = _interpolate(event, args)
            logger = self._logger
            processors = fused.processors
            if (
                STATE.captures  # fused._generic(), inline
                or not processors
                or processors[-1] is not fused.renderer
                or self._processors is not processors
                or type(logger) is not OutputLogger
            ):
                return self._proxy_to_logger(method_name, event, **kw)
            try:
                ctx = _CURRENT.get()
                event_dict: Any
                if ctx is None or STRUCTLOG_CONTEXT_VARS:
                    # structlog's BoundLoggerBase._process_event, then the chain.
                    event_dict = self._context.copy()
                    event_dict.update(kw)
                    if event is not None:
                        event_dict["event"] = event
                    if STRUCTLOG_CONTEXT_VARS:
                        event_dict = _merge_structlog(logger, method_name, event_dict)
                    line = fused._line(logger, method_name, event_dict)
                else:
                    # The same, with the request's context merged in the same step: its
                    # fields first, the bound values and keywords over them (one C-level
                    # copy of ctx.fields: a threadpool thread may be binding into it).
                    if ctx.user_pending and "user" in ctx.scope:
                        ctx.resolve_user()
                    event_dict = {**ctx.fields, **self._context, **kw}
                    if event is not None:
                        event_dict["event"] = event
                    line = fused._merged(logger, method_name, level, event_dict)
            except _DropEvent:
                return None
            except Exception as exc:  # noqa: BLE001 - logging never breaks the app
                STATE.output.report("chain", f"could not log event {event!r}: {exc!r}")
                return None
            STATE.output.write(line, important)
            return None

        method.__name__ = method_name
        method.__qualname__ = f"BoundLogger.{method_name}"
        return method


def _always() -> bool:
    return True


def _interpolate(event: Any, args: tuple[Any, ...]) -> Any:
    """``event % args`` as structlog's filtering logger does it (its ``_maybe_interpolate``):
    a single non-empty mapping is used for ``%(name)s`` placeholders."""
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        return event % args[0]
    return event % args
