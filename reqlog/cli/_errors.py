"""``reqlog errors``: failures grouped by fingerprint, with counts, times, routes and examples.

A fingerprint is the error type and the innermost *application* frame of the traceback (the
deepest frame outside site-packages and the standard library): the same bug raised from the
same place, whatever the message says (messages hold IDs and values). A 5xx response without
an exception is grouped by its status and route. DuckDB selects the failures; the traceback is
taken apart here, once per distinct traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from ._engine import FAILED_EVENTS, Logs, Window, epoch_seconds
from ._events import format_time, iso_time
from ._safe import safe

MAX_EXAMPLES = 3
MAX_ROUTES = 5

# Frames from installed packages, the standard library and generated code are not the app's.
_LIBRARY = re.compile(
    r"[\\/](site|dist)-packages[\\/]|[\\/]lib[\\/]python\d[\d.]*[\\/]|^<frozen |^<string>$"
)
_TEXT_FRAME = re.compile(r'^\s*File "(?P<file>[^"]*)", line (?P<line>\d+), in (?P<name>.*)$')


@dataclass(frozen=True)
class Frame:
    """Where an error was raised: file, line and function."""

    filename: str
    lineno: int | None
    name: str


@dataclass
class ErrorGroup:
    """Failures with one fingerprint."""

    error: str
    frame: Frame | None
    count: float = 0.0
    events: int = 0
    first: float | None = None
    last: float | None = None
    routes: dict[str, float] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    message: str = ""
    status: int | None = None

    @property
    def where(self) -> str:
        """``create_order (app/main.py:12)``, or the route for a 5xx without a traceback."""
        if self.frame is None:
            return ", ".join(self.routes) if self.routes else "-"
        line = f":{self.frame.lineno}" if self.frame.lineno is not None else ""
        return f"{self.frame.name} ({self.frame.filename}{line})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "error": self.error,
            "frame": None
            if self.frame is None
            else {
                "filename": self.frame.filename,
                "lineno": self.frame.lineno,
                "function": self.frame.name,
            },
            "count": round(self.count, 1),
            "events": self.events,
            "first_seen": None if self.first is None else iso_time(self.first),
            "last_seen": None if self.last is None else iso_time(self.last),
            "routes": {k: round(v, 1) for k, v in self.top_routes()},
            "request_ids": self.request_ids,
            "message": self.message,
        }

    def top_routes(self) -> list[tuple[str, float]]:
        """The routes with the most of these failures."""
        return sorted(self.routes.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_ROUTES]


def is_application(filename: str) -> bool:
    """True for a frame of the application rather than of a library or the standard library."""
    return not _LIBRARY.search(filename)


def innermost_frame(exception: str | None) -> tuple[str | None, Frame | None]:
    """The error type and innermost application frame of a traceback (JSON or text).

    reqlog's JSON format writes structlog's structured traceback: a list of stacks, the raised
    exception first, then its causes; frames go from the outermost call to the innermost.
    The console, ECS and OTel formats write Python's text traceback, causes first.
    """
    if not exception:
        return None, None
    if exception.startswith("["):
        try:
            stacks = orjson.loads(exception)
        except orjson.JSONDecodeError:
            return None, None
        if not stacks or not isinstance(stacks[0], dict):
            return None, None
        raised = stacks[0]
        frames = [
            Frame(
                str(f.get("filename")),
                f.get("lineno") if isinstance(f.get("lineno"), int) else None,
                str(f.get("name")),
            )
            for f in raised.get("frames") or []
            if isinstance(f, dict)
        ]
        kind = raised.get("exc_type")
        return (str(kind) if kind else None), _pick(frames)
    lines = exception.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    block = lines[starts[-1] :] if starts else lines
    frames = [
        Frame(m["file"], int(m["line"]), m["name"].strip())
        for m in (_TEXT_FRAME.match(line) for line in block)
        if m
    ]
    last = next((line for line in reversed(block) if line and not line.startswith(" ")), "")
    kind = last.split(":", 1)[0].strip() if last and not last.startswith("Traceback") else None
    return kind or None, _pick(frames)


def _pick(frames: Sequence[Frame]) -> Frame | None:
    for frame in reversed(frames):
        if is_application(frame.filename):
            return frame
    return frames[-1] if frames else None


def failures_sql(logs: Logs) -> str:
    """The failed requests, 5xx responses and events with a traceback, oldest first."""
    failed = ", ".join(f"'{e}'" for e in FAILED_EVENTS)
    return f"""
    SELECT epoch({logs.ts_sql}) AS ts, event, method, route, path, status_code, error_type,
           error_message, exception, request_id, {logs.weight_sql} AS w,
           ({logs.access_sql}) AS access
    FROM lines
    WHERE (({logs.access_sql}) AND (event IN ({failed}) OR status_code >= 500))
       OR (exception IS NOT NULL AND {logs.window.sql(logs.ts_sql)})
    ORDER BY ts NULLS LAST, request_id NULLS LAST, event, error_message NULLS LAST
    """


def group(rows: Iterable[dict[str, Any]]) -> list[ErrorGroup]:
    """Failures grouped by fingerprint, the most frequent first."""
    groups: dict[tuple[Any, ...], ErrorGroup] = {}
    parsed: dict[str, tuple[str | None, Frame | None]] = {}
    for row in rows:
        exception = row["exception"]
        kind, frame = (None, None)
        if exception:
            if exception not in parsed:
                parsed[exception] = innermost_frame(exception)
            kind, frame = parsed[exception]
        error = row["error_type"] or kind
        status = row["status_code"]
        route = None
        if row["access"]:
            method = row["method"] or ("WS" if str(row["event"]).startswith("websocket") else "-")
            route = f"{method} {row['route'] or row['path'] or '-'}"
        if error is None:
            error = f"HTTP {status}" if status is not None else str(row["event"])
        key = (error, frame.filename, frame.name) if frame else (error, None, route)
        found = groups.get(key)
        if found is None:
            found = groups[key] = ErrorGroup(error=error, frame=frame, status=status)
        weight = float(row["w"]) if row["access"] else 1.0
        found.count += weight
        found.events += 1
        when = epoch_seconds(row["ts"])
        if when is not None:
            found.first = when if found.first is None else min(found.first, when)
            found.last = when if found.last is None else max(found.last, when)
        if route is not None:
            found.routes[route] = found.routes.get(route, 0.0) + weight
        rid = row["request_id"]
        if rid and len(found.request_ids) < MAX_EXAMPLES and rid not in found.request_ids:
            found.request_ids.append(str(rid))
        if row["error_message"]:
            found.message = str(row["error_message"])
    return sorted(groups.values(), key=lambda g: (-g.count, g.error, g.where))


def compute(logs: Logs) -> list[ErrorGroup]:
    """Every error group of the input."""
    return group(logs.rows(failures_sql(logs)))


def render(groups: Sequence[ErrorGroup]) -> str:
    """Text for the terminal: one block per group, every value escaped."""
    if not groups:
        return "no failed requests, 5xx responses or logged exceptions"
    out = []
    for g in groups:
        seen = (
            f"first {format_time(g.first)}, last {format_time(g.last)} UTC"
            if g.first is not None and g.last is not None
            else "no timestamps"
        )
        out.append(f"{g.count:,.0f} x {safe(g.error)} in {safe(g.where)}")
        out.append(f"    {seen}")
        if g.routes:
            routes = ", ".join(f"{safe(r)} ({n:,.0f})" for r, n in g.top_routes())
            out.append(f"    routes: {routes}")
        if g.message:
            out.append(f"    message: {safe(g.message[:300])}")
        if g.request_ids:
            out.append(f"    requests: {' '.join(safe(r) for r in g.request_ids)}")
    return "\n".join(out)


def run(
    names: Sequence[str],
    *,
    top: int,
    as_json: bool,
    window: Window,
    threads: int | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """The ``errors`` command."""
    with Logs(names, window, threads=threads) as logs:
        for problem in logs.problems:
            print(f"reqlog: {safe(problem)}", file=err)
        groups = compute(logs)
    total = sum(g.count for g in groups)
    if as_json:
        doc = {"failures": round(total, 1), "groups": [g.as_dict() for g in groups[:top]]}
        text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
        from ._safe import escape_json

        out.write(escape_json(text) + "\n")
        return 0
    shown = groups[:top]
    if groups:
        more = f" (top {len(shown)} shown)" if len(shown) < len(groups) else ""
        print(f"{total:,.0f} failure(s) in {len(groups)} group(s){more}", file=out)
    print(render(shown), file=out)
    return 0
