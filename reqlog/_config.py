"""configure(): the one place that builds the processor chain, the outputs and stdlib routing."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from reqlog import _escape, context, schemas
from reqlog import output as _output
from reqlog.output import Output, Sink, StreamSink, build_sinks
from reqlog.processors import (
    AddStaticFields,
    IsoTimeStamper,
    Redactor,
    Sampler,
    SlowRequestOutput,
    SlowRequests,
    StatusLevels,
    WhenPresent,
    add_logger_name,
    parse_level,
    sample_rate_value,
)

__all__ = ["configure", "default_processors", "get_logger", "is_configured"]

Format = Literal["json", "console", "logfmt", "auto"]
_FORMATS: Final = ("json", "console", "logfmt", "auto")

#: The name of the logger that writes the access events.
ACCESS_LOGGER = "reqlog.access"

#: Loggers of servers that reqlog takes over: their handlers go, their records propagate to
#: the root logger, where reqlog's handler renders them like every other event.
SERVER_LOGGERS: Final = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "gunicorn",
    "gunicorn.error",
    "gunicorn.access",
)


@dataclass(frozen=True)
class Settings:
    """What configure() decided; the middleware reads it once per request."""

    level: int
    format: str
    service: str | None
    status_levels: StatusLevels
    slow: SlowRequests
    stdlib: bool
    schema: str = "flat"
    # Processors (#3): the active Redactor (None when off), for code that redacts outside
    # the chain, and the access-event sample rate.
    redactor: Redactor | None = None
    sample_rate: float = 1.0


class _State:
    """The live configuration. One object, its attributes swapped whole by configure()."""

    def __init__(self) -> None:
        self.output = Output([])
        self.settings: Settings | None = None
        self.handler: logging.Handler | None = None
        self.lock = threading.RLock()
        # The second output for slow requests (configure(slow_output=...)), if any.
        self.slow_output: Output | None = None
        # configure(otlp=...): reqlog.integrations.otel.OTLPEmitter, flushed and counted
        # beside the outputs by reqlog.flush() and reqlog.output_stats().
        self.otlp: Any = None


_STATE = _State()

# --- capture for tests (reqlog.testing.capture_events, the reqlog_events fixture) -----------

#: Lists that receive a copy of every processed event, right before rendering. Empty outside
#: tests, so the hook costs one truth test per event.
_CAPTURES: list[list[dict[str, Any]]] = []


def _capture(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor, last before rendering: hands a copy of the event to active captures."""
    if _CAPTURES:
        snapshot = dict(event_dict)
        for events in _CAPTURES:
            events.append(snapshot)
    return event_dict


# ---------------------------------------------------------------------------------------------

#: The processor chain, shared by every reqlog and structlog logger. configure() replaces its
#: contents in place, so loggers created before a reconfiguration follow it.
_PROCESSORS: list[Processor] = []


class _OutputLogger:
    """The wrapped logger at the end of the chain: hands rendered lines to the output."""

    __slots__ = ("name",)

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "root"

    def msg(self, line: bytes) -> None:
        _STATE.output.write(line)

    def _important(self, line: bytes) -> None:
        # Warnings and errors are the last lines a full background queue drops.
        _STATE.output.write(line, logging.WARNING)

    log = debug = info = msg
    warning = warn = error = critical = exception = fatal = failure = _important


def _logger_factory(*args: Any) -> _OutputLogger:
    return _OutputLogger(args[0] if args and isinstance(args[0], str) else None)


class BoundLogger(structlog.BoundLoggerBase):
    """reqlog's bound logger: structlog's filtering logger whose level configure() can change.

    structlog's ``make_filtering_bound_logger`` bakes the level into a class chosen when a
    logger is first used; reqlog copies that class's methods onto this one at every
    configure(), so module-level loggers created before configure() follow the new level.
    A failure anywhere in the chain is reported on stderr and never reaches the caller.
    """

    def _proxy_to_logger(self, method_name: str, event: str | None = None, **event_kw: Any) -> Any:
        if _STATE.settings is None:
            _ensure_configured()
        try:
            return super()._proxy_to_logger(method_name, event, **event_kw)
        except Exception as exc:  # noqa: BLE001 - logging never breaks the app
            _STATE.output.report("chain", f"could not log event {event!r}: {exc!r}")
            return None


def _apply_level(level: int) -> None:
    template = structlog.make_filtering_bound_logger(level)
    for name, value in vars(template).items():
        if not name.startswith("__"):
            setattr(BoundLogger, name, value)


_apply_level(logging.INFO)


