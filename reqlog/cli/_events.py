"""Turning lines into events: parsing, schema normalisation, timestamps and event filters.

reqlog writes flat events (``event``, ``level``, ``timestamp``, ``status_code``...). Logs written
with ``schema="ecs"`` or ``schema="otel"`` use other names; :func:`normalise` maps the ones the
commands need back to the flat names, so every command reads all three.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass
from typing import Any

import orjson

from reqlog.schemas import ECS_FIELDS, OTEL_FIELDS

from ._input import ReadStats

Event = dict[str, Any]
ACCESS_EVENTS = frozenset(
    {"request_completed", "request_failed", "websocket_closed", "websocket_failed"}
)
LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}


def _schema_aliases() -> dict[str, tuple[str, ...]]:
    """flat name <- its ECS and OpenTelemetry names, from the maps in :mod:`reqlog.schemas`."""
    aliases: dict[str, tuple[str, ...]] = {}
    for mapping in (ECS_FIELDS, OTEL_FIELDS):
        for flat, name in mapping.items():
            if name != flat and name not in aliases.get(flat, ()):
                aliases[flat] = (*aliases.get(flat, ()), name)
    return aliases


_ALIASES = _schema_aliases()
#: ECS writes ``event.duration`` in nanoseconds (``schemas._duration_ns``).
_DURATION_NS = ECS_FIELDS["duration_ms"]


def _lookup(event: Event, dotted: str) -> Any:
    """A dotted ECS/OTel name, as a flat key or as nested objects."""
    if dotted in event:
        return event[dotted]
    node: Any = event
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, dict) else node


def normalise(event: Event) -> Event:
    """Add the flat reqlog names to an ECS or OTel event (in place) and return it."""
    for flat, aliases in _ALIASES.items():
        current = event.get(flat)
        if current is None or isinstance(current, dict):
            for alias in aliases:
                value = _lookup(event, alias)
                if value is not None:
                    if alias == _DURATION_NS and isinstance(value, int | float):
                        value = value / 1e6
                    event[flat] = value
                    break
    level = event.get("level")
    if isinstance(level, str) and not level.islower():
        event["level"] = level.lower()
    if "event" not in event:
        event["event"] = ""
    return event


def needs_normalising(event: Event) -> bool:
    """Cheap test: is this an ECS/OTel event rather than reqlog's flat schema?"""
    return (
        type(event.get("event")) is not str
        or "message" in event
        or ("method" not in event and ("http.request.method" in event or "http" in event))
    )


def parse(line: bytes, stats: ReadStats) -> Event | None:
    """Parse one line into an event, counting it; ``None`` for anything else.

    Lines that do not look like JSON objects are counted as ``non_json`` (they are text such as
    uvicorn's banner); lines that start like one but do not parse, or that are binary, are
    counted as ``malformed``.
    """
    if not line.lstrip().startswith(b"{"):
        if line.strip():
            is_text(line, stats)
        return None
    return parse_json(line, stats)


def parse_json(line: bytes, stats: ReadStats) -> Event | None:
    """Parse a line that starts with ``{``; ``None`` (counted as malformed) when it is not JSON."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        stats.malformed += 1
        return None
    if type(event) is not dict:
        stats.malformed += 1
        return None
    stats.events += 1
    if needs_normalising(event):
        normalise(event)
    return event


def is_text(line: bytes, stats: ReadStats) -> bool:
    """Count a line that is not JSON: ``non_json`` when it is text, ``malformed`` when binary."""
    if is_binary(line):
        stats.malformed += 1
        return False
    stats.non_json += 1
    return True


_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")


def is_binary(line: bytes) -> bool:
    """True for lines that are not text: NUL and other control bytes, or invalid UTF-8."""
    if _CONTROL.search(line):
        return True
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# Timestamps ---------------------------------------------------------------------------------

_second_cache: dict[str, float] = {}


def epoch(ts: Any) -> float | None:
    """Seconds since the epoch for an ISO 8601 timestamp, ``None`` when it is not one.

    reqlog writes ``2026-11-24T05:54:20.123456Z``: the whole second is parsed once and cached,
    the fraction added, which keeps this cheap enough to call for every event.
    """
    if not isinstance(ts, str):
        if isinstance(ts, int | float) and not isinstance(ts, bool):
            return float(ts)
        return None
    if len(ts) >= 20 and ts[-1] == "Z" and ts[10] == "T":
        base = _second_cache.get(ts[:19])
        if base is None:
            try:
                base = dt.datetime.fromisoformat(ts[:19] + "+00:00").timestamp()
            except ValueError:
                return None
            if len(_second_cache) > 100_000:
                _second_cache.clear()
            _second_cache[ts[:19]] = base
        frac = ts[19:-1]
        if not frac:
            return base
        try:
            return base + float(frac)
        except ValueError:
            return None
    try:
        parsed = dt.datetime.fromisoformat(ts)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``2h``, ``1d``, ``500ms`` (or plain seconds) as seconds."""
    match = _RELATIVE.match(text.strip())
    if match:
        return float(match.group(1)) * _UNITS[match.group(2)]
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        msg = f"not a duration: {text!r} (use 30s, 15m, 2h, 1d)"
        raise ValueError(msg)
    return value


