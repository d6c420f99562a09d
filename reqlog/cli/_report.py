"""``reqlog report``: one self-contained HTML page with charts drawn as inline SVG.

Nothing is fetched when the page is opened: no scripts, fonts or styles from elsewhere. The
charts are SVG written here, so they render anywhere, print well and need no JavaScript; the
one small inline script only records that the charts laid out (``data-charts-drawn`` on the
root element), which the tests read back from a headless browser.
"""

from __future__ import annotations

import datetime as dt
import heapq
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ._events import epoch, format_time
from ._input import STDIN, ReadStats, iter_chunks
from ._stats import (
    NO_ROUTE,
    Aggregate,
    Group,
    Row,
    access_events,
    no_requests_message,
    percentiles,
    rows,
)

# Bucket widths in minutes; the smallest giving at most MAX_BUCKETS buckets is used.
_BUCKET_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)
MAX_BUCKETS = 240
_MAX_SAMPLE_IDS = 3


@dataclass
class ErrorGroup:
    """Failures that look alike: same error (type or status), route and message."""

    count: float = 0.0
    request_ids: list[str] = field(default_factory=list)
    last: str = ""


@dataclass
class Collected:
    """Everything the report shows, gathered in one pass over the access events."""

    minutes: dict[int, Group] = field(default_factory=dict)
    routes: dict[str, Group] = field(default_factory=dict)
    statuses: dict[int, float] = field(default_factory=dict)
    errors: dict[tuple[str, str, str], ErrorGroup] = field(default_factory=dict)
    slowest: list[tuple[float, str, str, str]] = field(default_factory=list)
    first: float | None = None
    last: float | None = None
    requests: int = 0


def collect(chunks: Iterable[bytes], stats: ReadStats) -> Collected:
    """One pass over the access events of the input."""
    data = Collected()
    for event in access_events(chunks, stats):
        _add(data, event)
    stats.events += data.requests
    return data


