"""The live configuration, in one object: what configure() decided and where lines go; flush().

Everything reqlog keeps between calls lives in :data:`STATE`, and configure() swaps its parts
whole (structlog's ``_config.py`` keeps its configuration the same way). The functions that
read it across the package (flush, the counters, the last flush at exit or on SIGTERM) live
beside it. What is written where, and how, is :mod:`reqlog.output`'s business, which knows
nothing of this module.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reqlog import output
from reqlog.output import Output, OutputStats

if TYPE_CHECKING:
    from structlog.typing import Processor

    from reqlog._access import AccessLog
    from reqlog.processors import Redactor, SlowRequests, StatusLevels

__all__ = [
    "STATE",
    "Settings",
    "State",
    "finish_all",
    "flush",
    "install_sigterm_flush",
    "output_stats",
    "report",
]


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
    # The active Redactor (None when off), for code that redacts outside the chain, and the
    # access-event sample rate.
    redactor: Redactor | None = None
    sample_rate: float = 1.0


class State:
    """The live configuration. One object, its attributes swapped whole by configure()."""

    def __init__(self) -> None:
        #: ``None`` until configure() ran (then the first log call configures defaults).
        self.settings: Settings | None = None
        self.output = Output([])
        #: The second output for slow requests (configure(slow_output=...)), if any.
        self.slow_output: Output | None = None
        #: configure(otlp=...): reqlog.integrations.otel.OTLPEmitter, flushed and counted
        #: beside the outputs by flush() and output_stats().
        self.otlp: Any = None
        #: reqlog's handler on the root logger (configure(stdlib=True)), if any.
        self.handler: logging.Handler | None = None
        #: The access events' policy and emitter (reqlog._access.AccessLog), once configured.
        self.access: AccessLog | None = None
        #: The processor chain shared by every reqlog and structlog logger. configure()
        #: replaces its contents in place, so loggers created before a reconfiguration follow.
        self.processors: list[Processor] = []
        #: Lists that receive a copy of every processed event, right before rendering
        #: (reqlog.testing.capture_events). Empty outside tests.
        self.captures: list[list[dict[str, Any]]] = []
        #: ``configure(redact=True)``'s Redactor, one for the process: its key and clean-text
        #: caches stay warm across reconfigurations.
        self.default_redactor: Redactor | None = None
        #: Held while configure() or reset() swaps the parts.
        self.lock = threading.RLock()


STATE = State()


def report(key: str, what: str) -> None:
    """Report a logging failure on stderr through the current output (rate-limited per key)."""
    STATE.output.report(key, what)


def flush(timeout: float | None = None) -> bool:
    """Block until every event accepted so far is written; ``False`` if ``timeout`` ran out.

    The ``slow_output`` too, when there is one, within the same ``timeout``. With
    ``configure(otlp=...)``, OpenTelemetry's records too, for at most ``otlp_timeout``
    seconds: ``False`` also when one of them is still on its way or was lost since the
    previous flush (a collector that is down).

    >>> reqlog.flush(timeout=2.0)
    True
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    # OTLP first, never longer than configure(otlp_timeout=...): what it lost is written to
    # the output as a logs_dropped event, which the output's flush then covers.
    otlp = STATE.otlp
    done = otlp.flush(timeout) if otlp is not None else True
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    done = STATE.output.flush(left) and done
    slow = STATE.slow_output
    if slow is not None:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = slow.flush(left) and done
    return done


def finish_all(timeout: float) -> None:
    """The last flush of the output and the ``slow_output`` (Output.finish): at exit, on
    SIGTERM. Bounded by the shutdown's deadline whatever the sinks do."""
    otlp = STATE.otlp
    if otlp is not None:
        # First, within otlp_timeout: then the exporter stops, even in the middle of its
        # retries, and the logs_dropped event for what it lost still reaches the output.
        otlp.close(timeout)
    STATE.output.finish(timeout)
    slow = STATE.slow_output
    if slow is not None:
        slow.finish(timeout)


def output_stats() -> OutputStats:
    """Accepted, written, dropped and error counts of the current output.

    ``accepted == written + dropped`` whenever nothing is waiting in the queue, so right
    after ``flush()`` returned ``True``. With ``configure(otlp=...)`` the records handed to
    OpenTelemetry count too (exported as ``written``, lost as ``dropped``), and ``otlp`` has
    their counts alone.

    >>> sorted(reqlog.output_stats())
    ['accepted', 'dropped', 'errors', 'written']
    """
    stats = STATE.output.stats()
    otlp = STATE.otlp
    otlp_stats = otlp.stats() if otlp is not None else None
    if otlp_stats is not None:
        for key in ("accepted", "written", "dropped", "errors"):
            stats[key] += otlp_stats[key]
        stats["otlp"] = otlp_stats
    return stats


# --- the last flush: at exit and on SIGTERM -------------------------------------------------------


def _flush_on_sigterm(signum: int, frame: Any) -> None:
    """Flush (bounded), then die of SIGTERM as if reqlog had never been there.

    uvicorn restores the handler it found at startup, this one, and re-raises SIGTERM after
    its graceful shutdown; the lines uvicorn logged after the lifespan ended get written.
    """
    with contextlib.suppress(Exception):
        finish_all(timeout=output.SIGNAL_FLUSH_TIMEOUT_S)
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def install_sigterm_flush() -> None:
    """Flush on SIGTERM, where nobody else handles it: main thread, default disposition."""
    if threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _flush_on_sigterm)


def _flush_at_exit() -> None:
    # finish(), not flush(): bounded by the shutdown's deadline, whatever the sinks do; OTLP
    # first, within otlp_timeout (finish_all closes it).
    finish_all(timeout=output.EXIT_FLUSH_TIMEOUT_S)


atexit.register(_flush_at_exit)