def get_logger(name: str | None = None, **initial_values: Any) -> FilteringBoundLogger:
    """A structlog logger that writes through reqlog's chain; ``name`` becomes ``logger``.

    >>> log = get_logger(__name__)
    >>> log.info("loading_item", item_id=42)  # carries request_id, client_ip, user_id...
    """
    if name is None:
        name = sys._getframe(1).f_globals.get("__name__")
    _ensure_configured()
    return cast(FilteringBoundLogger, BoundLogger(_OutputLogger(name), _PROCESSORS, initial_values))


_ACCESS = _OutputLogger(ACCESS_LOGGER)
_METHOD_NAMES: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


def emit_access(level: int, event: str, fields: dict[str, Any]) -> None:
    """Log an access event straight through the chain; ``fields`` becomes the event dict.

    What ``get_logger(ACCESS_LOGGER).log(level, event, **fields)`` does, minus structlog's
    bound-logger layers (context copy, keyword repacking, method dispatch), which cost about as
    much as the chain itself for the one event every request logs. Same processors list, so
    ``structlog.testing.capture_logs`` sees it the same way.
    """
    settings = _STATE.settings
    if settings is None:
        _ensure_configured()
        settings = _STATE.settings
        assert settings is not None
    if level < settings.level:
        return
    method = _METHOD_NAMES.get(level) or logging.getLevelName(level).lower()
    fields["event"] = event
    try:
        result: Any = fields
        for processor in _PROCESSORS:
            result = processor(_ACCESS, method, result)
    except structlog.DropEvent:
        return
    except Exception as exc:  # noqa: BLE001 - logging never breaks the app
        _STATE.output.report("chain", f"could not log event {event!r}: {exc!r}")
        return
    write = getattr(_ACCESS, method, _ACCESS.msg)
    if isinstance(result, tuple):
        write(*result[0], **result[1])
    elif isinstance(result, dict):
        write(**result)
    else:
        write(result)


def settings() -> Settings:
    current = _STATE.settings
    if current is None:
        _ensure_configured()
        current = _STATE.settings
    assert current is not None
    return current


def current_output() -> Output:
    return _STATE.output


def is_configured() -> bool:
    return _STATE.settings is not None


def _ensure_configured() -> None:
    # Loggers work before configure(): defaults, but leave the standard library alone until
    # the application asks for it.
    if _STATE.settings is None:
        with _STATE.lock:
            if _STATE.settings is None:
                configure(stdlib=False)


# --- rendering ----------------------------------------------------------------------------
# What makes any event one line (escaping, lone surrogates, keys) is in reqlog._escape; the
# renderers below call it.


def _json_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return _safe_repr(obj)


_safe_repr = _escape.safe_repr

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


class JSONRenderer:
    """Processor: the event as one line of JSON (orjson), as bytes or text.

    orjson escapes the C0 controls, so CR, LF and ESC in a path or a message cannot break the
    one-object-per-line promise; DEL, the C1 controls (U+0085 among them), U+2028 and U+2029,
    which it leaves raw and ``str.splitlines()`` splits on, are escaped after it. Values
    orjson cannot serialise become ``repr()``; should serialisation still fail (a lone
    surrogate, integers past 64 bits, cycles), the event is written with those values made
    serialisable (``reqlog._escape.jsonable``) rather than lost.
    """

    def __init__(self, *, as_text: bool = False) -> None:
        self.as_text = as_text
        self._option = _JSON_OPTIONS if as_text else _JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        try:
            data = orjson.dumps(event_dict, default=_json_default, option=self._option)
        except TypeError:  # orjson.JSONEncodeError is one
            safe = _escape.jsonable(event_dict, _json_default, _JSON_OPTIONS)
            data = orjson.dumps(safe, default=_json_default, option=self._option)
        # _escape.needs_json_escape(), inlined: for a pure-ASCII line, two memchr-speed
        # scans and no call.
        if 0x7F in data or (not data.isascii() and (0xC2 in data or 0xE2 in data)):
            data = _escape.escape_json(data)
        return data.decode() if self.as_text else data


def _encode_line(logger: WrappedLogger, method_name: str, text: Any) -> bytes:
    # backslashreplace: a lone surrogate that reached here is written as \udXXX, not lost.
    return str(text).encode("utf-8", "backslashreplace") + b"\n"


