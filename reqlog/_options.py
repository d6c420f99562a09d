"""Every option's validation, once: configure()'s, default_processors()'s, the middleware's.

:func:`configure_options` turns configure()'s arguments, or the ``REQLOG_<OPTION>``
environment variables where an argument was not passed, into an immutable :class:`Options`;
:func:`middleware_options` does the same for ``RequestLoggingMiddleware``'s. Both raise
``ValueError`` naming the option (and the variable it came from). Nothing is opened here:
``reqlog._configure`` and the middleware build from the result. The options that make an
object which checks its own arguments (``StatusLevels``, ``SlowRequests``, ``Redactor``, the
trusted proxies, body capture) are validated by that object, made here; sinks from
``output=`` are checked when they are opened.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from structlog.typing import Processor

from reqlog import _proxies, bodies, output, schemas
from reqlog._state import STATE
from reqlog.processors import Redactor, SlowRequests, StatusLevels, parse_level, sample_rate_value

__all__ = [
    "FORMATS",
    "UNSET",
    "MiddlewareOptions",
    "Options",
    "OutputOptions",
    "configure_options",
    "format_option",
    "middleware_options",
    "processors_option",
    "redact_option",
    "schema_option",
    "service_option",
]

#: An option not passed: its ``REQLOG_*`` variable or its default applies.
UNSET: Any = object()

Format = Literal["json", "console", "logfmt", "auto"]
#: configure()'s formats; default_processors() takes all but ``auto``.
FORMATS: Final = ("json", "console", "logfmt", "auto")

_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")
_ROTATE_WHEN: Final = ("S", "M", "H", "D", "MIDNIGHT", *(f"W{i}" for i in range(7)))


@dataclass(frozen=True)
class OutputOptions:
    """How lines are written: the background writer's bounds, rotation."""

    background: bool | None
    queue_size: int
    overflow: Literal["drop", "block"]
    rotate_bytes: int | None
    rotate_when: str | None
    queue_bytes: int = output.DEFAULT_QUEUE_BYTES
    backups: int = 0


@dataclass(frozen=True)
class Options:
    """configure()'s options, validated; ``*_name`` say where a value came from."""

    level: int
    format: str  # one of FORMATS: "auto" is decided once the first sink is open
    output: Any
    output_name: str
    service: str | None
    processors: list[Processor]
    stdlib: bool
    schema: str
    slow: SlowRequests
    status_levels: StatusLevels
    outputs: OutputOptions
    redactor: Redactor | None
    sample_rate: float
    slow_output: Any
    #: Trace context on every event (``trace_context``, or whether OpenTelemetry is there).
    trace_context: bool
    otlp: Any  # None when off
    otlp_name: str
    otlp_timeout: float | None


def _env(option: str) -> str | None:
    value = os.environ.get(f"REQLOG_{option.upper()}")
    return value if value not in (None, "") else None


def _pick(option: str, value: Any, default: Any) -> tuple[Any, str]:
    """The value passed, else ``REQLOG_<OPTION>``, else the default; and where it came from."""
    if value is not UNSET:
        return value, option
    env = _env(option)
    if env is not None:
        return env, f"{option} (from REQLOG_{option.upper()})"
    return default, option


