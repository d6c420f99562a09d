"""``reqlog trace``: every event of one request, in time order, with offsets from its start.

Events of a request can come before its access event (logged while it ran) or after it (a
background task runs once the response is sent): the whole input is searched, and the events
are ordered by their timestamps. DuckDB scans the files for the ID's first characters; the few
lines that hold them are parsed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

import orjson

from ._engine import Logs, Window, _lit
from ._events import ACCESS_EVENTS, Event, epoch, normalise_request_id, parse_json
from ._input import ReadStats
from ._safe import escape, escape_json
from ._view import Renderer


def collect(logs: Logs, wanted: str, window: Window) -> list[Event]:
    """Events whose ``request_id`` starts with *wanted* (hyphens and case ignored), by time.

    The first eight characters of a request ID are the same in its UUID and 32-hex-digit
    forms; DuckDB keeps the lines holding them (lower or upper case), which are then parsed
    and checked exactly. Events without a timestamp keep their place at the end.
    """
    key = normalise_request_id(wanted)
    probe = key[:8]
    sql = (
        f"SELECT CAST(json AS VARCHAR) FROM ({logs.objects_sql()})"
        f" WHERE contains(CAST(json AS VARCHAR), {_lit(probe)})"
        f" OR contains(CAST(json AS VARCHAR), {_lit(probe.upper())})"
    )
    stats = ReadStats()
    found: list[tuple[float, int, Event]] = []
    for (text,) in logs.query(sql):
        event = parse_json(text.encode(), stats)
        if event is None:
            continue
        rid = event.get("request_id")
        if not isinstance(rid, str) or not normalise_request_id(rid).startswith(key):
            continue
        when = epoch(event.get("timestamp"))
        if when is not None and not _inside(when, window):
            continue
        found.append((when if when is not None else float("inf"), len(found), event))
    found.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in found]


def _inside(when: float, window: Window) -> bool:
    if window.since is not None and when < window.since:
        return False
    return window.until is None or when < window.until


def start_of(events: Sequence[Event]) -> float | None:
    """When the request started: its first event, or earlier by the access event's duration."""
    times = [t for t in (epoch(e.get("timestamp")) for e in events) if t is not None]
    if not times:
        return None
    start = min(times)
    for event in events:
        when = epoch(event.get("timestamp"))
        duration = event.get("duration_ms")
        if (
            event.get("event") in ACCESS_EVENTS
            and when is not None
            and isinstance(duration, int | float)
        ):
            start = min(start, when - duration / 1000)
    return start


def summary(request_id: str, events: Sequence[Event]) -> list[str]:
    """The header: the request ID and, from the access event, what the request was."""
    lines = [f"request {escape(request_id)}: {len(events)} event(s)"]
    access = next((e for e in reversed(events) if e.get("event") in ACCESS_EVENTS), None)
    if access is None:
        lines.append("  no access event (request still running, sampled out, or excluded)")
        return lines
    method = access.get("method") or ("WS" if str(access.get("event")).startswith("ws") else "?")
    parts = [f"{method} {access.get('path')}"]
    if access.get("status_code") is not None:
        parts.append(f"-> {access.get('status_code')}")
    duration = access.get("duration_ms")
    if isinstance(duration, int | float):
        parts.append(f"in {duration:.1f} ms")
    facts = [
        f"{label} {access.get(key)}"
        for key, label in (
            ("route", "route"),
            ("client_ip", "client"),
            ("user_id", "user"),
            ("service", "service"),
        )
        if access.get(key) is not None
    ]
    after = sum(1 for e in events if _after_access(e, access))
    if after:
        facts.append(f"{after} event(s) after the response")
    lines.append("  " + escape(" ".join(parts) + (" (" + ", ".join(facts) + ")" if facts else "")))
    return lines


def _after_access(event: Event, access: Event) -> bool:
    when, done = epoch(event.get("timestamp")), epoch(access.get("timestamp"))
    return event is not access and when is not None and done is not None and when > done


def run(
    request_id: str,
    names: Sequence[str],
    *,
    colour: bool,
    as_json: bool,
    window: Window,
    threads: int | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """The ``trace`` command."""
    with Logs(names, threads=threads) as logs:
        for problem in logs.problems:
            print(f"reqlog: {escape(problem)}", file=err)
        events = collect(logs, request_id, window)
    ids = sorted({str(e.get("request_id")) for e in events})
    if not events:
        print(f"reqlog: no events with request ID {escape(repr(request_id))}", file=err)
        return 1
    if len(ids) > 1:
        print(
            f"reqlog: {escape(repr(request_id))} matches {len(ids)} requests; give more of the ID:",
            file=err,
        )
        for rid in ids[:10]:
            print(f"  {escape(rid)}", file=err)
        return 1
    start = start_of(events)
    renderer = Renderer(colour=colour, short_ids=False)
    if not as_json:
        print("\n".join(summary(ids[0], events)), file=out)
    for event in events:
        when = epoch(event.get("timestamp"))
        offset = None if when is None or start is None else (when - start) * 1000
        if as_json:
            record = {"offset_ms": None if offset is None else round(offset, 3), **event}
            out.write(escape_json(orjson.dumps(record).decode()) + "\n")
        else:
            stamp = "+?" if offset is None else f"+{offset:9.3f} ms"
            rest = {k: v for k, v in event.items() if k != "request_id"}
            out.write(renderer.render(rest, stamp=stamp) + "\n")
    return 0