class _Shown:
    """A value the console shows as the text it holds: ConsoleRenderer ``repr()``s values."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


_PLAIN: Final = (int, float, bool, type(None))


class _EscapeControls:
    """Processor for the console format: nothing in a key or a value can end the line or
    reach the terminal raw.

    A string holding a control character, a line separator or a lone surrogate is shown as
    its ``repr()``, which escapes them all (``'/a\\nforged'``); any other value that is not a
    number, a boolean or None is shown as its repr with those characters escaped, and a
    ``__repr__`` that raises costs that field only. Keys that are not plain words are escaped
    too (``\\x20`` for a space, ``\\x3d`` for ``=``), so a key never costs the event either.
    ``keep_newlines_in`` keys (tracebacks) keep their line feeds: _ConsoleLines indents them.
    """

    __slots__ = ("keep",)

    def __init__(self, keep_newlines_in: Iterable[str] = ()) -> None:
        self.keep = frozenset(keep_newlines_in)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        odd_keys = False
        for key, value in event_dict.items():
            if type(key) is not str or not key.isidentifier():
                odd_keys = True
            kind = type(value)
            if kind is str:
                if not value.isprintable():
                    if key in self.keep:
                        event_dict[key] = _escape.escape_multiline(value)
                    else:
                        event_dict[key] = _Shown(repr(value))
            elif kind not in _PLAIN:
                event_dict[key] = _Shown(_escape.escape_text(_safe_repr(value)))
        return _escaped_keys(event_dict) if odd_keys else event_dict


def _escaped_keys(event_dict: EventDict) -> EventDict:
    escaped: EventDict = {}
    for key, value in event_dict.items():
        name = _escape.escape_key(key)
        while name in escaped:  # two keys that escape alike: both kept
            name += "_"
        escaped[name] = value
    return escaped


class _SafeRenderer:
    """A text renderer that renders every event, whatever its keys and values hold.

    Should the renderer fail (an object whose ``__str__`` raises, a user processor that put a
    number where it wants text), every value becomes escaped text and the event is rendered
    anyway.
    """

    __slots__ = ("renderer",)

    def __init__(self, renderer: Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        try:
            return self.renderer(logger, method_name, event_dict)
        except Exception:  # noqa: BLE001
            return self._fallback(logger, method_name, event_dict)

    def _fallback(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        safe = {
            _escape.escape_key(k): v
            if isinstance(v, str)
            else _escape.escape_text(_escape.safe_str(v))
            for k, v in event_dict.items()
        }
        return self.renderer(logger, method_name, safe)


class _LogfmtLine(_SafeRenderer):
    """structlog's LogfmtRenderer, made to write any event as one line.

    Keys that are not plain words are escaped first (the renderer refuses a key with a space,
    and a ``=`` or a quote would make the pair ambiguous), values other than strings, numbers,
    booleans and None become their ``str()`` (one that raises costs that field only); the
    renderer quotes values and
    writes their line feeds as ``\\n``; what it leaves raw (CR, ESC, the other controls, line
    separators, lone surrogates) is escaped in the finished line, in one pass that a line of
    printable text skips.
    """

    __slots__ = ()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        odd_keys = False
        for key, value in event_dict.items():
            if type(key) is not str or not key.isidentifier():
                odd_keys = True
            kind = type(value)
            if kind is not str and kind not in _PLAIN:
                # What the renderer would do, but a __str__ that raises costs only its field.
                event_dict[key] = _escape.safe_str(value)
        if odd_keys:
            event_dict = _escaped_keys(event_dict)
        line = cast(str, super().__call__(logger, method_name, event_dict))
        return _escape.escape_text(line)


class _ConsoleLines(_SafeRenderer):
    """structlog's ConsoleRenderer, every line of an event after its first indented by two
    spaces.

    The first line of an event starts with its timestamp (or its ``[level]``); a traceback's
    lines, however the exception message was crafted, start with a space. A reader can always
    tell where the next event begins.
    """

    __slots__ = ()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        try:
            # A copy: ConsoleRenderer pops the fields it places, the fallback needs them all.
            text = cast(str, self.renderer(logger, method_name, dict(event_dict)))
        except Exception:  # noqa: BLE001
            text = self._fallback(logger, method_name, event_dict)
        return text.replace("\n", "\n  ") if "\n" in text else text


# --- the chain ------------------------------------------------------------------------------


class _Guarded:
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
            _STATE.output.report(f"processor:{self.name}", f"processor {self.name} failed: {exc!r}")
            return event_dict


@dataclass(frozen=True)
class _Chain:
    head: list[Processor]  # adds what every event carries: context, logger, level, time
    tail: list[Processor]  # user processors, exceptions, redaction, rendering


def _build_chain(
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
) -> _Chain:
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
    tail.extend(_Guarded(p) for p in user_processors)
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
        finish.append(_capture)
    elif fmt == "logfmt":
        finish.append(_capture)  # _LogfmtLine escapes keys and the finished line
    else:
        finish += [_capture, _EscapeControls(keep_newlines_in=("exception", "stack"))]
    if slow_output is not None:
        # Before the schema renames ``slow`` and ``event``; it renders with the same steps.
        slow_render = [step for step in finish if step is not _capture]
        slow_render += _renderers(fmt, slow_colors, as_text=False)
        tail.append(SlowRequestOutput(slow_output, slow_render))
    tail.extend(finish)
    tail.extend(_renderers(fmt, colors, as_text))
    return _Chain(head, tail)


def _renderers(fmt: str, colors: bool, as_text: bool) -> list[Processor]:
    """The last processors: the event as a line (bytes ending in a newline, or text)."""
    if fmt == "json":
        return [JSONRenderer(as_text=as_text)]
    steps: list[Processor]
    if fmt == "logfmt":
        steps = [
            _LogfmtLine(
                structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"])
            )
        ]
    else:
        steps = [
            _ConsoleLines(
                structlog.dev.ConsoleRenderer(
                    colors=colors,
                    exception_formatter=structlog.dev.plain_traceback,
                )
            )
        ]
    if not as_text:
        steps.append(_encode_line)
    return steps


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
    that uses structlog directly but wants reqlog's fields, redaction and format::

        structlog.configure(
            processors=reqlog.default_processors(service="orders-worker"),
            logger_factory=structlog.WriteLoggerFactory(),
        )
    """
    if not isinstance(format, str) or format.lower() not in ("json", "console", "logfmt"):
        msg = f"format: expected one of json, console, logfmt, got {format!r}"
        raise ValueError(msg)
    if service is not None and not isinstance(service, str):
        msg = f"service: expected a string, got {service!r}"
        raise ValueError(msg)
    if not isinstance(schema, str) or schema.lower() not in schemas.SCHEMAS:
        msg = f"schema: expected one of {', '.join(schemas.SCHEMAS)}, got {schema!r}"
        raise ValueError(msg)
    chain = _build_chain(
        fmt=format.lower(),
        colors=bool(colors),
        service=service,
        user_processors=_user_processors(processors),
        as_text=True,
        redactor=_redactor_option(redact),
        sample_rate=sample_rate_value(sample_rate),
        schema=schema.lower(),
    )
    return [*chain.head, *chain.tail]


