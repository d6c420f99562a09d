"""One event through the configured chain to the output: the bound logger, the access event.

The generic path, which every configuration can take: structlog's bound logger (reqlog's
subclass of it) or :func:`emit_access` runs the processors in ``STATE.processors`` and hands
the rendered line to ``STATE.output``. configure() may install faster paths for the chains it
can fuse (:mod:`reqlog._fused`); they write the same lines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import structlog

from reqlog._state import STATE

__all__ = [
    "ACCESS",
    "ACCESS_LOGGER",
    "METHOD_NAMES",
    "BoundLogger",
    "OutputLogger",
    "apply_level",
    "emit_access",
    "level_methods",
    "logger_factory",
    "proxy_to_logger",
    "render_own_event",
]

#: The name of the logger that writes the access events.
ACCESS_LOGGER: Final = "reqlog.access"


class OutputLogger:
    """The wrapped logger at the end of the chain: hands rendered lines to the output."""

    __slots__ = ("name",)

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "root"

    def msg(self, line: bytes) -> None:
        STATE.output.write(line)

    def _important(self, line: bytes) -> None:
        # Warnings and errors are the last lines a full background queue drops.
        STATE.output.write(line, logging.WARNING)

    log = debug = info = msg
    warning = warn = error = critical = exception = fatal = failure = _important


def logger_factory(*args: Any) -> OutputLogger:
    """structlog's ``logger_factory``: the wrapped logger, named by the first argument."""
    return OutputLogger(args[0] if args and isinstance(args[0], str) else None)


class BoundLogger(structlog.BoundLoggerBase):
    """reqlog's bound logger: structlog's filtering logger whose level configure() can change.

    structlog's ``make_filtering_bound_logger`` bakes the level into a class chosen when a
    logger is first used; reqlog copies that class's methods onto this one at every
    configure() (:func:`apply_level`), so module-level loggers created before configure()
    follow the new level. A failure anywhere in the chain is reported on stderr and never
    reaches the caller.
    """

    def _proxy_to_logger(self, method_name: str, event: str | None = None, **event_kw: Any) -> Any:
        return proxy_to_logger(self, method_name, event, **event_kw)


def proxy_to_logger(
    self: structlog.BoundLoggerBase, method_name: str, event: str | None = None, **event_kw: Any
) -> Any:
    """:class:`BoundLogger`'s way to the chain once reqlog is configured (before that,
    ``reqlog._configure`` puts one in its place that configures the defaults first)."""
    try:
        return structlog.BoundLoggerBase._proxy_to_logger(self, method_name, event, **event_kw)
    except Exception as exc:  # noqa: BLE001 - logging never breaks the app
        STATE.output.report("chain", f"could not log event {event!r}: {exc!r}")
        return None


def apply_level(level: int, methods: Mapping[str, Any] | None = None) -> None:
    """Give :class:`BoundLogger` structlog's filtering methods for ``level``, and ``methods``
    (the fused path's, ``reqlog._fused``) in place of some of them."""
    for name, value in {**level_methods(level), **(methods or {})}.items():
        setattr(BoundLogger, name, value)


def level_methods(level: int) -> dict[str, Any]:
    """structlog's filtering bound logger's methods for ``level``, by name."""
    template = structlog.make_filtering_bound_logger(level)
    return {name: value for name, value in vars(template).items() if not name.startswith("__")}


apply_level(logging.INFO)

#: The wrapped logger access events are written through, and the method for each level.
ACCESS: Final = OutputLogger(ACCESS_LOGGER)
METHOD_NAMES: Final = {
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
    ``structlog.testing.capture_logs`` sees it the same way. reqlog must be configured.
    """
    settings = STATE.settings
    if settings is None or level < settings.level:
        return
    method = METHOD_NAMES.get(level) or logging.getLevelName(level).lower()
    fields["event"] = event
    try:
        result: Any = fields
        for processor in STATE.processors:
            result = processor(ACCESS, method, result)
    except structlog.DropEvent:
        return
    except Exception as exc:  # noqa: BLE001 - logging never breaks the app
        STATE.output.report("chain", f"could not log event {event!r}: {exc!r}")
        return
    write = getattr(ACCESS, method, ACCESS.msg)
    if isinstance(result, tuple):
        write(*result[0], **result[1])
    elif isinstance(result, dict):
        write(**result)
    else:
        write(result)


def render_own_event(event: str, level: str, fields: dict[str, Any]) -> bytes:
    """reqlog's own events (``logs_dropped``) through the configured chain, as bytes."""
    logger = OutputLogger("reqlog")
    result: Any = {"event": event, **fields}
    for processor in list(STATE.processors):
        result = processor(logger, level, result)
    if isinstance(result, str):
        result = result.encode("utf-8", "backslashreplace") + b"\n"
    if not isinstance(result, bytes):
        msg = f"the chain returned {type(result).__name__}, not a rendered line"
        raise TypeError(msg)
    return result
