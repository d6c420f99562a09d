"""Options -> the pipeline: the processor chain every event goes through, built once.

:func:`build` makes, from validated :class:`reqlog._options.Options`, the chain in the order
docs/processors.md documents (as bytes for reqlog's output, as text for the standard
library's handler), adds OpenTelemetry's pieces when asked for, and returns it as a
:class:`Pipeline`. It builds objects and holds no state: ``reqlog._configure`` swaps the
result into ``reqlog._state``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from reqlog import _render, _stdlib, context, schemas
from reqlog._access import AccessLog
from reqlog._emit import emit_access, level_methods, render_own_event
from reqlog._fused import FusedChain
from reqlog._options import Options
from reqlog._state import STATE
from reqlog.output import Output
from reqlog.processors import (
    AddStaticFields,
    IsoTimeStamper,
    Redactor,
    Sampler,
    SlowRequestOutput,
    WhenPresent,
    add_logger_name,
)

__all__ = ["Chain", "Guarded", "Pipeline", "build", "build_chain", "capture"]


class Guarded:
    """A user processor that cannot break logging: on error the event goes on without it."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.name = getattr(processor, "__qualname__", None) or repr(processor)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        try:
            return self.processor(logger, method_name, event_dict)
        except structlog.DropEvent:
            raise
        except Exception as exc:  # noqa: BLE001
            STATE.output.report(f"processor:{self.name}", f"processor {self.name} failed: {exc!r}")
            return event_dict