def _user_processors(processors: Any) -> list[Processor]:
    if not isinstance(processors, Sequence | Iterable) or isinstance(processors, str | bytes):
        msg = f"processors: expected a list of processors, got {processors!r}"
        raise ValueError(msg)
    user_processors = list(processors)
    for proc in user_processors:
        if not callable(proc):
            msg = f"processors: {proc!r} is not callable (logger, method_name, event_dict)"
            raise ValueError(msg)
    return user_processors


def _redactor_option(redact: Any) -> Redactor | None:
    """``redact=``: True for the default Redactor, False to turn redaction off, or a Redactor."""
    if isinstance(redact, Redactor):
        return redact
    if redact is True:
        return _default_redactor()
    if redact is False:
        return None
    msg = f"redact: expected a reqlog.Redactor, True or False, got {redact!r}"
    raise ValueError(msg)


_DEFAULT_REDACTOR: list[Redactor] = []


def _default_redactor() -> Redactor:
    # One default instance for the process: its key and clean-text caches stay warm across
    # reconfigurations.
    if not _DEFAULT_REDACTOR:
        _DEFAULT_REDACTOR.append(Redactor())
    return _DEFAULT_REDACTOR[0]


# --- the standard library --------------------------------------------------------------------


def _add_extra(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog's ExtraAdder, less what another formatter left on the record.

    ``message`` and ``asctime`` are set by ``logging.Formatter.format``: a record formatted by
    another handler first would otherwise carry its message twice. ``color_message`` is
    uvicorn's copy of the message with terminal colour codes.
    """
    event_dict = _EXTRA_ADDER(logger, method_name, event_dict)
    for key in _NOT_EXTRA:
        event_dict.pop(key, None)
    return event_dict


_NOT_EXTRA = ("message", "asctime", "color_message")


_EXTRA_ADDER = structlog.stdlib.ExtraAdder()


def _already_logged(record: logging.LogRecord) -> bool:
    """Handler filter: drop a server's report of an exception reqlog already logged."""
    exc = record.exc_info[1] if record.exc_info else None
    return not getattr(exc, "_reqlog_logged", False)


class _StdlibHandler(logging.Handler):
    """Renders standard-library records through reqlog's chain into reqlog's output."""

    def __init__(self, level: int, formatter: logging.Formatter) -> None:
        super().__init__(level)
        self.setFormatter(formatter)
        self.addFilter(_already_logged)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except structlog.DropEvent:
            # A processor dropped the record (a user's filter, sampling). DropEvent is a
            # BaseException: uncaught, it would escape into the application's logging call.
            return
        except Exception as exc:  # noqa: BLE001 - logging never breaks the app
            try:
                line = self.format(_unformatted(record, exc))
            except Exception as again:  # noqa: BLE001
                _STATE.output.report("stdlib", f"could not log record {record.msg!r}: {again!r}")
                return
        _STATE.output.write(line.encode("utf-8", "backslashreplace") + b"\n", record.levelno)


def _unformatted(record: logging.LogRecord, exc: Exception) -> logging.LogRecord:
    """A copy of a record whose ``msg % args`` failed: the raw message, the arguments aside.

    The standard library prints a "--- Logging error ---" report and loses the message;
    reqlog writes the event anyway, as the template with its arguments in ``log_args``.
    """
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg = str(record.msg) if isinstance(record.msg, str) else repr(record.msg)
    copy.args = None
    copy.log_args = _safe_repr(record.args)
    copy.log_format_error = repr(exc)
    return copy


def adopt_server_loggers() -> None:
    """Take the server's loggers over again if the server configured them after configure().

    ``uvicorn.run(app)`` applies uvicorn's logging config after the application module ran
    configure(); the middleware calls this when the app starts, so uvicorn's lines still come
    out once, through reqlog.
    """
    current = _STATE.settings
    if current is not None and current.stdlib:
        _take_server_loggers()


def _take_server_loggers() -> None:
    for name in SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        for h in list(server_logger.handlers):
            server_logger.removeHandler(h)
        server_logger.propagate = True


def _route_stdlib(handler: logging.Handler | None, level: int) -> None:
    root = logging.getLogger()
    old = _STATE.handler
    if old is not None:
        root.removeHandler(old)
    _STATE.handler = handler
    if handler is None:
        return
    # A console handler left by basicConfig() would print every record a second time.
    for existing in list(root.handlers):
        if type(existing) is logging.StreamHandler and existing.stream in (
            sys.stdout,
            sys.stderr,
            sys.__stdout__,
            sys.__stderr__,
        ):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    _take_server_loggers()


# --- configure() -----------------------------------------------------------------------------

_UNSET: Any = object()


def _env(option: str) -> str | None:
    value = os.environ.get(f"REQLOG_{option.upper()}")
    return value if value not in (None, "") else None


def _pick(option: str, value: Any, default: Any) -> tuple[Any, str]:
    """The value passed, else ``REQLOG_<OPTION>``, else the default; and where it came from."""
    if value is not _UNSET:
        return value, option
    env = _env(option)
    if env is not None:
        return env, f"{option} (from REQLOG_{option.upper()})"
    return default, option


def configure(
    *,
    level: int | str = _UNSET,
    format: Format = _UNSET,  # noqa: A002 - the documented option name
    output: Any = _UNSET,
    service: str | None = _UNSET,
    processors: Sequence[Processor] = (),
    stdlib: bool = True,
    status_levels: Mapping[int | str, int | str] | Callable[[int, bool], int | str] | None = None,
    slow_request_ms: float | None = _UNSET,
    slow_routes: Mapping[str, float] | None = None,
    trace_context: bool | None = None,
    otlp: Any = _UNSET,
    otlp_timeout: float = _UNSET,
    schema: str = _UNSET,
    redact: Redactor | bool = True,
    sample_rate: float = _UNSET,
    slow_output: Any = None,
    background: bool | None = _UNSET,
    queue_size: int = _UNSET,
    queue_bytes: int = _UNSET,
    overflow: Literal["drop", "block"] = _UNSET,
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

    >>> configure(service="orders", level="DEBUG", format="json")
    """
    level_value, level_name = _pick("level", level, "INFO")
    min_level = parse_level(level_value, level_name)

    fmt, fmt_name = _pick("format", format, "auto")
    if not isinstance(fmt, str) or fmt.lower() not in _FORMATS:
        msg = f"{fmt_name}: expected one of {', '.join(_FORMATS)}, got {fmt!r}"
        raise ValueError(msg)
    fmt = fmt.lower()

    out_value, out_name = _pick("output", output, "stdout")
    service_value, service_name = _pick("service", service, None)
    if service_value is not None and not isinstance(service_value, str):
        msg = f"{service_name}: expected a string, got {service_value!r}"
        raise ValueError(msg)

    user_processors = _user_processors(processors)
    if not isinstance(stdlib, bool):
        msg = f"stdlib: expected True or False, got {stdlib!r}"
        raise ValueError(msg)

    # -- schema --
    schema_value, schema_name = _pick("schema", schema, "flat")
    if not isinstance(schema_value, str) or schema_value.lower() not in schemas.SCHEMAS:
        msg = f"{schema_name}: expected one of {', '.join(schemas.SCHEMAS)}, got {schema_value!r}"
        raise ValueError(msg)
    schema_value = schema_value.lower()

    slow_ms, slow_name = _pick("slow_request_ms", slow_request_ms, None)
    slow = SlowRequests(_as_threshold(slow_ms, slow_name), slow_routes)
    levels = StatusLevels(status_levels)

    out_options = _output_options(
        background, queue_size, overflow, rotate_bytes, rotate_when, queue_bytes
    )
    # -- processors (#3): redaction, sampling, the slow-request output
    redactor = _redactor_option(redact)
    rate_value, rate_name = _pick("sample_rate", sample_rate, 1.0)
    rate = sample_rate_value(rate_value, rate_name)

    sinks: list[Sink] = build_sinks(
        out_value,
        out_name,
        rotate_bytes=out_options.rotate_bytes,
        rotate_when=out_options.rotate_when,
        backups=_as_backups(backups, out_options.rotate_bytes),
    )
    run_in_background = out_options.background
    if run_in_background is None:
        # Streams the user handed over (a BytesIO in a test) are written before write()
        # returns; stdout, stderr and files reqlog opened get the background writer.
        run_in_background = all(not isinstance(s, StreamSink) or s.owned for s in sinks)
    slow_sinks: list[Sink] = []
    try:
        if slow_output is not None:
            slow_sinks = build_sinks(slow_output, "slow_output")
        slow_out = (
            Output(
                slow_sinks,
                # The same rule as the main output: a stalled slow channel must not stall
                # the requests that are slow enough to be written to it.
                background=all(not isinstance(s, StreamSink) or s.owned for s in slow_sinks)
                if out_options.background is None
                else out_options.background,
                queue_size=out_options.queue_size,
                queue_bytes=out_options.queue_bytes,
                overflow=out_options.overflow,
                render=_render_own_event,
            )
            if slow_sinks
            else None
        )
        if fmt == "auto":
            fmt = "console" if _isatty(sinks[0]) else "json"
        colors = fmt == "console" and _isatty(sinks[0])
        chain_options: dict[str, Any] = {
            "fmt": fmt,
            "colors": colors,
            "service": service_value,
            "user_processors": user_processors,
            "schema": schema_value,
            "redactor": redactor,
            "sample_rate": rate,
            "slow_output": slow_out,
            "slow_colors": fmt == "console" and bool(slow_sinks) and _isatty(slow_sinks[0]),
        }
        chain = _build_chain(as_text=False, **chain_options)
        text_chain = _build_chain(as_text=True, **chain_options)
        otlp_emitter = _add_otel(
            chain, text_chain, trace_context, otlp, otlp_timeout, service_value
        )
    except Exception:
        for sink in [*sinks, *slow_sinks]:
            sink.close()
        raise

    new_settings = Settings(
        level=min_level,
        format=fmt,
        service=service_value,
        status_levels=levels,
        slow=slow,
        stdlib=stdlib,
        schema=schema_value if fmt == "json" else "flat",
        redactor=redactor,
        sample_rate=rate,
    )
    handler: logging.Handler | None = None
    if stdlib:
        formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *text_chain.head[:1],
                _add_extra,
                *text_chain.head[1:],
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *text_chain.tail,
            ],
            use_get_message=True,
        )
        handler = _StdlibHandler(min_level, formatter)

    with _STATE.lock:
        old_output = _STATE.output
        _STATE.output = Output(
            sinks,
            background=run_in_background,
            queue_size=out_options.queue_size,
            queue_bytes=out_options.queue_bytes,
            overflow=out_options.overflow,
            render=_render_own_event,
        )
        _apply_level(min_level)
        _PROCESSORS[:] = [*chain.head, *chain.tail]
        structlog.configure(
            processors=_PROCESSORS,
            wrapper_class=BoundLogger,
            logger_factory=_logger_factory,
            context_class=dict,
            cache_logger_on_first_use=True,
        )
        _route_stdlib(handler, min_level)
        _STATE.settings = new_settings
        old_slow_output, _STATE.slow_output = _STATE.slow_output, slow_out
        old_otlp, _STATE.otlp = _STATE.otlp, otlp_emitter
    if old_otlp is not None:
        old_otlp.close()  # bounded by its otlp_timeout; before the old output closes
    if old_output is not _STATE.output:
        old_output.close()
    if old_slow_output is not None:
        old_slow_output.close()
    if run_in_background:
        _output.install_sigterm_flush()


# --- OpenTelemetry (reqlog.integrations.otel, imported only when asked for or installed) -----


def _otel_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


def _add_otel(
    chain: _Chain,
    text_chain: _Chain,
    trace_context: bool | None,
    otlp: Any,
    otlp_timeout: Any,
    service: str | None,
) -> Any:
    """Put trace context on every event, and hand events to OpenTelemetry's log pipeline.

    Returns the OTLP emitter (``None`` without ``otlp``): it is not one of the output's sinks,
    so that a collector that is down never holds up the lines written there.
    """
    if trace_context not in (None, True, False):
        msg = f"trace_context: expected True, False or None, got {trace_context!r}"
        raise ValueError(msg)
    otlp_value, otlp_name = _pick("otlp", otlp, None)
    if isinstance(otlp_value, str) and otlp_name != "otlp":
        flag = otlp_value.strip().lower()
        if flag in ("1", "true", "yes", "on"):
            otlp_value = True
        elif flag in ("0", "false", "no", "off"):
            otlp_value = None
    if otlp_value is False:
        otlp_value = None
    timeout_value, timeout_name = _pick("otlp_timeout", otlp_timeout, None)
    timeout = _otlp_timeout(timeout_value, timeout_name)
    want_trace = trace_context if trace_context is not None else _otel_installed()
    if not want_trace and otlp_value is None:
        return None
    if trace_context and not _otel_installed():
        msg = "trace_context: needs opentelemetry-api: pip install 'reqlog-asgi[otel]'"
        raise ValueError(msg)
    if otlp_value is not None and not _otel_installed():
        msg = f"{otlp_name}: needs the OpenTelemetry SDK: pip install 'reqlog-asgi[otel]'"
        raise ValueError(msg)
    from reqlog.integrations import otel

    if want_trace:
        # In the head: user processors see the IDs, and standard-library records get them too.
        chain.head.append(otel.add_trace_context)
        text_chain.head.append(otel.add_trace_context)
    if otlp_value is None:
        return None
    emitter = otel.build_emitter(
        otlp_value,
        service=service,
        option=otlp_name,
        timeout=otel.DEFAULT_OTLP_TIMEOUT_S if timeout is None else timeout,
        on_lost=lambda count: _otlp_lost(emitter, count),
    )
    # After redaction, before rendering: the collector gets what the lines show.
    for tail in (chain.tail, text_chain.tail):
        tail.insert(_rendering_start(tail), emitter)
    return emitter


def _otlp_timeout(value: Any, option: str) -> float | None:
    if value is None:
        return None
    number = value
    if isinstance(number, str):
        with contextlib.suppress(ValueError):
            number = float(number)
    if (
        isinstance(number, bool)
        or not isinstance(number, int | float)
        or not 0 < number < float("inf")  # also rejects NaN
    ):
        msg = f"{option}: expected a number of seconds greater than 0, got {value!r}"
        raise ValueError(msg)
    return float(number)


def _otlp_lost(emitter: Any, count: int) -> None:
    """One ``logs_dropped`` event for records the collector did not get, in the output only."""
    with emitter.quiet():
        line = _render_own_event("logs_dropped", "warning", {"count": count, "reason": "otlp"})
    _STATE.output.write(line, logging.WARNING)


def _rendering_start(tail: list[Processor]) -> int:
    renderers = (
        _EscapeControls,
        JSONRenderer,
        _SafeRenderer,
        structlog.processors.LogfmtRenderer,
        structlog.dev.ConsoleRenderer,
    )
    for index, processor in enumerate(tail):
        if isinstance(processor, renderers):
            return index
    return len(tail)


# --- output options (background writer, rotation) -------------------------------------------


@dataclass(frozen=True)
class _OutputOptions:
    background: bool | None
    queue_size: int
    overflow: Literal["drop", "block"]
    rotate_bytes: int | None
    rotate_when: str | None
    queue_bytes: int = _output.DEFAULT_QUEUE_BYTES


_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")
_ROTATE_WHEN: Final = ("S", "M", "H", "D", "MIDNIGHT", *(f"W{i}" for i in range(7)))


def _output_options(
    background: Any,
    queue_size: Any,
    overflow: Any,
    rotate_bytes: Any,
    rotate_when: Any,
    queue_bytes: Any = _UNSET,
) -> _OutputOptions:
    bg, bg_name = _pick("background", background, None)
    if isinstance(bg, str):
        if bg.lower() in _TRUE:
            bg = True
        elif bg.lower() in _FALSE:
            bg = False
    if bg is not None and not isinstance(bg, bool):
        msg = f"{bg_name}: expected True, False or None (automatic), got {bg!r}"
        raise ValueError(msg)

    size, size_name = _pick("queue_size", queue_size, _output.DEFAULT_QUEUE_SIZE)
    if isinstance(size, str) and size.strip().isdigit():
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        msg = f"{size_name}: expected a positive number of lines, got {size!r}"
        raise ValueError(msg)

    max_bytes, bytes_name = _pick("queue_bytes", queue_bytes, _output.DEFAULT_QUEUE_BYTES)
    if isinstance(max_bytes, str) and max_bytes.strip().isdigit():
        max_bytes = int(max_bytes)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        msg = f"{bytes_name}: expected a positive number of bytes, got {max_bytes!r}"
        raise ValueError(msg)

    mode, mode_name = _pick("overflow", overflow, "drop")
    if not isinstance(mode, str) or mode.lower() not in ("drop", "block"):
        msg = f"{mode_name}: expected 'drop' or 'block', got {mode!r}"
        raise ValueError(msg)

    if rotate_bytes is not None and (
        isinstance(rotate_bytes, bool) or not isinstance(rotate_bytes, int) or rotate_bytes < 1
    ):
        msg = f"rotate_bytes: expected a positive number of bytes, got {rotate_bytes!r}"
        raise ValueError(msg)
    if rotate_when is not None and (
        not isinstance(rotate_when, str) or rotate_when.upper() not in _ROTATE_WHEN
    ):
        msg = (
            "rotate_when: expected one of 'S', 'M', 'H', 'D', 'midnight', 'W0'..'W6' "
            f"(logging.handlers.TimedRotatingFileHandler's when), got {rotate_when!r}"
        )
        raise ValueError(msg)
    if rotate_bytes is not None and rotate_when is not None:
        msg = "rotate_bytes: choose rotation by size or by time (rotate_when), not both"
        raise ValueError(msg)
    return _OutputOptions(
        background=bg,
        queue_size=size,
        overflow=cast(Literal["drop", "block"], mode.lower()),
        rotate_bytes=rotate_bytes,
        rotate_when=rotate_when,
        queue_bytes=max_bytes,
    )


def _as_backups(value: Any, rotate_bytes: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"backups: expected a number of old files to keep (0 or more), got {value!r}"
        raise ValueError(msg)
    if rotate_bytes is not None and value == 0:
        # RotatingFileHandler with no backups never rotates: the file would only grow.
        msg = "backups: rotate_bytes needs at least 1 backup to rotate into (app.log.1)"
        raise ValueError(msg)
    return value


def _render_own_event(event: str, level: str, fields: dict[str, Any]) -> bytes:
    """reqlog's own events (``logs_dropped``) through the configured chain, as bytes."""
    logger = _OutputLogger("reqlog")
    result: Any = {"event": event, **fields}
    for processor in list(_PROCESSORS):
        result = processor(logger, level, result)
    if isinstance(result, str):
        result = result.encode("utf-8", "backslashreplace") + b"\n"
    if not isinstance(result, bytes):
        msg = f"the chain returned {type(result).__name__}, not a rendered line"
        raise TypeError(msg)
    return result


def _as_threshold(value: Any, option: str) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            msg = f"{option}: expected a positive number of milliseconds, got {value!r}"
            raise ValueError(msg) from None
    return value


def _isatty(sink: Sink) -> bool:
    stream = getattr(sink, "stream", None)
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def reset() -> None:
    """Back to the unconfigured state: reqlog's handler removed, server loggers left propagating.

    For tests: the next log call configures defaults again.
    """
    with _STATE.lock:
        _route_stdlib(None, logging.NOTSET)
        _STATE.output.close()
        _STATE.output = Output([])
        if _STATE.slow_output is not None:
            _STATE.slow_output.close()
            _STATE.slow_output = None
        if _STATE.otlp is not None:
            _STATE.otlp.close()
            _STATE.otlp = None
        _STATE.settings = None
        _PROCESSORS[:] = []
        _apply_level(logging.INFO)
        structlog.reset_defaults()
    logging.getLogger("uvicorn.access").disabled = False


def _flush_at_exit() -> None:
    # finish(), not flush(): bounded by the shutdown's deadline, whatever the sinks do; OTLP
    # first, within otlp_timeout (finish_all closes it).
    _output.finish_all(timeout=_output.EXIT_FLUSH_TIMEOUT_S)


atexit.register(_flush_at_exit)