def configure_options(
    *,
    level: Any = UNSET,
    format: Any = UNSET,  # noqa: A002 - the option's name in configure()
    output: Any = UNSET,
    service: Any = UNSET,
    processors: Any = (),
    stdlib: Any = True,
    status_levels: Any = None,
    slow_request_ms: Any = UNSET,
    slow_routes: Any = None,
    trace_context: Any = None,
    otlp: Any = UNSET,
    otlp_timeout: Any = UNSET,
    schema: Any = UNSET,
    redact: Any = True,
    sample_rate: Any = UNSET,
    slow_output: Any = None,
    background: Any = UNSET,
    queue_size: Any = UNSET,
    queue_bytes: Any = UNSET,
    overflow: Any = UNSET,
    rotate_bytes: Any = None,
    rotate_when: Any = None,
    backups: Any = 0,
) -> Options:
    """configure()'s arguments as :class:`Options`, or ``ValueError`` naming the option."""
    level_value, level_name = _pick("level", level, "INFO")
    min_level = parse_level(level_value, level_name)
    fmt_value, fmt_name = _pick("format", format, "auto")
    fmt = format_option(fmt_value, fmt_name, FORMATS)
    out_value, out_name = _pick("output", output, "stdout")
    service_value, service_name = _pick("service", service, None)
    service_value = service_option(service_value, service_name)
    user_processors = processors_option(processors)
    if not isinstance(stdlib, bool):
        msg = f"stdlib: expected True or False, got {stdlib!r}"
        raise ValueError(msg)
    schema_value, schema_name = _pick("schema", schema, "flat")
    schema_value = schema_option(schema_value, schema_name)
    slow_ms, slow_name = _pick("slow_request_ms", slow_request_ms, None)
    slow = SlowRequests(_as_threshold(slow_ms, slow_name), slow_routes)
    levels = StatusLevels(status_levels)
    outputs = _output_options(
        background, queue_size, overflow, rotate_bytes, rotate_when, queue_bytes, backups
    )
    redactor = redact_option(redact)
    rate_value, rate_name = _pick("sample_rate", sample_rate, 1.0)
    rate = sample_rate_value(rate_value, rate_name)
    want_trace, otlp_value, otlp_name, timeout = _otel_options(trace_context, otlp, otlp_timeout)
    return Options(
        level=min_level,
        format=fmt,
        output=out_value,
        output_name=out_name,
        service=service_value,
        processors=user_processors,
        stdlib=stdlib,
        schema=schema_value,
        slow=slow,
        status_levels=levels,
        outputs=outputs,
        redactor=redactor,
        sample_rate=rate,
        slow_output=slow_output,
        trace_context=want_trace,
        otlp=otlp_value,
        otlp_name=otlp_name,
        otlp_timeout=timeout,
    )


# --- one option each ---------------------------------------------------------------------------


def format_option(value: Any, option: str = "format", formats: Sequence[str] = FORMATS) -> str:
    """A format name, lower case."""
    if not isinstance(value, str) or value.lower() not in formats:
        msg = f"{option}: expected one of {', '.join(formats)}, got {value!r}"
        raise ValueError(msg)
    return value.lower()


def service_option(value: Any, option: str = "service") -> str | None:
    if value is not None and not isinstance(value, str):
        msg = f"{option}: expected a string, got {value!r}"
        raise ValueError(msg)
    return value


def schema_option(value: Any, option: str = "schema") -> str:
    if not isinstance(value, str) or value.lower() not in schemas.SCHEMAS:
        msg = f"{option}: expected one of {', '.join(schemas.SCHEMAS)}, got {value!r}"
        raise ValueError(msg)
    return value.lower()


def processors_option(processors: Any) -> list[Processor]:
    """The user's processors, each callable as ``(logger, method_name, event_dict)``."""
    if not isinstance(processors, Sequence | Iterable) or isinstance(processors, str | bytes):
        msg = f"processors: expected a list of processors, got {processors!r}"
        raise ValueError(msg)
    user_processors = list(processors)
    for proc in user_processors:
        if not callable(proc):
            msg = f"processors: {proc!r} is not callable (logger, method_name, event_dict)"
            raise ValueError(msg)
    return user_processors


def redact_option(redact: Any) -> Redactor | None:
    """``redact=``: True for the default Redactor, False to turn redaction off, or a Redactor."""
    if isinstance(redact, Redactor):
        return redact
    if redact is True:
        # One default instance for the process: its key and clean-text caches stay warm
        # across reconfigurations.
        if STATE.default_redactor is None:
            STATE.default_redactor = Redactor()
        return STATE.default_redactor
    if redact is False:
        return None
    msg = f"redact: expected a reqlog.Redactor, True or False, got {redact!r}"
    raise ValueError(msg)


def _as_threshold(value: Any, option: str) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            msg = f"{option}: expected a positive number of milliseconds, got {value!r}"
            raise ValueError(msg) from None
    return value


def _output_options(
    background: Any,
    queue_size: Any,
    overflow: Any,
    rotate_bytes: Any,
    rotate_when: Any,
    queue_bytes: Any,
    backups: Any,
) -> OutputOptions:
    bg, bg_name = _pick("background", background, None)
    if isinstance(bg, str):
        if bg.lower() in _TRUE:
            bg = True
        elif bg.lower() in _FALSE:
            bg = False
    if bg is not None and not isinstance(bg, bool):
        msg = f"{bg_name}: expected True, False or None (automatic), got {bg!r}"
        raise ValueError(msg)

    size, size_name = _pick("queue_size", queue_size, output.DEFAULT_QUEUE_SIZE)
    if isinstance(size, str) and size.strip().isdigit():
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        msg = f"{size_name}: expected a positive number of lines, got {size!r}"
        raise ValueError(msg)

    max_bytes, bytes_name = _pick("queue_bytes", queue_bytes, output.DEFAULT_QUEUE_BYTES)
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
    if isinstance(backups, bool) or not isinstance(backups, int) or backups < 0:
        msg = f"backups: expected a number of old files to keep (0 or more), got {backups!r}"
        raise ValueError(msg)
    if rotate_bytes is not None and backups == 0:
        # RotatingFileHandler with no backups never rotates: the file would only grow.
        msg = "backups: rotate_bytes needs at least 1 backup to rotate into (app.log.1)"
        raise ValueError(msg)
    return OutputOptions(
        background=bg,
        queue_size=size,
        overflow=cast(Literal["drop", "block"], mode.lower()),
        rotate_bytes=rotate_bytes,
        rotate_when=rotate_when,
        queue_bytes=max_bytes,
        backups=backups,
    )


