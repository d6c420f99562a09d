"""``reqlog stats``: per-route (or path, status, user...) latency and error figures.

The reading loop is the hot path of the whole tool (a million lines in well under three seconds
on two cores), so it does as little per line as it can: a substring test before parsing, one
``orjson.loads`` for access events only, and appends to per-group lists. Everything else
(percentiles, rates, sorting) happens once per group at the end.
"""

from __future__ import annotations

import bisect
import itertools
import math
import multiprocessing
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from ._events import (
    ACCESS_EVENTS,
    Event,
    epoch,
    format_time,
    iso_time,
    needs_normalising,
    normalise,
)
from ._input import STDIN, ReadStats, iter_chunks, iter_range

GROUPINGS = ("route", "path", "status", "user", "method", "service")
SORT_KEYS = ("total", "count", "rps", "p50", "p95", "p99", "max", "4xx", "5xx", "slow", "name")
NO_ROUTE = "(no route)"
ANONYMOUS = "(anonymous)"


@dataclass
class Group:
    """Raw material for one group, filled by the reading loop.

    Durations of events kept by sampling go to ``sampled``, one list per weight (the inverse
    of their ``sample_rate``), so that every list can be sorted as plain floats.
    """

    durations: list[float] = field(default_factory=list)
    sampled: dict[float, list[float]] = field(default_factory=dict)
    count_4xx: float = 0.0
    count_5xx: float = 0.0
    slow: float = 0.0

    def merge(self, other: Group) -> None:
        """Add *other*'s events to this group."""
        self.durations.extend(other.durations)
        for weight, values in other.sampled.items():
            self.sampled.setdefault(weight, []).extend(values)
        self.count_4xx += other.count_4xx
        self.count_5xx += other.count_5xx
        self.slow += other.slow


@dataclass
class Row:
    """Computed figures for one group (what ``--json`` prints)."""

    key: str
    count: float
    rps: float
    rate_4xx: float
    rate_5xx: float
    p50: float
    p95: float
    p99: float
    max: float
    slow: float
    total_ms: float
    events: int

    def as_dict(self) -> dict[str, Any]:
        """Rounded figures, for JSON output."""
        return {
            "key": self.key,
            "count": round(self.count, 1),
            "requests_per_s": round(self.rps, 3),
            "rate_4xx": round(self.rate_4xx, 4),
            "rate_5xx": round(self.rate_5xx, 4),
            "p50_ms": round(self.p50, 3),
            "p95_ms": round(self.p95, 3),
            "p99_ms": round(self.p99, 3),
            "max_ms": round(self.max, 3),
            "slow": round(self.slow, 1),
            "total_ms": round(self.total_ms, 3),
            "events": self.events,
        }


@dataclass
class Aggregate:
    """Access events grouped by one key, plus the time span they cover."""

    by: str
    groups: dict[str, Group] = field(default_factory=dict)
    first: float | None = None
    last: float | None = None
    requests: int = 0

    @property
    def span_s(self) -> float:
        """Seconds between the first and last access event (at least one second)."""
        if self.first is None or self.last is None:
            return 1.0
        return max(self.last - self.first, 1.0)


def group_key(event: Event, by: str) -> str:
    """The group an access event belongs to."""
    if by == "route":
        route = event.get("route")
        return f"{event.get('method') or '-'} {route if route else NO_ROUTE}"
    if by == "path":
        return f"{event.get('method') or '-'} {event.get('path') or '-'}"
    if by == "status":
        return str(event.get("status_code"))
    if by == "user":
        user = event.get("user_id")
        return str(user) if user is not None else ANONYMOUS
    value = event.get(by)
    return str(value) if value is not None else "-"


_ACCESS_MARKERS = (b'"request_completed"', b'"request_failed"')


def access_lines(chunk: bytes) -> Iterator[bytes]:
    """The lines of *chunk* that mention an access event, found without splitting every line."""
    find, rfind = chunk.find, chunk.rfind
    for marker in _ACCESS_MARKERS:
        pos = find(marker)
        while pos >= 0:
            start = rfind(b"\n", 0, pos) + 1
            end = find(b"\n", pos)
            if end < 0:
                end = len(chunk)
            yield chunk[start:end]
            pos = find(marker, end)


def access_events(chunks: Iterable[bytes], stats: ReadStats) -> Iterator[dict[str, Any]]:
    """The access events in blocks of lines, parsed and normalised to flat names."""
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    for chunk in chunks:
        for line in access_lines(chunk):
            try:
                event = loads(line)
            except decode_error:
                stats.malformed += 1
                continue
            if type(event) is not dict:
                continue
            if "method" not in event and needs_normalising(event):
                normalise(event)
            if event.get("event") in ACCESS_EVENTS:
                yield event