def _add(data: Collected, event: dict[str, Any]) -> None:
    data.requests += 1
    when = epoch(event.get("timestamp"))
    duration = event.get("duration_ms")
    duration = float(duration) if isinstance(duration, int | float) else 0.0
    rate = event.get("sample_rate")
    weight = 1.0 / rate if isinstance(rate, int | float) and 0 < rate < 1 else 1.0
    status = event.get("status_code")
    status = status if isinstance(status, int) else 0
    route_key = f"{event.get('method') or '-'} {event.get('route') or NO_ROUTE}"
    request_id = str(event.get("request_id") or "")
    targets = [data.routes.setdefault(route_key, Group())]
    if when is not None:
        data.first = when if data.first is None else min(data.first, when)
        data.last = when if data.last is None else max(data.last, when)
        targets.append(data.minutes.setdefault(int(when // 60), Group()))
    for group in targets:
        if weight == 1.0:
            group.durations.append(duration)
        else:
            group.sampled.setdefault(weight, []).append(duration)
        if status >= 500:
            group.count_5xx += weight
        elif status >= 400:
            group.count_4xx += weight
        if event.get("slow") is True:
            group.slow += weight
    data.statuses[status] = data.statuses.get(status, 0.0) + weight
    if event.get("event") == "request_failed" or status >= 500:
        error = str(event.get("error_type") or f"HTTP {status}")
        message = str(event.get("error_message") or "")[:300]
        found = data.errors.setdefault((error, route_key, message), ErrorGroup())
        found.count += weight
        found.last = max(found.last, str(event.get("timestamp") or ""))
        if request_id and len(found.request_ids) < _MAX_SAMPLE_IDS:
            found.request_ids.append(request_id)
    item = (duration, request_id, f"{event.get('method')} {event.get('path')}", str(status))
    if len(data.slowest) < 10:
        heapq.heappush(data.slowest, item)
    elif duration > data.slowest[0][0]:
        heapq.heapreplace(data.slowest, item)


@dataclass
class Bucket:
    """One point on the time axis."""

    start: float
    ok: float
    c4: float
    c5: float
    p50: float
    p95: float
    p99: float


def buckets(data: Collected) -> tuple[int, list[Bucket]]:
    """Per-minute groups merged into wider buckets when the log covers a long time."""
    if not data.minutes:
        return 1, []
    low, high = min(data.minutes), max(data.minutes)
    width = next(
        (m for m in _BUCKET_MINUTES if (high - low) // m + 1 <= MAX_BUCKETS),
        _BUCKET_MINUTES[-1],
    )
    merged: dict[int, Group] = {}
    for minute, group in data.minutes.items():
        slot = low + (minute - low) // width * width
        target = merged.get(slot)
        if target is None:
            merged[slot] = target = Group()
        target.merge(group)
    out = []
    for slot in range(low, high + 1, width):
        group = merged.get(slot, Group())
        count = len(group.durations) + sum(w * len(v) for w, v in group.sampled.items())
        p50, p95, p99 = percentiles(group, (50, 95, 99))
        out.append(
            Bucket(
                start=slot * 60.0,
                ok=(count - group.count_4xx - group.count_5xx) / width,
                c4=group.count_4xx / width,
                c5=group.count_5xx / width,
                p50=p50,
                p95=p95,
                p99=p99,
            )
        )
    return width, out


# SVG ----------------------------------------------------------------------------------------

_W, _H = 920, 240
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 64, 16, 14, 34
_COLOURS = {"ok": "#3b9c5a", "4xx": "#e0a526", "5xx": "#d64541"}
_LINE_COLOURS = {"p50": "#3a78c2", "p95": "#e0a526", "p99": "#d64541"}


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step) + 1)]


def _fmt_num(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _fmt_ms(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.3g} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms"


def _time_labels(items: Sequence[Bucket], x_of: Any) -> list[str]:
    if not items:
        return []
    span = items[-1].start - items[0].start
    step = max(len(items) // 6, 1)
    fmt = "%H:%M" if span < 86400 else "%m-%d %H:%M"
    out = []
    for i in range(0, len(items), step):
        label = dt.datetime.fromtimestamp(items[i].start, dt.UTC).strftime(fmt)
        out.append(f'<text class="xl" x="{x_of(i):.1f}" y="{_H - _PAD_B + 16}">{label}</text>')
    return out


def _frame(y_ticks: list[tuple[float, str]], body: list[str], title: str, kind: str) -> str:
    grid = []
    for y, label in y_ticks:
        grid.append(
            f'<line class="grid" x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="yl" x="{_PAD_L - 6}" y="{y + 4:.1f}">{label}</text>'
        )
    return (
        f'<svg class="chart" data-kind="{kind}" viewBox="0 0 {_W} {_H}" role="img"'
        f' aria-label="{html.escape(title)}">' + "".join(grid) + "".join(body) + "</svg>"
    )


def requests_chart(items: Sequence[Bucket], width: int) -> str:
    """Stacked bars: requests per minute by status class."""
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    top = max((b.ok + b.c4 + b.c5 for b in items), default=0.0)
    ticks = _nice_ticks(top)
    scale = plot_h / ticks[-1]
    bar = plot_w / max(len(items), 1)

    def x_of(i: int) -> float:
        return _PAD_L + i * bar + bar / 2

    body = []
    for i, b in enumerate(items):
        x = _PAD_L + i * bar + (0.1 * bar if bar > 3 else 0)
        w = bar * 0.8 if bar > 3 else bar
        base = float(_H - _PAD_B)
        when = format_time(b.start)
        for name, value in (("ok", b.ok), ("4xx", b.c4), ("5xx", b.c5)):
            if value <= 0:
                continue
            h = value * scale
            base -= h
            body.append(
                f'<rect class="mark" x="{x:.2f}" y="{base:.2f}" width="{w:.2f}" height="{h:.2f}"'
                f' fill="{_COLOURS[name]}"><title>{when} UTC: {value:,.1f} {name} req/min'
                "</title></rect>"
            )
    body += _time_labels(items, x_of)
    y_ticks = [(_H - _PAD_B - t * scale, _fmt_num(t)) for t in ticks]
    per = "minute" if width == 1 else f"minute, averaged over {width} min"
    return _frame(y_ticks, body, f"Requests per {per}", "requests")


def latency_chart(items: Sequence[Bucket]) -> str:
    """Lines: p50, p95 and p99 of ``duration_ms`` per bucket (log scale when they spread)."""
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    live = [b for b in items if b.p99 > 0]
    high = max((b.p99 for b in live), default=1.0)
    low = min((b.p50 for b in live if b.p50 > 0), default=high)
    log = high / max(low, 1e-3) > 30
    if log:
        lo_exp, hi_exp = math.floor(math.log10(max(low, 1e-3))), math.ceil(math.log10(high))
        hi_exp = max(hi_exp, lo_exp + 1)

        def y_of(v: float) -> float:
            v = max(v, 10.0**lo_exp)
            return _H - _PAD_B - (math.log10(v) - lo_exp) / (hi_exp - lo_exp) * plot_h

        y_ticks = [(y_of(10.0**e), _fmt_ms(10.0**e)) for e in range(lo_exp, hi_exp + 1)]
    else:
        ticks = _nice_ticks(high)

        def y_of(v: float) -> float:
            return _H - _PAD_B - v / ticks[-1] * plot_h

        y_ticks = [(y_of(t), _fmt_ms(t)) for t in ticks]
    step = plot_w / max(len(items), 1)

    def x_of(i: int) -> float:
        return _PAD_L + i * step + step / 2

    body = []
    for name in ("p50", "p95", "p99"):
        points = [
            f"{x_of(i):.1f},{y_of(getattr(b, name)):.1f}"
            for i, b in enumerate(items)
            if getattr(b, name) > 0
        ]
        if len(points) == 1:
            points.append(points[0])
        if points:
            body.append(
                f'<polyline class="mark" fill="none" stroke="{_LINE_COLOURS[name]}"'
                f' stroke-width="2" points="{" ".join(points)}"><title>{name}</title></polyline>'
            )
    body += _time_labels(items, x_of)
    scale_note = " (log scale)" if log else ""
    return _frame(y_ticks, body, "Latency percentiles" + scale_note, "latency")


def status_chart(statuses: dict[int, float]) -> str:
    """Horizontal bars: requests by status code."""
    items = sorted(statuses.items())
    total = sum(statuses.values()) or 1.0
    row_h = 26
    height = max(len(items), 1) * row_h + 10
    longest = max(statuses.values(), default=1.0)
    plot_w = _W - 170
    body = []
    for i, (code, count) in enumerate(items):
        y = 5 + i * row_h
        w = max(count / longest * (plot_w - 120), 1.0)
        colour = _COLOURS["5xx" if code >= 500 else "4xx" if code >= 400 else "ok"]
        body.append(
            f'<text class="yl" x="60" y="{y + 17}">{code}</text>'
            f'<rect class="mark" x="70" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}"'
            f' fill="{colour}"><title>{code}: {count:,.0f}</title></rect>'
            f'<text class="vl" x="{76 + w:.1f}" y="{y + 17}">{count:,.0f}'
            f" ({count / total:.1%})</text>"
        )
    return (
        f'<svg class="chart" data-kind="status" viewBox="0 0 {_W} {height}" role="img"'
        ' aria-label="Status codes">' + "".join(body) + "</svg>"
    )


# HTML ---------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; --fg: #1f2328; --muted: #656d76; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 980px; padding: 24px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card b { display: block; font-size: 20px; } .card span { color: var(--muted); font-size: 12px; }
svg.chart { width: 100%; height: auto; display: block; border: 1px solid var(--line);
            border-radius: 8px; background: #fcfcfd; }
svg .grid { stroke: #e6e9ed; stroke-width: 1; }
svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
svg .yl { text-anchor: end; } svg .xl { text-anchor: middle; } svg .vl { fill: var(--fg); }
.legend span { display: inline-block; margin-right: 14px; color: var(--muted); font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
            margin-right: 4px; vertical-align: -1px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; } td.n, th.n { text-align: right;
     font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.bar { display: inline-block; height: 8px; background: #e0a526; border-radius: 2px; }
.empty { color: var(--muted); font-style: italic; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
"""

# Records that the charts were laid out (the tests read it back from headless Chromium).
_SCRIPT = """
(function () {
  var drawn = 0, marks = 0;
  document.querySelectorAll("svg.chart").forEach(function (svg) {
    var box = svg.getBoundingClientRect(), n = 0;
    svg.querySelectorAll(".mark").forEach(function (m) {
      var b = m.getBBox(); if (b.width > 0 || b.height > 0) { n++; }
    });
    if (box.width > 0 && box.height > 0 && n > 0) { drawn++; }
    marks += n;
  });
  document.documentElement.setAttribute("data-charts-drawn", String(drawn));
  document.documentElement.setAttribute("data-chart-marks", String(marks));
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{c}"></i>{_e(n)}</span>' for n, c in items)
        + "</div>"
    )


def _routes_table(items: Sequence[Row]) -> str:
    if not items:
        return '<p class="empty">No requests.</p>'
    longest = max(r.p95 for r in items) or 1.0
    head = (
        "<tr><th>route</th><th class=n>count</th><th class=n>p50</th><th class=n>p95</th>"
        "<th class=n>p99</th><th class=n>max</th><th class=n>5xx</th><th class=n>slow</th>"
        "<th class=n>total</th><th></th></tr>"
    )
    body = "".join(
        f"<tr><td><code>{_e(r.key)}</code></td><td class=n>{r.count:,.0f}</td>"
        f"<td class=n>{_fmt_ms(r.p50)}</td><td class=n>{_fmt_ms(r.p95)}</td>"
        f"<td class=n>{_fmt_ms(r.p99)}</td><td class=n>{_fmt_ms(r.max)}</td>"
        f"<td class=n>{r.rate_5xx:.1%}</td><td class=n>{r.slow:,.0f}</td>"
        f"<td class=n>{r.total_ms / 1000:,.1f} s</td>"
        f'<td><span class="bar" style="width:{r.p95 / longest * 120:.0f}px"></span></td></tr>'
        for r in items
    )
    return f"<table>{head}{body}</table>"


def _errors_table(data: Collected) -> str:
    top = sorted(data.errors.items(), key=lambda kv: (-kv[1].count, kv[0]))[:15]
    if not top:
        return '<p class="empty">No failed requests and no 5xx responses.</p>'
    head = (
        "<tr><th class=n>count</th><th>error</th><th>route</th><th>message</th>"
        "<th>request IDs (<code>reqlog trace ID</code>)</th></tr>"
    )
    body = "".join(
        f"<tr><td class=n>{group.count:,.0f}</td><td><code>{_e(error)}</code></td>"
        f"<td><code>{_e(route)}</code></td><td>{_e(message)}</td>"
        f"<td>{'<br>'.join(f'<code>{_e(rid)}</code>' for rid in group.request_ids)}</td></tr>"
        for (error, route, message), group in top
    )
    return f"<table>{head}{body}</table>"


def _slowest_table(data: Collected) -> str:
    items = sorted(data.slowest, reverse=True)
    if not items:
        return '<p class="empty">No requests.</p>'
    head = (
        "<tr><th class=n>duration</th><th>request</th><th class=n>status</th>"
        "<th>request ID</th></tr>"
    )
    body = "".join(
        f"<tr><td class=n>{_fmt_ms(d)}</td><td><code>{_e(what)}</code></td>"
        f"<td class=n>{_e(status)}</td><td><code>{_e(rid)}</code></td></tr>"
        for d, rid, what, status in items
    )
    return f"<table>{head}{body}</table>"


def render(data: Collected, stats: ReadStats, sources: Sequence[str], title: str) -> str:
    """The whole HTML page."""
    width, items = buckets(data)
    route_rows = sorted(rows(_as_aggregate(data)), key=lambda r: (-r.p95, r.key))[:20]
    everything = Group()
    for group in data.routes.values():
        everything.merge(group)
    count = sum(data.statuses.values())
    p50, p95, p99 = percentiles(everything, (50, 95, 99))
    span = (data.last - data.first) if data.first is not None and data.last is not None else 0.0
    when = (
        f"{format_time(data.first)} to {format_time(data.last)} UTC"
        if data.first is not None and data.last is not None
        else "no timestamps"
    )
    cards = [
        (f"{count:,.0f}", "requests" + (" (scaled for sampling)" if everything.sampled else "")),
        (f"{count / max(span, 1.0):,.1f}", "requests/s"),
        (f"{everything.count_5xx / count:.2%}" if count else "-", "5xx rate"),
        (f"{everything.count_4xx / count:.2%}" if count else "-", "4xx rate"),
        (_fmt_ms(p50), "p50"),
        (_fmt_ms(p95), "p95"),
        (_fmt_ms(p99), "p99"),
        (f"{everything.slow:,.0f}", "slow requests"),
    ]
    skipped = stats.malformed + stats.oversized
    per = "per minute" if width == 1 else f"per minute (buckets of {width} min)"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(when)} &middot; {data.requests:,} access events from'
        f" {_e(', '.join(sources))}"
        + (f" &middot; {skipped:,} malformed lines skipped" if skipped else "")
        + "</p>",
        '<div class="cards">'
        + "".join(f"<div class=card><b>{_e(v)}</b><span>{_e(k)}</span></div>" for v, k in cards)
        + "</div>",
        f"<h2>Requests {per}</h2>",
        _legend([("2xx/3xx", _COLOURS["ok"]), ("4xx", _COLOURS["4xx"]), ("5xx", _COLOURS["5xx"])]),
        requests_chart(items, width),
        "<h2>Latency percentiles over time</h2>",
        _legend(list(_LINE_COLOURS.items())),
        latency_chart(items),
        "<h2>Status codes</h2>",
        status_chart(data.statuses),
        "<h2>Slowest routes (by p95)</h2>",
        _routes_table(route_rows),
        "<h2>Top errors</h2>",
        _errors_table(data),
        "<h2>Slowest requests</h2>",
        _slowest_table(data),
        "<footer>Generated by <code>reqlog report</code>. Durations are the access events'"
        " <code>duration_ms</code>; events kept by sampling count 1/<code>sample_rate</code>"
        " times.</footer>",
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _as_aggregate(data: Collected) -> Aggregate:
    return Aggregate(by="route", groups=data.routes, first=data.first, last=data.last)


def run(
    names: Sequence[str],
    *,
    output: str,
    title: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """The ``report`` command."""
    stats = ReadStats()
    data = collect(iter_chunks(names, stats), stats)
    for message in stats.summary():
        print(f"reqlog: {message}", file=err)
    if data.requests == 0 and (stats.problems or stats.lines):
        print(f"reqlog: {no_requests_message(stats)}", file=err)
        return 1
    sources = [("<stdin>" if n == STDIN else n) for n in names] or ["<stdin>"]
    page = render(data, stats, sources, title or "reqlog report")
    if output == STDIN:
        out.write(page)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as exc:
        print(f"reqlog: cannot write {output}: {exc.strerror or exc}", file=err)
        return 1
    print(f"reqlog: wrote {output} ({data.requests:,} access events)", file=err)
    return 0