_TIME_OF_DAY = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$")


def parse_time_arg(text: str, now: float | None = None) -> float:
    """A time on the command line (``--since``, ``--until``, ``--at``), as epoch seconds.

    ISO 8601 (UTC unless an offset is given), an age (``15m``: that long ago), or a time of
    day (``14:05``, UTC): the last time the clock showed it, today or else yesterday.
    """
    text = text.strip()
    reference = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    match = _RELATIVE.match(text)
    if match:
        return reference - float(match.group(1)) * _UNITS[match.group(2)]
    if _TIME_OF_DAY.match(text):
        today = dt.datetime.fromtimestamp(reference, dt.UTC).date()
        try:
            clock = dt.time.fromisoformat("0" + text if text.index(":") == 1 else text)
        except ValueError:
            clock = None
        if clock is not None:
            when = dt.datetime.combine(today, clock, dt.UTC).timestamp()
            return when if when <= reference else when - 86400
    value = epoch(text.replace(" ", "T", 1) if len(text) > 10 else text)
    if value is None:
        msg = (
            f"not a time: {text!r} (use ISO 8601 such as 2026-11-24T05:54, a time of day"
            " such as 14:05, or an age such as 15m)"
        )
        raise ValueError(msg)
    return value


def format_time(seconds: float, *, date: bool = True) -> str:
    """UTC time for people: ``2026-11-24 05:54:20`` (or only the clock)."""
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def iso_time(seconds: float) -> str:
    """UTC ISO 8601 with microseconds, as reqlog writes it."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Filters ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusSpec:
    """``--status``: status code ranges (inclusive); a code matches when it is in any."""

    ranges: tuple[tuple[int, int], ...]

    def __call__(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.ranges)


def parse_status_spec(text: str) -> StatusSpec:
    """``5xx``, ``404``, ``4xx,5xx``, ``500-504``, ``>=400``: the codes to keep."""
    ranges: list[tuple[int, int]] = []
    for raw in text.split(","):
        part = raw.strip().lower()
        if re.fullmatch(r"[1-5]xx", part):
            low = int(part[0]) * 100
            ranges.append((low, low + 99))
        elif re.fullmatch(r"\d{3}", part):
            ranges.append((int(part), int(part)))
        elif m := re.fullmatch(r"(\d{3})-(\d{3})", part):
            ranges.append((int(m[1]), int(m[2])))
        elif m := re.fullmatch(r"(>=|<=|>|<)(\d{3})", part):
            code = int(m[2])
            ranges.append(
                {
                    ">=": (code, 999),
                    ">": (code + 1, 999),
                    "<=": (0, code),
                    "<": (0, code - 1),
                }[m[1]]
            )
        else:
            msg = f"not a status filter: {raw!r} (use 5xx, 404, 500-504, >=400, or a list)"
            raise ValueError(msg)
    return StatusSpec(tuple(ranges))


def normalise_request_id(value: str) -> str:
    """Request IDs compare without hyphens and case: a UUID matches its 32-hex-digit form."""
    return value.replace("-", "").lower()


@dataclass
class EventFilter:
    """The ``view`` filters; an event passes when it passes all of those given."""

    request_id: str | None = None
    min_level: int | None = None
    slow: bool = False
    status: StatusSpec | None = None
    route: str | None = None
    since: float | None = None
    until: float | None = None

    @property
    def active(self) -> bool:
        """True when any filter is set (then lines that are not events are not shown)."""
        return any(
            (
                self.request_id,
                self.min_level is not None,
                self.slow,
                self.status,
                self.route,
                self.since is not None,
                self.until is not None,
            )
        )

    def __call__(self, event: Event) -> bool:
        if self.request_id is not None:
            rid = event.get("request_id")
            if not isinstance(rid, str) or not normalise_request_id(rid).startswith(
                self.request_id
            ):
                return False
        if self.min_level is not None:
            level = event.get("level")
            if LEVELS.get(level if isinstance(level, str) else "", 0) < self.min_level:
                return False
        if self.slow and event.get("slow") is not True:
            return False
        if self.status is not None:
            status = event.get("status_code")
            if not isinstance(status, int) or not self.status(status):
                return False
        if self.route is not None and not route_matches(event, self.route):
            return False
        if self.since is not None or self.until is not None:
            when = epoch(event.get("timestamp"))
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return True


def route_matches(event: Event, pattern: str) -> bool:
    """``--route``: the route template or the path, exactly or as a glob (``/items*``)."""
    for key in ("route", "path"):
        value = event.get(key)
        if isinstance(value, str) and (value == pattern or fnmatch.fnmatchcase(value, pattern)):
            return True
    return False