def aggregate(chunks: Iterable[bytes], stats: ReadStats, by: str) -> Aggregate:
    """Read access events from blocks of lines into groups (the hot loop)."""
    agg = Aggregate(by=by)
    groups = agg.groups
    first = last = None
    requests = 0
    by_route = by == "route"
    for event in access_events(chunks, stats):
        get = event.get
        requests += 1
        if by_route:
            key = f"{get('method') or '-'} {get('route') or NO_ROUTE}"
        else:
            key = group_key(event, by)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group()
        duration = get("duration_ms")
        if type(duration) is not float:
            duration = float(duration) if isinstance(duration, int) else 0.0
        rate = get("sample_rate")
        if rate is None:
            weight = 1.0
            group.durations.append(duration)
        elif isinstance(rate, float | int) and 0 < rate < 1:
            weight = 1.0 / rate
            sampled = group.sampled.get(weight)
            if sampled is None:
                sampled = group.sampled[weight] = []
            sampled.append(duration)
        else:
            weight = 1.0
            group.durations.append(duration)
        status = get("status_code")
        if type(status) is int and status >= 400:
            if status >= 500:
                group.count_5xx += weight
            else:
                group.count_4xx += weight
        if get("slow") is True:
            group.slow += weight
        when = epoch(get("timestamp"))
        if when is not None:
            if first is None or when < first:
                first = when
            if last is None or when > last:
                last = when
    stats.events += requests
    agg.first, agg.last, agg.requests = first, last, requests
    return agg


def merge(into: Aggregate, other: Aggregate) -> None:
    """Add *other* (the same grouping, another part of the input) to *into*."""
    for key, group in other.groups.items():
        mine = into.groups.get(key)
        if mine is None:
            into.groups[key] = group
        else:
            mine.merge(group)
    into.requests += other.requests
    if other.first is not None and (into.first is None or other.first < into.first):
        into.first = other.first
    if other.last is not None and (into.last is None or other.last > into.last):
        into.last = other.last


#: Plain files at least this big are split between worker processes.
PARALLEL_MIN_BYTES = 32 << 20


