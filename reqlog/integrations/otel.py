"""OpenTelemetry: trace and span IDs on every event, and events handed to the SDK's log pipeline.

Two independent pieces, both wired by :func:`reqlog.configure`:

- :func:`add_trace_context`, a processor that puts the current span's ``trace_id`` (32 hex
  digits) and ``span_id`` (16 hex digits) on every event, the form OpenTelemetry and log
  backends (Tempo, Jaeger, Datadog, Elastic) use to link a log line to its trace. configure()
  adds it whenever ``opentelemetry-api`` is installed (``trace_context=False`` turns it off).
- :class:`OTLPEmitter`, a processor that hands every event, after redaction, to an
  OpenTelemetry ``LoggerProvider`` (by default one with a ``BatchLogRecordProcessor`` and the
  OTLP/HTTP exporter): ``configure(otlp=True)``, ``configure(otlp="http://collector:4318")``
  or ``configure(otlp=my_logger_provider)``. The JSON lines still go to the output too.

Nothing here is imported unless OpenTelemetry is installed (``pip install 'reqlog-asgi[otel]'``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from structlog.typing import EventDict, WrappedLogger

from reqlog.output import Sink

try:
    from opentelemetry import trace
    from opentelemetry._logs import LogRecord, SeverityNumber
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from reqlog.integrations import missing

    raise missing("opentelemetry-api", "otel") from exc

if TYPE_CHECKING:
    from opentelemetry._logs import Logger, LoggerProvider

__all__ = ["OTLPEmitter", "OTLPFlushSink", "add_trace_context", "build_emitter"]

_INVALID_SPAN = trace.INVALID_SPAN_CONTEXT


def add_trace_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: ``trace_id`` and ``span_id`` of the current valid span, as lower-case hex.

    Outside a span (or with a non-recording, invalid one) the event is left as it is. Values
    bound explicitly win.
    """
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        if "trace_id" not in event_dict:
            event_dict["trace_id"] = format(ctx.trace_id, "032x")
        if "span_id" not in event_dict:
            event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


_SEVERITY: Mapping[str, tuple[SeverityNumber, str]] = {
    "debug": (SeverityNumber.DEBUG, "DEBUG"),
    "info": (SeverityNumber.INFO, "INFO"),
    "warning": (SeverityNumber.WARN, "WARN"),
    "warn": (SeverityNumber.WARN, "WARN"),
    "error": (SeverityNumber.ERROR, "ERROR"),
    "exception": (SeverityNumber.ERROR, "ERROR"),
    "critical": (SeverityNumber.FATAL, "FATAL"),
    "fatal": (SeverityNumber.FATAL, "FATAL"),
}
# Fields that become the record's own parts, not attributes.
_RECORD_FIELDS = frozenset({"event", "level", "timestamp"})
_PRIMITIVES = (str, bool, int, float)


def _attribute(value: Any) -> Any:
    """An OTel attribute value: primitives and homogeneous lists of them as they are."""
    if isinstance(value, _PRIMITIVES):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            return str(value)
        return value
    if isinstance(value, list | tuple) and value:
        kind = type(value[0])
        if kind in (str, bool, int, float) and all(type(v) is kind for v in value):
            return tuple(value)
    return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


def _timestamp_ns(value: Any) -> int:
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return time.time_ns()
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    return time.time_ns()


