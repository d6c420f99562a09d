"""``reqlog trace``: every event of one request, in order, with offsets from its start."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

import orjson

from ._events import ACCESS_EVENTS, Event, epoch, normalise_request_id, parse_json
from ._input import ReadStats, iter_batches
from ._view import Renderer


def collect(names: Sequence[str], wanted: str, stats: ReadStats) -> list[Event]:
    """Events whose ``request_id`` starts with *wanted* (hyphens and case ignored), in order.

    A cheap substring test runs before parsing: the first eight characters of a request ID are
    the same in its UUID and its 32-hex-digit forms.
    """
    key = normalise_request_id(wanted)
    probe = key[:8]
    probes = (probe.encode(), probe.upper().encode())
    found: list[tuple[float, int, Event]] = []
    for batch in iter_batches(names, stats):
        for line in batch:
            if probes[0] not in line and probes[1] not in line:
                continue
            if not line.lstrip().startswith(b"{"):
                continue
            event = parse_json(line, stats)
            if event is None:
                continue
            rid = event.get("request_id")
            if isinstance(rid, str) and normalise_request_id(rid).startswith(key):
                when = epoch(event.get("timestamp"))
                found.append((when if when is not None else float("inf"), len(found), event))
    found.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in found]


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
    lines = [f"request {request_id}: {len(events)} event(s)"]
    access = next((e for e in reversed(events) if e.get("event") in ACCESS_EVENTS), None)
    if access is None:
        lines.append("  no access event (request still running, sampled out, or excluded)")
        return lines
    parts = [
        f"{access.get('method')} {access.get('path')}",
        f"-> {access.get('status_code')}",
    ]
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
    lines.append("  " + " ".join(parts) + (" (" + ", ".join(facts) + ")" if facts else ""))
    return lines


def run(
    request_id: str,
    names: Sequence[str],
    *,
    colour: bool,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """The ``trace`` command."""
    stats = ReadStats()
    events = collect(names, request_id, stats)
    for message in stats.summary():
        print(f"reqlog: {message}", file=err)
    ids = sorted({str(e.get("request_id")) for e in events})
    if not events:
        print(f"reqlog: no events with request ID {request_id!r}", file=err)
        return 1
    if len(ids) > 1:
        print(
            f"reqlog: {request_id!r} matches {len(ids)} requests; give more of the ID:",
            file=err,
        )
        for rid in ids[:10]:
            print(f"  {rid}", file=err)
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
            out.write(orjson.dumps(record).decode() + "\n")
        else:
            stamp = "+?" if offset is None else f"+{offset:9.3f} ms"
            rest = {k: v for k, v in event.items() if k != "request_id"}
            out.write(renderer.render(rest, stamp=stamp) + "\n")
    return 0