# --- OpenTelemetry ------------------------------------------------------------------------------


def otel_installed() -> bool:
    """Whether opentelemetry-api can be imported (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


def _otel_options(
    trace_context: Any, otlp: Any, otlp_timeout: Any
) -> tuple[bool, Any, str, float | None]:
    """(trace context wanted, the ``otlp`` value or None, where it came from, its timeout)."""
    if trace_context not in (None, True, False):
        msg = f"trace_context: expected True, False or None, got {trace_context!r}"
        raise ValueError(msg)
    otlp_value, otlp_name = _pick("otlp", otlp, None)
    if isinstance(otlp_value, str) and otlp_name != "otlp":
        flag = otlp_value.strip().lower()
        if flag in _TRUE:
            otlp_value = True
        elif flag in _FALSE:
            otlp_value = None
    if otlp_value is False:
        otlp_value = None
    timeout_value, timeout_name = _pick("otlp_timeout", otlp_timeout, None)
    timeout = _otlp_timeout(timeout_value, timeout_name)
    want_trace = trace_context if trace_context is not None else otel_installed()
    if not want_trace and otlp_value is None:
        return False, None, otlp_name, timeout
    if trace_context and not otel_installed():
        msg = "trace_context: needs opentelemetry-api: pip install 'reqlog-asgi[otel]'"
        raise ValueError(msg)
    if otlp_value is not None and not otel_installed():
        msg = f"{otlp_name}: needs the OpenTelemetry SDK: pip install 'reqlog-asgi[otel]'"
        raise ValueError(msg)
    return bool(want_trace), otlp_value, otlp_name, timeout


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


# --- the middleware's options ---------------------------------------------------------------------

# A header name (RFC 9110's token): request_id_header must be one.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class MiddlewareOptions:
    """RequestLoggingMiddleware's options, validated."""

    request_id_header: str
    #: The request-ID header as ASGI spells it: lower case, bytes.
    header_key: bytes
    validator: Callable[[str], bool] | None
    generator: Callable[[], str]
    #: None without trusted proxies: the client is the peer.
    proxies: _proxies.ProxyResolver | None
    exclude_exact: frozenset[str]
    exclude_prefixes: tuple[str, ...]
    #: None unless some capture is on: then the request path is exactly as without it.
    capture: bodies.CaptureOptions | None
    clock: Callable[[], float]


def middleware_options(
    *,
    request_id_header: Any,
    request_id_validator: Any,
    request_id_generator: Any,
    trusted_proxies: Any,
    forwarded_header: Any,
    exclude_paths: Any,
    clock: Any,
    log_request_body: Any,
    log_response_body: Any,
    body_max_bytes: Any,
    log_headers: Any,
    capture_paths: Any,
) -> MiddlewareOptions:
    """RequestLoggingMiddleware's arguments as :class:`MiddlewareOptions`, or ``ValueError``."""
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
    resolver = _proxies.ProxyResolver(trusted_proxies, forwarded_header)
    exact, prefixes = _paths(exclude_paths, "exclude_paths")
    capture = bodies.CaptureOptions.create(
        log_request_body=log_request_body,
        log_response_body=log_response_body,
        body_max_bytes=body_max_bytes,
        log_headers=log_headers,
        paths=_paths(capture_paths, "capture_paths"),
    )
    return MiddlewareOptions(
        request_id_header=request_id_header,
        header_key=request_id_header.lower().encode("latin-1"),
        validator=request_id_validator,
        generator=request_id_generator,
        proxies=resolver if resolver else None,
        exclude_exact=exact,
        exclude_prefixes=prefixes,
        capture=capture,
        clock=clock,
    )


def _paths(values: Iterable[str], option: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """Paths (``/health``) and prefixes (``/static/*``), each starting with ``/``."""
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
