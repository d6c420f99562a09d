"""OpenTelemetry: trace and span IDs on every event, and events handed to the SDK's log pipeline.

Two independent pieces, both wired by :func:`reqlog.configure`:

- :func:`add_trace_context`, a processor that puts the current span's ``trace_id`` (32 hex
  digits) and ``span_id`` (16 hex digits) on every event, the form OpenTelemetry and log
  backends (Tempo, Jaeger, Datadog, Elastic) use to link a log line to its trace. configure()
  adds it whenever ``opentelemetry-api`` is installed (``trace_context=False`` turns it off).
- :class:`OTLPEmitter`, a processor that hands every event, after redaction, to an
  OpenTelemetry ``LoggerProvider``: ``configure(otlp=True)``,
  ``configure(otlp="http://collector:4318")`` or ``configure(otlp=my_logger_provider)``. The
  JSON lines still go to the output too. The provider reqlog builds sends through an
  :class:`OTLPChannel` (a bounded queue and one thread before the OTLP/HTTP exporter), so a
  collector that is down or slow never holds up the output, every flush waits at most
  ``otlp_timeout`` seconds for it, and every record it could not deliver is counted.

Nothing here is imported unless OpenTelemetry is installed (``pip install 'reqlog-asgi[otel]'``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import orjson
from structlog.typing import EventDict, WrappedLogger

from reqlog import _foreign
from reqlog.output import OutputStats, _Reporter, _write_stderr

try:
    from opentelemetry import trace
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.context import get_current
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from reqlog.integrations import missing

    raise missing("opentelemetry-api", "otel") from exc

if TYPE_CHECKING:
    from opentelemetry._logs import Logger, LoggerProvider

__all__ = [
    "DEFAULT_OTLP_TIMEOUT_S",
    "OTLPChannel",
    "OTLPEmitter",
    "add_trace_context",
    "build_emitter",
]

#: How long a flush (``reqlog.flush()``, exit, SIGTERM, reconfiguration) waits for the
#: collector at most, unless ``configure(otlp_timeout=...)`` says otherwise.
DEFAULT_OTLP_TIMEOUT_S: Final = 2.0

_INVALID_SPAN = trace.INVALID_SPAN_CONTEXT

# OpenTelemetry's current context: empty (false) while no span was entered, and then
# add_trace_context has nothing to add (reqlog's fused path asks it first, on every event:
# straight from its context variable where OpenTelemetry keeps it there).
current_context = _foreign.otel_current_context() or get_current


def add_trace_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: ``trace_id`` and ``span_id`` of the current valid span, as lower-case hex.

    Outside a span (or with a non-recording, invalid one) the event is left as it is. Values
    bound explicitly win.
    """
    current = get_current()
    if not current:
        # No span was ever entered here: nothing to look up (most events, and every one when
        # nothing starts spans). A span propagated without an SDK still lands in the context.
        return event_dict
    ctx = trace.get_current_span(current).get_span_context()
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

    def __init__(
        self,
        provider: LoggerProvider,
        *,
        owned: bool,
        channel: OTLPChannel | None = None,
        timeout: float = DEFAULT_OTLP_TIMEOUT_S,
    ) -> None:
        self.provider = provider
        self.owned = owned
        #: The queue before the exporter, when reqlog built the provider.
        self.channel = channel
        #: The longest a flush waits for OpenTelemetry, whatever timeout it was given.
        self.timeout = timeout
        self._loggers: dict[str, Logger] = {}
        self._local = threading.local()
        self._flusher: threading.Thread | None = None
        self._flushed = False

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

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Events logged in this block, in this thread, are not sent (reqlog's own notices
        about OTLP would go back to the collector that lost them)."""
        busy = getattr(self._local, "busy", False)
        self._local.busy = True
        try:
            yield
        finally:
            self._local.busy = busy

    def flush(self, timeout: float | None = None) -> bool:
        """Wait, at most ``min(timeout, self.timeout)`` seconds, until what was emitted is out.

        ``True`` only when nothing emitted so far is still on its way and nothing was lost
        since the previous flush (see :meth:`OTLPChannel.flush`). For a provider of your own,
        its ``force_flush()`` answers, run in a helper thread because the SDK's does not honour
        its timeout (opentelemetry-python #4568).
        """
        limit = self.timeout if timeout is None else max(0.0, min(timeout, self.timeout))
        if self.channel is not None:
            return self.channel.flush(limit)
        return self._bounded_force_flush(limit)

    def _bounded_force_flush(self, limit: float) -> bool:
        force_flush = getattr(self.provider, "force_flush", None)
        if force_flush is None:
            return True
        flusher = self._flusher
        if flusher is None or not flusher.is_alive():
            # One at a time: a flush still stuck in the exporter is waited for, not joined by
            # another thread behind the same lock.
            def run() -> None:
                try:
                    self._flushed = bool(force_flush(max(int(limit * 1000), 1)))
                except Exception:  # noqa: BLE001 - the provider's failure is the answer
                    self._flushed = False

            self._flushed = False
            flusher = self._flusher = threading.Thread(
                target=run, name="reqlog-otel-flush", daemon=True
            )
            flusher.start()
        flusher.join(limit)
        return not flusher.is_alive() and self._flushed

    def stats(self) -> OutputStats | None:
        """Records accepted, exported (``written``), lost (``dropped``) and failed exports
        (``errors``), when reqlog built the pipeline; ``None`` for a provider of your own."""
        return self.channel.stats() if self.channel is not None else None

    def close(self, timeout: float | None = None) -> None:
        """Flush (within the bound), then stop what reqlog built; a provider of your own is
        flushed and left running."""
        if not self.owned:
            self.flush(timeout)
            return
        if self.channel is not None:
            limit = self.timeout if timeout is None else max(0.0, min(timeout, self.timeout))
            self.channel.close(limit)
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(Exception):
                shutdown()


# --- the channel to the collector ---------------------------------------------------------------


def _export_result() -> Any:
    """The SDK's export result enum (renamed in recent releases), imported when first needed:
    with only opentelemetry-api installed, this module still serves trace context."""
    try:
        from opentelemetry.sdk._logs.export import LogRecordExportResult
    except ImportError:  # pragma: no cover - SDK releases before the rename
        from opentelemetry.sdk._logs.export import (  # type: ignore[assignment]
            LogExportResult as LogRecordExportResult,
        )
    return LogRecordExportResult


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


class OTLPChannel:
    """The way from reqlog's provider to the OTLP exporter: bounded, counted, never blocking.

    Written because the SDK's ``BatchLogRecordProcessor`` cannot keep reqlog's promises: its
    ``force_flush()`` ignores its timeout and returns ``True`` whatever the exporter answered
    (opentelemetry-python #4555, #4568), and a full queue drops records with no count. With a
    collector down, every flush and the exit then waited for the exporter's retries (5-7 s),
    and the output's writer, which flushed it, fell behind until lines were lost. The SDK's
    provider (resource, scopes), its ``SimpleLogRecordProcessor`` (which turns an emitted
    record into what exporters take, and hands it here as if this were its exporter: the
    exporter interface is ``export``, ``force_flush`` and ``shutdown``) and its OTLP exporter
    are used as they are; only the batching is reqlog's.

    - ``export()`` (the emitting thread): appends to a queue of at most ``queue_size``
      records, or counts the record as dropped when it is full. Never waits.
    - one daemon thread sends batches of up to ``batch_size`` records, every ``delay``
      seconds or as soon as a batch is full or a flush waits; a batch the exporter refuses or
      fails on (after its own retries) is counted as dropped, and reported on stderr at most
      once a minute.
    - :meth:`flush` waits with a deadline; :meth:`close` also stops the exporter (which ends a
      retry in progress) and counts what was left as dropped.
    - after records were lost, the next batch that goes through (or the close) writes one
      ``logs_dropped`` event (``reason: "otlp"``) to reqlog's output, through ``on_lost``.

    ``OTEL_BLRP_MAX_QUEUE_SIZE``, ``OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`` and
    ``OTEL_BLRP_SCHEDULE_DELAY`` (milliseconds) set the defaults, as for the SDK's processor.
    """

    def __init__(
        self,
        exporter: Any,
        *,
        name: str = "OTLP",
        queue_size: int | None = None,
        batch_size: int | None = None,
        delay: float | None = None,
        on_lost: Callable[[int], None] | None = None,
        report_interval: float = 60.0,
    ) -> None:
        self.exporter = exporter
        self.name = name
        self.queue_size = queue_size or _env_int("OTEL_BLRP_MAX_QUEUE_SIZE", 2048)
        self.batch_size = min(
            batch_size or _env_int("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512), self.queue_size
        )
        self.delay = (
            delay if delay is not None else _env_int("OTEL_BLRP_SCHEDULE_DELAY", 1000) / 1e3
        )
        self.on_lost = on_lost
        self._result = _export_result()
        self._reporter = _Reporter(report_interval)
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[Any] = []
        self._thread: threading.Thread | None = None
        self._waiting = 0  # flushes waiting: the thread sends at once instead of lingering
        self._closing = False
        self._unreported = 0  # lost since the last logs_dropped notice
        self._lost_seen = 0  # lost as of the previous flush
        self.accepted = self.exported = self.dropped = self.errors = 0
        _CHANNELS.add(self)

    # -- the emitting side (the SDK's SimpleLogRecordProcessor calls these) ----------------------

    def export(self, batch: Sequence[Any]) -> Any:
        report = None
        with self._cond:
            for record in batch:
                self.accepted += 1
                if self._closing or len(self._queue) >= self.queue_size:
                    self.dropped += 1
                    self._unreported += 1
                    report = self._reporter.report(
                        "queue", f"{self.name}: the queue is full, records are dropped"
                    )
                    continue
                self._queue.append(record)
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(target=self._run, name="reqlog-otlp", daemon=True)
                self._thread.start()
            elif len(self._queue) >= self.batch_size:
                self._cond.notify_all()
        if report is not None:
            _write_stderr(report)
        return self._result.SUCCESS

    def shutdown(self) -> None:
        """The SDK's shutdown of the provider; :meth:`close` does the work."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.flush(timeout_millis / 1000)

    # -- reqlog's side ------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds until every record accepted so far is settled.

        ``True`` only when none is still pending and none was lost since the previous flush
        (a loss makes exactly one flush say so; ``stats()`` keeps the count).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self.accepted
            settled = True
            self._waiting += 1
            self._cond.notify_all()
            try:
                while self.exported + self.dropped < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                        settled = False
                        break
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1
            lost, self._lost_seen = self.dropped - self._lost_seen, self.dropped
        return settled and not lost

    def close(self, timeout: float) -> None:
        """Flush within ``timeout``, then stop: the exporter is shut down (which ends a retry
        in progress) and what was still queued is counted as dropped."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            leftover, self._queue = len(self._queue), []
            self.dropped += leftover
            self._unreported += leftover
            self._cond.notify_all()
        with contextlib.suppress(Exception):
            self.exporter.shutdown()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(min(timeout, 1.0))
        _CHANNELS.discard(self)
        self._notify_lost()

    def stats(self) -> OutputStats:
        with self._cond:
            return OutputStats(
                accepted=self.accepted,
                written=self.exported,
                dropped=self.dropped,
                errors=self.errors,
            )

    # -- the sending thread ---------------------------------------------------------------------

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._queue and not self._closing:
                    cond.wait()
                if not self._queue:
                    return
                if len(self._queue) < self.batch_size and not self._waiting:
                    # Let a batch fill; a flush, a close or a full batch cuts it short.
                    cond.wait(self.delay)
                    if not self._queue:  # close() took what was left meanwhile
                        continue
                batch = self._queue[: self.batch_size]
                del self._queue[: self.batch_size]
            failure = self._send(batch)
            report = None
            if failure is None:
                # The collector is back: say what it missed before flush() hears of this batch.
                self._notify_lost()
            with cond:
                if failure is None:
                    self.exported += len(batch)
                else:
                    self.dropped += len(batch)
                    self._unreported += len(batch)
                    self.errors += 1
                    report = self._reporter.report(
                        "export",
                        f"{self.name}: could not export {len(batch)} records: {failure}",
                    )
                cond.notify_all()
            if report is not None:
                _write_stderr(report)

    def _send(self, batch: list[Any]) -> str | None:
        """Export one batch; ``None`` on success, else what went wrong."""
        try:
            result = self.exporter.export(batch)
        except Exception as exc:  # noqa: BLE001 - a failing exporter must not end the thread
            return repr(exc)
        return None if result == self._result.SUCCESS else f"the exporter returned {result!r}"

    def _notify_lost(self) -> None:
        with self._cond:
            count, self._unreported = self._unreported, 0
        if count and self.on_lost is not None:
            with contextlib.suppress(Exception):
                self.on_lost(count)

    def _after_fork(self) -> None:
        # The sending thread did not survive fork(); the parent sends what it had queued.
        self._cond = threading.Condition(threading.Lock())
        self._queue = []
        self._thread = None
        self._waiting = 0
        self._unreported = self._lost_seen = 0
        self.accepted = self.exported = self.dropped = self.errors = 0


_CHANNELS: weakref.WeakSet[OTLPChannel] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for channel in list(_CHANNELS):
        channel._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def build_emitter(
    value: Any,
    *,
    service: str | None,
    option: str = "otlp",
    timeout: float = DEFAULT_OTLP_TIMEOUT_S,
    on_lost: Callable[[int], None] | None = None,
) -> OTLPEmitter:
    """The emitter for ``configure(otlp=value)``; ``ValueError`` naming ``option`` if invalid.

    ``True`` uses the exporter's defaults (``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://localhost:4318/v1/logs``); a URL names the
    collector (``/v1/logs`` is added to a bare ``http://host:4318``); a ``LoggerProvider`` is
    used as it is, with whatever processors and exporters it has. ``timeout`` bounds every
    flush's wait for OpenTelemetry; ``on_lost(count)`` is told of records the collector did
    not get (reqlog writes a ``logs_dropped`` event).
    """
    if not isinstance(value, bool | str) and hasattr(value, "get_logger"):
        return OTLPEmitter(value, owned=False, timeout=timeout)
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
        from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
        from opentelemetry.sdk.resources import Resource
    except ImportError as exc:
        msg = (
            f"{option}: needs opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http: "
            "pip install 'reqlog-asgi[otel]'"
        )
        raise ValueError(msg) from exc
    exporter = OTLPLogExporter(endpoint=endpoint)
    channel = OTLPChannel(
        exporter, name=f"OTLP to {endpoint}" if endpoint else "OTLP", on_lost=on_lost
    )
    resource = Resource.create({"service.name": service} if service else {})
    provider = SDKLoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(channel))  # type: ignore[arg-type]
    return OTLPEmitter(provider, owned=True, channel=channel, timeout=timeout)
