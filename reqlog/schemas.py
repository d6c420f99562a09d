"""Field schemas: reqlog's flat field names mapped to ECS or OpenTelemetry names before rendering.

``configure(schema="ecs")`` or ``schema="otel"`` puts one of these processors right before the
JSON renderer, after redaction, so user processors and the redactor always see reqlog's own flat
names (``status_code``, ``duration_ms``) and only the written line changes.

The mappings are plain dictionaries (:data:`ECS_FIELDS`, :data:`OTEL_FIELDS`), precomputed into
lookup tables once in ``__init__``, so ``__call__`` is a single pass over the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # the field maps are read by ``reqlog`` the command, which needs no structlog
    from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "ECS_FIELDS",
    "ECS_VERSION",
    "OTEL_FIELDS",
    "SCHEMAS",
    "ECSSchema",
    "OTelSchema",
    "required_keys",
    "schema_processor",
]

#: The schema names ``configure(schema=...)`` accepts.
SCHEMAS: Final = ("flat", "ecs", "otel")

#: The ECS version written as ``ecs.version``: the one the ``ecs-logging`` package writes, so
#: that lines from reqlog and from ecs-logging's own formatters land in the same index mapping.
ECS_VERSION: Final = "1.6.0"

#: reqlog's flat field name -> Elastic Common Schema field (dotted; nested on output).
ECS_FIELDS: Final[Mapping[str, str]] = {
    "timestamp": "@timestamp",
    "level": "log.level",
    "event": "message",
    "logger": "log.logger",
    "service": "service.name",
    "request_id": "http.request.id",
    "method": "http.request.method",
    "path": "url.path",
    "query": "url.query",
    "scheme": "url.scheme",
    "host": "url.domain",
    "status_code": "http.response.status_code",
    "duration_ms": "event.duration",
    "client_ip": "client.ip",
    "user_agent": "user_agent.original",
    "http_version": "http.version",
    "request_bytes": "http.request.body.bytes",
    "response_bytes": "http.response.body.bytes",
    "user_id": "user.id",
    "user_email": "user.email",
    "trace_id": "trace.id",
    "span_id": "span.id",
    "error_type": "error.type",
    "error_message": "error.message",
    "exception": "error.stack_trace",
}

#: reqlog's flat field name -> OpenTelemetry semantic-conventions attribute (kept dotted, flat).
OTEL_FIELDS: Final[Mapping[str, str]] = {
    "service": "service.name",
    "method": "http.request.method",
    "route": "http.route",
    "path": "url.path",
    "query": "url.query",
    "scheme": "url.scheme",
    "host": "server.address",
    "status_code": "http.response.status_code",
    "client_ip": "client.address",
    "user_agent": "user_agent.original",
    "http_version": "network.protocol.version",
    "request_bytes": "http.request.body.size",
    "response_bytes": "http.response.body.size",
    "user_id": "user.id",
    "user_email": "user.email",
    "error_type": "exception.type",
    "error_message": "exception.message",
    "exception": "exception.stacktrace",
}

# ecs-logging writes these two dotted at the top level and nests everything else.
_ECS_TOP_LEVEL_DOTTED: Final = frozenset({"log.level", "ecs.version"})


def _stack_trace(value: Any) -> Any:
    # ECS error.stack_trace and OTel exception.stacktrace are strings; a structured traceback
    # would clash with the index mapping. reqlog's chain renders tracebacks as text for these
    # schemas; this only guards against a user processor that put something else there.
    return value if isinstance(value, str) else str(value)


def _duration_ns(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * 1_000_000)
    return value


class ECSSchema:
    """Processor: renames reqlog's flat fields to Elastic Common Schema fields, nested.

    The result has the shape that ``ecs_logging.StructlogFormatter`` produces: ``@timestamp``,
    ``log.level`` and ``message`` first, ``log.level`` and ``ecs.version`` as dotted top-level
    keys, every other dotted name nested (``{"http": {"request": {"method": "GET"}}}``).
    ``duration_ms`` becomes ``event.duration`` in integer nanoseconds.

    Fields without an ECS name keep their own names at the top level, as ecs-logging does. A
    field whose name is also the root of an ECS object (a bound ``user="alice"`` next to
    ``user.id``) cannot sit beside it, so it moves to ``labels`` (``labels.user``), ECS's place
    for custom values. Dotted names of the user's own (``"cloud.region"``) are nested too.

    >>> ECSSchema()(None, "info", {"event": "hi", "status_code": 200})["http"]
    {'response': {'status_code': 200}}
    """

    def __init__(self, fields: Mapping[str, str] = ECS_FIELDS) -> None:
        self._targets: dict[str, tuple[str, ...] | str] = {}
        for flat, dotted in fields.items():
            if "." in dotted and dotted not in _ECS_TOP_LEVEL_DOTTED:
                self._targets[flat] = tuple(dotted.split("."))
            else:
                self._targets[flat] = dotted

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        # The three keys ECS readers expect first, in ecs-logging's order.
        out: dict[str, Any] = {}
        if "timestamp" in event_dict:
            out["@timestamp"] = None
        out["log.level"] = None
        out["message"] = None
        labels: dict[str, Any] = {}
        targets = self._targets
        for key, value in event_dict.items():
            target = targets.get(key)
            if target is None:
                if "." not in key or key in _ECS_TOP_LEVEL_DOTTED:
                    if key in _ECS_LEADING:
                        labels[key] = value  # reqlog's own event, level and time win
                    elif type(out.get(key)) is dict:
                        _put(out, key, (key,), value, labels)
                    else:
                        out[key] = value
                    continue
                target = tuple(key.split("."))
            elif key == "duration_ms":
                value = _duration_ns(value)
            elif key == "exception":
                value = _stack_trace(value)
            if isinstance(target, str):
                out[target] = value
                continue
            # Fast path: every object on the way is absent or a dict, the leaf is free.
            node = out
            for part in target[:-1]:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                elif type(child) is not dict:
                    _put(out, key, target, value, labels)
                    break
                node = child
            else:
                leaf = target[-1]
                if type(node.get(leaf)) is dict:
                    _put(out, key, target, value, labels)
                else:
                    node[leaf] = value
        if out["log.level"] is None:
            out["log.level"] = method_name
        if out["message"] is None:
            del out["message"]
        if labels:
            existing = out.get("labels")
            out["labels"] = {**existing, **labels} if isinstance(existing, dict) else labels
        out.setdefault("ecs.version", ECS_VERSION)
        return out


_ECS_LEADING: Final = frozenset({"@timestamp", "log.level", "message"})


def _put(
    out: dict[str, Any], name: str, path: tuple[str, ...], value: Any, labels: dict[str, Any]
) -> None:
    """Set ``path`` in ``out``; a plain value in the way of an ECS object moves to ``labels``."""
    node = out
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            if child is not None:
                labels[".".join(path[: depth + 1])] = child
            child = node[part] = {}
        node = child
    leaf = path[-1]
    current = node.get(leaf)
    if isinstance(current, dict):
        if isinstance(value, dict):
            node[leaf] = {**value, **current}  # the ECS object's own fields win
        else:
            labels[name] = value
        return
    node[leaf] = value


class OTelSchema:
    """Processor: renames reqlog's fields to OpenTelemetry semantic-conventions attributes.

    Names stay dotted and flat (``"http.response.status_code": 200``), as OpenTelemetry's log
    attributes are; ``timestamp``, ``level``, ``event`` and ``logger`` keep their names. A name
    the event already carries (set by the user) is not overwritten.

    >>> OTelSchema()(None, "info", {"event": "hi", "status_code": 200})
    {'event': 'hi', 'http.response.status_code': 200}
    """

    def __init__(self, fields: Mapping[str, str] = OTEL_FIELDS) -> None:
        self._targets = dict(fields)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        targets = self._targets
        out: dict[str, Any] = {}
        for key, value in event_dict.items():
            target = targets.get(key)
            if target is None:
                out[key] = value
            elif target in event_dict:
                out[key] = value  # the user's own value under that name wins
            else:
                out[target] = _stack_trace(value) if key == "exception" else value
        return out


def schema_processor(schema: str) -> Processor | None:
    """The processor for ``schema``, or ``None`` for ``"flat"`` (reqlog's own names)."""
    if schema == "ecs":
        return ECSSchema()
    if schema == "otel":
        return OTelSchema()
    return None


def required_keys(schema: str) -> tuple[str, ...]:
    """The dotted names every event has under ``schema``: event, level, timestamp, logger."""
    names = ("event", "level", "timestamp", "logger")
    if schema == "ecs":
        return tuple(ECS_FIELDS[n] for n in names)
    return names
