"""configure(), reset() and default_processors(): validate, build, swap the live configuration.

configure() is the one place that changes what reqlog does: the options are validated
(``reqlog._options``), the outputs opened and the pipeline built (``reqlog._pipeline``), then
every part of the live configuration (``reqlog._state``) is swapped under one lock and the
old outputs closed. Loggers used before configure() configure the defaults first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import structlog
from structlog.typing import Processor

from reqlog import _emit, _options, _pipeline, _stdlib
from reqlog._options import UNSET, Format
from reqlog._state import STATE, Settings, install_sigterm_flush
from reqlog.output import Output, Sink, StreamSink, build_sinks
from reqlog.processors import Redactor, sample_rate_value

__all__ = [
    "configure",
    "default_processors",
    "ensure_configured",
    "is_configured",
    "reset",
    "settings",
]


def configure(
    *,
    level: int | str = UNSET,
    format: Format = UNSET,  # noqa: A002 - the documented option name
    output: Any = UNSET,
    service: str | None = UNSET,
    processors: Sequence[Processor] = (),
    stdlib: bool = True,
    status_levels: Mapping[int | str, int | str] | Callable[[int, bool], int | str] | None = None,
    slow_request_ms: float | None = UNSET,
    slow_routes: Mapping[str, float] | None = None,
    trace_context: bool | None = None,
    otlp: Any = UNSET,
    otlp_timeout: float = UNSET,
    schema: str = UNSET,
    redact: Redactor | bool = True,
    sample_rate: float = UNSET,
    slow_output: Any = None,
    background: bool | None = UNSET,
    queue_size: int = UNSET,
    queue_bytes: int = UNSET,
    overflow: Literal["drop", "block"] = UNSET,
    rotate_bytes: int | None = None,
    rotate_when: str | None = None,
    backups: int = 0,
) -> None:
    """Set up reqlog once at startup; calling it again replaces the whole setup.

    Every option has a default; an option not passed falls back to ``REQLOG_<OPTION>`` in the
    environment where one makes sense. Invalid values raise ``ValueError`` here, naming the
    option, never later at log time.

    ``trace_context`` puts the current OpenTelemetry span's ``trace_id``/``span_id`` on every
    event (default: whenever opentelemetry-api is installed). ``otlp`` (``True``, a collector
    URL, or a ``LoggerProvider``; ``REQLOG_OTLP``) also hands every event to OpenTelemetry's
    log pipeline; see ``reqlog.integrations.otel``. ``otlp_timeout`` (seconds, default 2;
    ``REQLOG_OTLP_TIMEOUT``) is the longest any flush, the one at exit included, waits for it.

    >>> configure(service="orders", level="DEBUG", format="json", output=io.BytesIO())
    """
    options = _options.configure_options(
        level=level,
        format=format,
        output=output,
        service=service,
        processors=processors,
        stdlib=stdlib,
        status_levels=status_levels,
        slow_request_ms=slow_request_ms,
        slow_routes=slow_routes,
        trace_context=trace_context,
        otlp=otlp,
        otlp_timeout=otlp_timeout,
        schema=schema,
        redact=redact,
        sample_rate=sample_rate,
        slow_output=slow_output,
        background=background,
        queue_size=queue_size,
        queue_bytes=queue_bytes,
        overflow=overflow,
        rotate_bytes=rotate_bytes,
        rotate_when=rotate_when,
        backups=backups,
    )
    outputs = options.outputs
    sinks: list[Sink] = build_sinks(
        options.output,
        options.output_name,
        rotate_bytes=outputs.rotate_bytes,
        rotate_when=outputs.rotate_when,
        backups=outputs.backups,
    )
    run_in_background = outputs.background
    if run_in_background is None:
        # Streams the user handed over (a BytesIO in a test) are written before write()
        # returns; stdout, stderr and files reqlog opened get the background writer.
        run_in_background = _all_owned(sinks)
    slow_sinks: list[Sink] = []
    try:
        if options.slow_output is not None:
            slow_sinks = build_sinks(options.slow_output, "slow_output")
        slow_out = (
            Output(
                slow_sinks,
                # The same rule as the main output: a stalled slow channel must not stall
                # the requests that are slow enough to be written to it.
                background=_all_owned(slow_sinks)
                if outputs.background is None
                else outputs.background,
                queue_size=outputs.queue_size,
                queue_bytes=outputs.queue_bytes,
                overflow=outputs.overflow,
                render=_emit.render_own_event,
            )
            if slow_sinks
            else None
        )
        fmt = options.format
        if fmt == "auto":
            fmt = "console" if _isatty(sinks[0]) else "json"
        pipeline = _pipeline.build(
            options,
            fmt=fmt,
            colors=fmt == "console" and _isatty(sinks[0]),
            slow_output=slow_out,
            slow_colors=fmt == "console" and bool(slow_sinks) and _isatty(slow_sinks[0]),
        )
    except Exception:
        for sink in [*sinks, *slow_sinks]:
            sink.close()
        raise

    new_settings = Settings(
        level=options.level,
        format=fmt,
        service=options.service,
        status_levels=options.status_levels,
        slow=options.slow,
        stdlib=options.stdlib,
        schema=options.schema if fmt == "json" else "flat",
        redactor=options.redactor,
        sample_rate=options.sample_rate,
    )
    with STATE.lock:
        old_output = STATE.output
        STATE.output = Output(
            sinks,
            background=run_in_background,
            queue_size=outputs.queue_size,
            queue_bytes=outputs.queue_bytes,
            overflow=outputs.overflow,
            render=_emit.render_own_event,
        )
        _emit.apply_level(options.level, pipeline.logger_methods)
        _emit.BoundLogger._proxy_to_logger = _emit.proxy_to_logger  # type: ignore[method-assign]
        STATE.processors[:] = pipeline.processors
        STATE.access = pipeline.access
        structlog.configure(
            processors=STATE.processors,
            wrapper_class=_emit.BoundLogger,
            logger_factory=_emit.logger_factory,
            context_class=dict,
            cache_logger_on_first_use=True,
        )
        _stdlib.route_handler(pipeline.handler, options.level)
        STATE.settings = new_settings
        old_slow_output, STATE.slow_output = STATE.slow_output, slow_out
        old_otlp, STATE.otlp = STATE.otlp, pipeline.otlp
    if old_otlp is not None:
        old_otlp.close()  # bounded by its otlp_timeout; before the old output closes
    if old_output is not STATE.output:
        old_output.close()
    if old_slow_output is not None:
        old_slow_output.close()
    if run_in_background:
        install_sigterm_flush()


def _all_owned(sinks: Sequence[Sink]) -> bool:
    return all(not isinstance(s, StreamSink) or s.owned for s in sinks)


def _isatty(sink: Sink) -> bool:
    stream = getattr(sink, "stream", None)
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def default_processors(
    *,
    format: str = "json",  # noqa: A002 - the option's name in configure()
    service: str | None = None,
    processors: Sequence[Processor] = (),
    redact: Redactor | bool = True,
    sample_rate: float = 1.0,
    colors: bool = False,
    schema: str = "flat",
) -> list[Processor]:
    """The processor chain configure() builds, as a new list you may change and reuse.

    The options mean what they mean in configure(). The last processor returns the rendered
    line as ``str`` without a newline, which is what structlog's ``PrintLogger`` and
    ``WriteLogger`` and the standard library's handlers expect. For example, a worker process
    that uses structlog directly but wants reqlog's fields, redaction and format:

    >>> structlog.configure(
    ...     processors=reqlog.default_processors(service="orders-worker"),
    ...     logger_factory=structlog.WriteLoggerFactory(io.StringIO()),
    ... )
    """
    chain = _pipeline.build_chain(
        fmt=_options.format_option(format, "format", _options.FORMATS[:-1]),
        colors=bool(colors),
        service=_options.service_option(service),
        user_processors=_options.processors_option(processors),
        as_text=True,
        redactor=_options.redact_option(redact),
        sample_rate=sample_rate_value(sample_rate),
        schema=_options.schema_option(schema),
    )
    return [*chain.head, *chain.tail]


def reset() -> None:
    """Back to the unconfigured state: reqlog's handler removed, server loggers left propagating.

    For tests: the next log call configures defaults again.
    """
    with STATE.lock:
        _stdlib.route_handler(None, logging.NOTSET)
        STATE.output.close()
        STATE.output = Output([])
        if STATE.slow_output is not None:
            STATE.slow_output.close()
            STATE.slow_output = None
        if STATE.otlp is not None:
            STATE.otlp.close()
            STATE.otlp = None
        STATE.settings = None
        STATE.access = None
        STATE.processors[:] = []
        _emit.apply_level(logging.INFO)
        _emit.BoundLogger._proxy_to_logger = _configure_first  # type: ignore[method-assign]
        structlog.reset_defaults()
    logging.getLogger("uvicorn.access").disabled = False


def ensure_configured() -> None:
    """Configure the defaults if nothing did yet: loggers work before configure(), but leave
    the standard library alone until the application asks for it."""
    if STATE.settings is None:
        with STATE.lock:
            if STATE.settings is None:
                configure(stdlib=False)


def settings() -> Settings:
    """What configure() decided (the defaults, configured now, if nothing was)."""
    current = STATE.settings
    if current is None:
        ensure_configured()
        current = STATE.settings
    assert current is not None
    return current


def is_configured() -> bool:
    return STATE.settings is not None


def _configure_first(
    self: _emit.BoundLogger, method_name: str, event: str | None = None, **event_kw: Any
) -> Any:
    """A logger's way to the chain while reqlog is not configured: the defaults first."""
    ensure_configured()
    return _emit.proxy_to_logger(self, method_name, event, **event_kw)


# Until configure() runs, a log call configures the defaults.
_emit.BoundLogger._proxy_to_logger = _configure_first  # type: ignore[method-assign]
