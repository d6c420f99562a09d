"""The standard library's logging through reqlog: its handler, and the servers' loggers.

configure(stdlib=True) puts :class:`StdlibHandler` on the root logger: records from any
library are rendered by the same chain (as text, through structlog's ``ProcessorFormatter``)
into the same output. The servers' own loggers (uvicorn, gunicorn) are taken over so that
their lines come out once, through reqlog.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import Final

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from reqlog import _escape
from reqlog._state import STATE

__all__ = [
    "SERVER_LOGGERS",
    "StdlibHandler",
    "add_extra",
    "adopt_server_loggers",
    "already_logged",
    "build_handler",
    "mark_logged",
    "route_handler",
    "take_server_loggers",
]

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


def build_handler(
    level: int, head: Sequence[Processor], tail: Sequence[Processor]
) -> StdlibHandler:
    """The handler for records at ``level`` and above, rendered by the text chain
    ``head`` + ``tail`` (the record's ``extra`` fields added after the first step)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*head[:1], add_extra, *head[1:]],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        use_get_message=True,
    )
    return StdlibHandler(level, formatter)


def mark_logged(exc: BaseException) -> None:
    """Lets reqlog's handler drop the server's own "Exception in ASGI application" report of
    an exception that already has its ``request_failed`` event (see :func:`already_logged`)."""
    with contextlib.suppress(AttributeError, TypeError):
        exc._reqlog_logged = True  # type: ignore[attr-defined]


def add_extra(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
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


def already_logged(record: logging.LogRecord) -> bool:
    """Handler filter: drop a server's report of an exception reqlog already logged."""
    exc = record.exc_info[1] if record.exc_info else None
    return not getattr(exc, "_reqlog_logged", False)


class StdlibHandler(logging.Handler):
    """Renders standard-library records through reqlog's chain into reqlog's output."""

    def __init__(self, level: int, formatter: logging.Formatter) -> None:
        super().__init__(level)
        self.setFormatter(formatter)
        self.addFilter(already_logged)

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
                STATE.output.report("stdlib", f"could not log record {record.msg!r}: {again!r}")
                return
        STATE.output.write(line.encode("utf-8", "backslashreplace") + b"\n", record.levelno)


def _unformatted(record: logging.LogRecord, exc: Exception) -> logging.LogRecord:
    """A copy of a record whose ``msg % args`` failed: the raw message, the arguments aside.

    The standard library prints a "--- Logging error ---" report and loses the message;
    reqlog writes the event anyway, as the template with its arguments in ``log_args``.
    """
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg = str(record.msg) if isinstance(record.msg, str) else repr(record.msg)
    copy.args = None
    copy.log_args = _escape.safe_repr(record.args)
    copy.log_format_error = repr(exc)
    return copy


def adopt_server_loggers() -> None:
    """Take the server's loggers over again if the server configured them after configure().

    ``uvicorn.run(app)`` applies uvicorn's logging config after the application module ran
    configure(); the middleware calls this when the app starts, so uvicorn's lines still come
    out once, through reqlog.
    """
    current = STATE.settings
    if current is not None and current.stdlib:
        take_server_loggers()


def take_server_loggers() -> None:
    for name in SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        for h in list(server_logger.handlers):
            server_logger.removeHandler(h)
        server_logger.propagate = True


def route_handler(handler: logging.Handler | None, level: int) -> None:
    root = logging.getLogger()
    old = STATE.handler
    if old is not None:
        root.removeHandler(old)
    STATE.handler = handler
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
    take_server_loggers()
