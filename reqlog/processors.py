"""Small structlog processors and the access-event policies: levels by status, slow requests."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "AddStaticFields",
    "SlowRequests",
    "StatusLevels",
    "parse_level",
]

_LEVEL_NAMES = {
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "notset": logging.NOTSET,
}


def parse_level(value: Any, option: str = "level") -> int:
    """A level name (any case) or number, as the standard library's numbers."""
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if value in _LEVEL_NAMES.values():
            return value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in _LEVEL_NAMES:
            return _LEVEL_NAMES[text]
        if text.isdigit() and int(text) in _LEVEL_NAMES.values():
            return int(text)
    names = ", ".join(n.upper() for n in ("debug", "info", "warning", "error", "critical"))
    msg = f"{option}: expected a level name ({names}) or number, got {value!r}"
    raise ValueError(msg)


_STATUS_CLASS = re.compile(r"([1-5])xx", re.IGNORECASE)


class StatusLevels:
    """Chooses the access event's level from its status code (and whether it was slow).

    Default: info for 1xx-3xx, warning for 4xx, error for 5xx; a slow request is at least a
    warning. ``mapping`` keys are status codes (``404``) or classes (``"4xx"``); an exact code
    wins over its class. A callable ``(status_code, slow) -> level`` replaces the rule whole.
    """

    def __init__(
        self,
        mapping: Mapping[int | str, int | str] | Callable[[int, bool], int | str] | None = None,
    ) -> None:
        self._func: Callable[[int, bool], int | str] | None = None
        table: dict[int, int] = {}
        for code in range(100, 600):
            table[code] = (
                logging.ERROR if code >= 500 else logging.WARNING if code >= 400 else logging.INFO
            )
        if callable(mapping):
            self._func = mapping
        elif mapping is not None:
            if not isinstance(mapping, Mapping):
                msg = f"status_levels: expected a mapping or a callable, got {mapping!r}"
                raise ValueError(msg)
            exact: dict[int, int] = {}
            for key, level in mapping.items():
                lvl = parse_level(level, f"status_levels[{key!r}]")
                if isinstance(key, int) and not isinstance(key, bool) and 100 <= key <= 599:
                    exact[key] = lvl
                elif isinstance(key, str) and (m := _STATUS_CLASS.fullmatch(key.strip())):
                    base = int(m.group(1)) * 100
                    for code in range(base, base + 100):
                        table[code] = lvl
                else:
                    msg = (
                        "status_levels: keys are status codes (100-599) or classes like '4xx', "
                        f"got {key!r}"
                    )
                    raise ValueError(msg)
            table.update(exact)
        self._table = table

    def __call__(self, status_code: int, slow: bool = False) -> int:
        if self._func is not None:
            try:
                return parse_level(self._func(status_code, slow), "status_levels()")
            except Exception:  # noqa: BLE001 - a user's callable must not break the request
                pass
        level = self._table.get(status_code, logging.ERROR)
        if slow and level < logging.WARNING:
            return logging.WARNING
        return level


class SlowRequests:
    """Thresholds that make an access event slow: one default, and per route template."""

    def __init__(self, default_ms: float | None, routes: Mapping[str, float] | None) -> None:
        self.default_ms = _threshold(default_ms, "slow_request_ms")
        self.routes: dict[str, float] = {}
        if routes is not None:
            if not isinstance(routes, Mapping):
                msg = f"slow_routes: expected a mapping of route template to ms, got {routes!r}"
                raise ValueError(msg)
            for route, ms in routes.items():
                if not isinstance(route, str) or not route.startswith("/"):
                    msg = (
                        f"slow_routes: keys are route templates like '/items/{{id}}', got {route!r}"
                    )
                    raise ValueError(msg)
                value = _threshold(ms, f"slow_routes[{route!r}]")
                if value is not None:
                    self.routes[route] = value
        self.enabled = self.default_ms is not None or bool(self.routes)

    def threshold(self, route: str | None) -> float | None:
        """The threshold that applies to ``route``, or ``None`` when none does."""
        if route is not None and self.routes:
            per_route = self.routes.get(route)
            if per_route is not None:
                return per_route
        return self.default_ms


def _threshold(value: Any, option: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        msg = f"{option}: expected a positive number of milliseconds, got {value!r}"
        raise ValueError(msg)
    return float(value)


class AddStaticFields:
    """Processor: adds fixed fields (``service``) to every event that lacks them."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = dict(fields)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in self.fields.items():
            event_dict.setdefault(key, value)
        return event_dict
