"""The access event's policy: its level from the status and slowness, then its way out.

configure() builds one :class:`AccessLog` (``reqlog._pipeline``) and the middleware hands it
every access event's fields. The policy is decided once: with a status table and no
slow-request threshold, the level is one lookup; the emitter is the fused path for reqlog's
default chain (``reqlog._fused``) or the generic one (``reqlog._emit.emit_access``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from reqlog.processors import SlowRequests, StatusLevels

__all__ = ["REQUEST_FIELDS", "AccessLog", "Emit", "FusedRequest"]

#: (level, event name, fields) -> None: writes one access event.
Emit = Callable[[int, str, dict[str, Any]], None]
#: (status -> level table, *the values of REQUEST_FIELDS, capture fields or None) -> None:
#: levels and writes the common request's ``request_completed`` (reqlog._fused); a status
#: missing from the table is an error.
FusedRequest = Callable[..., None]
#: The common request's fields, in the order the middleware hands their values over.
REQUEST_FIELDS: Final = (
    *("method", "path", "route", "query", "status_code", "duration_ms", "user_agent"),
    *("http_version", "response_bytes"),
)

_ERROR: Final = logging.ERROR
_WARNING: Final = logging.WARNING


class AccessLog:
    """Levels and emits access events; one per configure()."""

    __slots__ = ("emit", "fused", "levels", "request", "slow", "table")

    def __init__(
        self,
        levels: StatusLevels,
        slow: SlowRequests,
        emit: Emit,
        fused: FusedRequest | None = None,
    ) -> None:
        #: Writes an event at a level already decided (``request_failed``, websockets).
        self.emit = emit
        self.levels = levels
        self.table = levels.table()
        self.slow = slow if slow.enabled else None
        # The whole common request in one call, when the level is a lookup (no callable, no
        # slowness) and the chain is fused: see request().
        self.fused = fused if self.table is not None and self.slow is None else None
        #: The common case: a request whose response went out whole, with nothing to add to
        #: its nine fields (no proxy, no rejected ID), in the order of :data:`REQUEST_FIELDS`,
        #: then the capture fields or None (``reqlog.bodies.Capture.fields``). The same event
        #: as ``completed()`` with those fields; on the fused path, the fused call itself with
        #: the table bound (no layer between).
        self.request: Callable[..., None] = (
            self._request if self.fused is None else partial(self.fused, self.table)
        )

    def _request(
        self,
        method: Any,
        path: Any,
        route: str | None,
        query: str,
        status: Any,
        duration: Any,
        user_agent: str | None,
        http_version: Any,
        sent: int,
        captured: dict[str, Any] | None = None,
    ) -> None:
        values = (method, path, route, query, status, duration, user_agent, http_version, sent)
        fields = dict(zip(REQUEST_FIELDS, values, strict=True))
        if captured is not None:
            fields.update(captured)
        self.completed(fields)

    def completed(
        self, fields: dict[str, Any], event: str = "request_completed", min_level: int = 0
    ) -> None:
        """An HTTP request's event: marked slow past its threshold, levelled by its status
        (and slowness), at ``min_level`` at least."""
        slow = False
        if self.slow is not None:
            threshold = self.slow.threshold(fields["route"])
            if threshold is not None and fields["duration_ms"] >= threshold:
                slow = True
                fields["slow"] = True
                fields["slow_threshold_ms"] = threshold
        table = self.table
        if table is None:
            level = self.levels(fields["status_code"], slow)
        else:
            # StatusLevels.__call__ for a table, inline: the common case costs one lookup.
            level = table.get(fields["status_code"], _ERROR)
            if slow and level < _WARNING:
                level = _WARNING
        self.emit(level if level >= min_level else min_level, event, fields)