class OTLPEmitter:
    """Processor: emit the event as an OpenTelemetry ``LogRecord``; the event goes on unchanged.

    ``body`` is the event name, severity comes from the level, the timestamp from the event's,
    trace context from the current span, and every other field becomes an attribute (values
    OTel cannot hold, such as mappings, as JSON strings; ``None`` values are left out, as
    OTel attributes have no null). ``logger`` also names the OTel logger (instrumentation
    scope). Events of OpenTelemetry's own loggers are not sent back into it.
    """

    def __init__(self, provider: LoggerProvider, *, owned: bool) -> None:
        self.provider = provider
        self.owned = owned
        self._loggers: dict[str, Logger] = {}
        self._local = threading.local()

    def _logger(self, name: str) -> Logger:
        otel_logger = self._loggers.get(name)
        if otel_logger is None:
            otel_logger = self._loggers[name] = self.provider.get_logger(name)
        return otel_logger

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        name = event_dict.get("logger")
        name = name if isinstance(name, str) else "reqlog"
        if name.startswith("opentelemetry") or getattr(self._local, "busy", False):
            return event_dict  # the exporter's own complaints would loop back into it
        self._local.busy = True
        try:
            self._emit(name, method_name, event_dict)
        finally:
            self._local.busy = False
        return event_dict

    def _emit(self, name: str, method_name: str, event_dict: EventDict) -> None:
        level = event_dict.get("level", method_name)
        severity, text = _SEVERITY.get(str(level).lower(), (SeverityNumber.INFO, "INFO"))
        span_valid = trace.get_current_span().get_span_context().is_valid
        attributes: dict[str, Any] = {}
        for key, value in event_dict.items():
            if key in _RECORD_FIELDS or value is None:
                continue
            if span_valid and key in ("trace_id", "span_id"):
                continue  # carried by the record's own trace context
            attributes[str(key)] = _attribute(value)
        body = event_dict.get("event")
        record = LogRecord(
            timestamp=_timestamp_ns(event_dict.get("timestamp")),
            severity_number=severity,
            severity_text=text,
            body=body if isinstance(body, str) else _attribute(body),
            attributes=attributes,
        )
        self._logger(name).emit(record)

    def flush(self, timeout: float | None = None) -> None:
        millis = 30_000 if timeout is None else max(int(timeout * 1000), 1)
        force_flush = getattr(self.provider, "force_flush", None)
        if force_flush is not None:
            force_flush(millis)

    def close(self) -> None:
        if self.owned:
            shutdown = getattr(self.provider, "shutdown", None)
            if shutdown is not None:
                shutdown()
        else:
            self.flush()


class OTLPFlushSink(Sink):
    """Writes nothing: ties the emitter's provider to reqlog's flush() and reconfiguration."""

    name = "otlp"

    def __init__(self, emitter: OTLPEmitter) -> None:
        self.emitter = emitter

    def write(self, data: bytes) -> None:
        """Lines go out through the emitter, not here."""

    def flush(self) -> None:
        self.emitter.flush(timeout=5.0)

    def close(self) -> None:
        self.emitter.close()


def build_emitter(value: Any, *, service: str | None, option: str = "otlp") -> OTLPEmitter:
    """The emitter for ``configure(otlp=value)``; ``ValueError`` naming ``option`` if invalid.

    ``True`` uses the exporter's defaults (``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://localhost:4318/v1/logs``); a URL names the
    collector (``/v1/logs`` is added to a bare ``http://host:4318``); a ``LoggerProvider`` is
    used as it is, with whatever processors and exporters it has.
    """
    if not isinstance(value, bool | str) and hasattr(value, "get_logger"):
        return OTLPEmitter(value, owned=False)
    endpoint: str | None = None
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            msg = f"{option}: expected True, an http(s) URL or a LoggerProvider, got {value!r}"
            raise ValueError(msg)
        endpoint = value if parts.path not in ("", "/") else value.rstrip("/") + "/v1/logs"
    elif value is not True:
        msg = f"{option}: expected True, an http(s) URL or a LoggerProvider, got {value!r}"
        raise ValueError(msg)
    try:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider as SDKLoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.resources import Resource
    except ImportError as exc:
        msg = (
            f"{option}: needs opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http: "
            "pip install 'reqlog-asgi[otel]'"
        )
        raise ValueError(msg) from exc
    resource = Resource.create({"service.name": service} if service else {})
    provider = SDKLoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint)))
    return OTLPEmitter(provider, owned=True)