def _split_points(path: str, size: int, parts: int) -> list[int]:
    """Byte offsets that start lines, cutting *path* into about equal parts."""
    points = [0]
    with open(path, "rb") as fh:
        for k in range(1, parts):
            fh.seek(size * k // parts)
            fh.readline()
            points.append(min(fh.tell(), size))
    points.append(size)
    return sorted(set(points))


def _aggregate_range(path: str, start: int, end: int, by: str) -> tuple[Aggregate, ReadStats]:
    """Worker: aggregate the lines of *path* between two line-start offsets."""
    stats = ReadStats()
    return aggregate(iter_range(path, start, end, stats), stats, by), stats


def aggregate_inputs(names: Sequence[str], stats: ReadStats, by: str, jobs: int) -> Aggregate:
    """Aggregate every input; big plain files are read by *jobs* processes in parallel."""
    agg = Aggregate(by=by)
    pending: list[str] = []

    def flush_pending() -> None:
        if pending:
            merge(agg, aggregate(iter_chunks(pending, stats), stats, by))
            pending.clear()

    for name in names or [STDIN]:
        size = _parallel_size(name) if jobs > 1 else 0
        if size < PARALLEL_MIN_BYTES:
            pending.append(name)
            continue
        flush_pending()
        points = _split_points(name, size, jobs)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [
                pool.submit(_aggregate_range, name, a, b, by) for a, b in itertools.pairwise(points)
            ]
            for future in futures:
                part, part_stats = future.result()
                merge(agg, part)
                stats.add(part_stats)
    flush_pending()
    return agg


def _parallel_size(name: str) -> int:
    """Size of a plain (not gzip) regular file worth splitting, else 0."""
    if name == STDIN or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    try:
        st = os.stat(name)
        if not stat.S_ISREG(st.st_mode) or st.st_size < PARALLEL_MIN_BYTES:
            return 0
        with open(name, "rb") as fh:
            if fh.read(2) == b"\x1f\x8b":
                return 0
    except OSError:
        return 0
    return st.st_size


def percentiles(group: Group, qs: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles (``qs`` in 0..100), each sampled event weighing 1/sample_rate.

    Every weight's durations are sorted on their own; the weighted rank of a value is then a
    few bisections, and a binary search per list finds the smallest value reaching the rank.
    """
    lists = [(1.0, sorted(group.durations))] if group.durations else []
    lists += [(w, sorted(values)) for w, values in group.sampled.items() if values]
    if not lists:
        return [0.0 for _ in qs]
    if len(lists) == 1 and lists[0][0] == 1.0:
        ordered = lists[0][1]
        n = len(ordered)
        return [ordered[max(math.ceil(q / 100 * n) - 1, 0)] for q in qs]
    total = math.fsum(w * len(values) for w, values in lists)

    def rank(value: float) -> float:
        return sum(w * bisect.bisect_right(values, value) for w, values in lists)

    out = []
    for q in qs:
        target = q / 100 * total - 1e-9
        best = math.inf
        for _, values in lists:
            lo, hi = 0, len(values)
            while lo < hi:
                mid = (lo + hi) // 2
                if rank(values[mid]) >= target:
                    hi = mid
                else:
                    lo = mid + 1
            if lo < len(values):
                best = min(best, values[lo])
        out.append(best if best != math.inf else lists[-1][1][-1])
    return out


def rows(agg: Aggregate) -> list[Row]:
    """Figures for every group, unsorted."""
    span = agg.span_s
    out = []
    for key, group in agg.groups.items():
        count = len(group.durations) + sum(w * len(v) for w, v in group.sampled.items())
        total = math.fsum(group.durations) + sum(w * math.fsum(v) for w, v in group.sampled.items())
        biggest = max(
            [max(group.durations, default=0.0)] + [max(v) for v in group.sampled.values() if v]
        )
        p50, p95, p99 = percentiles(group, (50, 95, 99))
        out.append(
            Row(
                key=key,
                count=count,
                rps=count / span,
                rate_4xx=group.count_4xx / count if count else 0.0,
                rate_5xx=group.count_5xx / count if count else 0.0,
                p50=p50,
                p95=p95,
                p99=p99,
                max=biggest,
                slow=group.slow,
                total_ms=total,
                events=len(group.durations) + sum(len(v) for v in group.sampled.values()),
            )
        )
    return out


def sort_rows(items: list[Row], sort: str) -> list[Row]:
    """Order rows by what matters: *sort* descending (``name`` ascending)."""
    if sort == "name":
        return sorted(items, key=lambda r: r.key)
    attr = {
        "total": "total_ms",
        "count": "count",
        "rps": "rps",
        "4xx": "rate_4xx",
        "5xx": "rate_5xx",
    }.get(sort, sort)
    return sorted(items, key=lambda r: (-getattr(r, attr), r.key))


def total_row(agg: Aggregate) -> Row | None:
    """One row over every group (the table's footer)."""
    merged = Group()
    for group in agg.groups.values():
        merged.merge(group)
    if not agg.groups:
        return None
    whole = Aggregate(by=agg.by, groups={"(all)": merged}, first=agg.first, last=agg.last)
    return rows(whole)[0]


def _ms(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.1f}s"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def _pct(value: float) -> str:
    return "-" if value == 0 else f"{value * 100:.1f}%"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def render_table(items: Sequence[Row], footer: Row | None, by: str) -> str:
    """A plain aligned text table (durations in ms)."""
    header = [by, "count", "req/s", "4xx", "5xx", "p50", "p95", "p99", "max", "slow", "total"]
    body = [
        [
            r.key,
            _count(r.count),
            f"{r.rps:.2f}",
            _pct(r.rate_4xx),
            _pct(r.rate_5xx),
            _ms(r.p50),
            _ms(r.p95),
            _ms(r.p99),
            _ms(r.max),
            _count(r.slow) if r.slow else "-",
            f"{r.total_ms / 1000:,.1f}s",
        ]
        for r in [*items, *([footer] if footer else [])]
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    out = [line(header)]
    for i, row in enumerate(body):
        if footer is not None and i == len(body) - 1:
            out.append("-" * len(out[0]))
        out.append(line(row))
    return "\n".join(out)


def run(
    names: Sequence[str],
    *,
    by: str,
    sort: str,
    top: int | None,
    as_json: bool,
    jobs: int,
    out: TextIO,
    err: TextIO,
) -> int:
    """The ``stats`` command."""
    stats = ReadStats()
    agg = aggregate_inputs(names, stats, by, jobs)
    table = sort_rows(rows(agg), sort)
    if top is not None:
        table = table[:top]
    footer = total_row(agg)
    for message in stats.summary():
        print(f"reqlog: {message}", file=err)
    if as_json:
        doc = {
            "by": by,
            "sort": sort,
            "first": None if agg.first is None else iso_time(agg.first),
            "last": None if agg.last is None else iso_time(agg.last),
            "span_s": round(agg.span_s, 3),
            "access_events": agg.requests,
            "groups": [r.as_dict() for r in table],
            "total": footer.as_dict() if footer else None,
        }
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif footer is None:
        print(f"reqlog: {no_requests_message(stats)}", file=err)
    else:
        when = ""
        if agg.first is not None and agg.last is not None:
            when = f", {format_time(agg.first)} to {format_time(agg.last)} UTC"
        print(f"{_count(footer.count)} requests ({agg.requests:,} access events){when}", file=out)
        print("durations in ms; sorted by " + sort, file=out)
        print(render_table(table, footer, by), file=out)
    # Non-zero only when nothing could be read: no access event in input that was not empty.
    return 1 if agg.requests == 0 and (stats.problems or stats.lines) else 0


def no_requests_message(stats: ReadStats) -> str:
    """Why there is nothing to show."""
    if not stats.lines:
        return "no input lines"
    return (
        f"no request events (request_completed/request_failed) in {stats.lines:,} line(s);"
        " is this a reqlog JSON log?"
    )