def capture(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor, last before rendering: hands a copy of the event to active captures
    (``reqlog.testing.capture_events``). Outside tests it costs one truth test."""
    captures = STATE.captures
    if captures:
        snapshot = dict(event_dict)
        for events in captures:
            events.append(snapshot)
    return event_dict


@dataclass(frozen=True)
class Chain:
    head: list[Processor]  # adds what every event carries: context, logger, level, time
    tail: list[Processor]  # user processors, exceptions, redaction, rendering


def build_chain(
    *,
    fmt: str,
    colors: bool,
    service: str | None,
    user_processors: Sequence[Processor],
    as_text: bool,
    schema: str = "flat",
    redactor: Redactor | None = None,
    sample_rate: float = 1.0,
    slow_output: Output | None = None,
    slow_colors: bool = False,
) -> Chain:
    """The default chain, in the order docs/processors.md documents.

    head: contextvars, request context, logger name, level, timestamp, [service].
    tail: [sampling], user processors, stack info, exceptions, [redaction], [control-character
    escaping], [slow-request output], rendering. Redaction comes after the user processors (a
    field one adds is still redacted) and after exceptions are rendered (so tracebacks are
    searched too), and before anything is rendered or written.
    """
    head: list[Processor] = [
        context.merge_structlog_contextvars,
        context.merge_request_context,
        add_logger_name,
        structlog.processors.add_log_level,
        IsoTimeStamper("timestamp"),
    ]
    if service is not None:
        head.append(AddStaticFields({"service": service}))
    tail: list[Processor] = []
    if sample_rate < 1.0:
        # Before the user processors: it reads reqlog's own fields, which they may rename.
        tail.append(Sampler(sample_rate))
    tail.extend(Guarded(p) for p in user_processors)
    render_exception: Processor
    if fmt == "json":
        if schema == "flat":
            # Structured tracebacks without local variables: locals are where secrets leak.
            render_exception = structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        else:
            # ECS error.stack_trace and OTel exception.stacktrace are text.
            render_exception = structlog.processors.format_exc_info
    else:
        # The traceback as text *before* redaction: left to the ConsoleRenderer, it would be
        # formatted after the redactor ran. ConsoleRenderer prints an ``exception`` string as
        # is, exactly as its ``plain_traceback`` formatter would have.
        render_exception = structlog.processors.format_exc_info
    tail.append(
        WhenPresent(
            ("stack_info", "exc_info"),
            [structlog.processors.StackInfoRenderer(), render_exception],
        )
    )
    if redactor is not None:
        tail.append(redactor)
    # After redaction, before rendering: the schema's renaming (JSON only: user processors and
    # the redactor see reqlog's flat names whatever the schema), the test-capture hook, and
    # control-character escaping for the text formats.
    finish: list[Processor] = []
    if fmt == "json":
        schema_step = schemas.schema_processor(schema)
        if schema_step is not None:
            finish.append(schema_step)
        finish.append(capture)
    elif fmt == "logfmt":
        finish.append(capture)  # LogfmtLine escapes keys and the finished line
    else:
        finish += [capture, _render.EscapeControls(keep_newlines_in=("exception", "stack"))]
    if slow_output is not None:
        # Before the schema renames ``slow`` and ``event``; it renders with the same steps.
        slow_render = [step for step in finish if step is not capture]
        slow_render += _render.renderers(fmt, slow_colors, as_text=False)
        tail.append(SlowRequestOutput(slow_output, slow_render))
    tail.extend(finish)
    tail.extend(_render.renderers(fmt, colors, as_text))
    return Chain(head, tail)


@dataclass(frozen=True)
class Pipeline:
    """What configure() installs: the chain, the access events' way out, the bound logger's
    fused methods, the standard library's handler, OTLP."""

    #: The chain for reqlog's own loggers and structlog's: events become bytes.
    processors: list[Processor]
    #: The access events' level policy and emitter (fused when the chain allows it).
    access: AccessLog
    #: The bound logger's level methods that take the fused path (none: the generic one).
    logger_methods: dict[str, Any]
    #: The root logger's handler (configure(stdlib=True)), rendering with the text chain.
    handler: logging.Handler | None
    #: reqlog.integrations.otel.OTLPEmitter, when configure(otlp=...).
    otlp: Any


def build(
    options: Options,
    *,
    fmt: str,
    colors: bool,
    slow_output: Output | None,
    slow_colors: bool,
) -> Pipeline:
    """The pipeline for ``options``; ``fmt`` is the format decided (never ``auto``)."""
    chain_options: dict[str, Any] = {
        "fmt": fmt,
        "colors": colors,
        "service": options.service,
        "user_processors": options.processors,
        "schema": options.schema,
        "redactor": options.redactor,
        "sample_rate": options.sample_rate,
        "slow_output": slow_output,
        "slow_colors": slow_colors,
    }
    chain = build_chain(as_text=False, **chain_options)
    text_chain = build_chain(as_text=True, **chain_options)
    otlp = _add_otel(chain, text_chain, options)
    handler = None
    if options.stdlib:
        handler = _stdlib.build_handler(options.level, text_chain.head, text_chain.tail)
    fused = _fuse(chain, options, fmt=fmt, slow_output=slow_output, otlp=otlp)
    return Pipeline(
        processors=[*chain.head, *chain.tail],
        access=AccessLog(
            options.status_levels,
            options.slow,
            emit_access if fused is None else fused.access,
            None if fused is None else fused.request,
        ),
        logger_methods={} if fused is None else fused.logger_methods(level_methods(options.level)),
        handler=handler,
        otlp=otlp,
    )


def _fuse(
    chain: Chain, options: Options, *, fmt: str, slow_output: Output | None, otlp: Any
) -> FusedChain | None:
    """The fused path for ``chain``, when nothing could tell it from the generic one: JSON
    with reqlog's names, none of the user's processors, no sampling, no slow-request output,
    no OTLP. ``None`` otherwise."""
    if (
        fmt != "json"
        or options.schema != "flat"
        or options.processors
        or options.sample_rate < 1.0
        or slow_output is not None
        or otlp is not None
    ):
        return None
    head, tail = chain.head, chain.tail
    # The chain build_chain() made for these options, step by step; checked, so that a change
    # there cannot leave the fused path doing something else.
    stamper, service_step, trace = head[4], None, None
    for step in head[5:]:
        if isinstance(step, AddStaticFields):
            service_step = step
        else:
            trace = step
    redactor = next((step for step in tail if isinstance(step, Redactor)), None)
    expected_head = [
        context.merge_structlog_contextvars,
        context.merge_request_context,
        add_logger_name,
        structlog.processors.add_log_level,
        stamper,
        *([service_step] if service_step is not None else []),
        *([trace] if trace is not None else []),
    ]
    expected_tail = [tail[0], *([redactor] if redactor is not None else []), capture, tail[-1]]
    if (
        head != expected_head
        or tail != expected_tail
        or not isinstance(stamper, IsoTimeStamper)
        or not isinstance(tail[0], WhenPresent)
        or not isinstance(tail[-1], _render.JSONRenderer)
        or (service_step is not None and list(service_step.fields) != ["service"])
    ):
        msg = f"reqlog: the default chain changed without its fused path: {head + tail!r}"
        raise AssertionError(msg)
    trace_guard = None
    if trace is not None:
        from reqlog.integrations import otel

        trace_guard = otel.current_context
    return FusedChain(
        STATE.processors,
        min_level=options.level,
        stamper=stamper,
        service=options.service,
        trace=trace,
        trace_guard=trace_guard,
        redactor=redactor,
        renderer=tail[-1],
        rest=tail,
    )


# --- OpenTelemetry (reqlog.integrations.otel, imported only when asked for or installed) -----


def _add_otel(chain: Chain, text_chain: Chain, options: Options) -> Any:
    """Put trace context on every event, and hand events to OpenTelemetry's log pipeline.

    Returns the OTLP emitter (``None`` without ``otlp``): it is not one of the output's sinks,
    so that a collector that is down never holds up the lines written there.
    """
    if not options.trace_context and options.otlp is None:
        return None
    from reqlog.integrations import otel

    if options.trace_context:
        # In the head: user processors see the IDs, and standard-library records get them too.
        chain.head.append(otel.add_trace_context)
        text_chain.head.append(otel.add_trace_context)
    if options.otlp is None:
        return None
    timeout = options.otlp_timeout
    emitter = otel.build_emitter(
        options.otlp,
        service=options.service,
        option=options.otlp_name,
        timeout=otel.DEFAULT_OTLP_TIMEOUT_S if timeout is None else timeout,
        on_lost=_on_lost(lambda: emitter),
    )
    # After redaction, before rendering: the collector gets what the lines show.
    for tail in (chain.tail, text_chain.tail):
        tail.insert(_rendering_start(tail), emitter)
    return emitter


def _on_lost(emitter: Callable[[], Any]) -> Callable[[int], None]:
    def lost(count: int) -> None:
        """One ``logs_dropped`` event for records the collector did not get, in the output only."""
        with emitter().quiet():
            line = render_own_event("logs_dropped", "warning", {"count": count, "reason": "otlp"})
        STATE.output.write(line, logging.WARNING)

    return lost


def _rendering_start(tail: list[Processor]) -> int:
    for index, processor in enumerate(tail):
        if isinstance(processor, _render.RENDERING):
            return index
    return len(tail)
