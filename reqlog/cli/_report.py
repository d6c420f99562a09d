"""``reqlog report``: one self-contained HTML page with charts drawn as inline SVG.

Nothing is fetched when the page is opened: no scripts, fonts or styles from elsewhere. The
charts are SVG written here, so they render anywhere, print well and need no JavaScript; the
one small inline script only records that the charts laid out (``data-charts-drawn`` on the
root element), which the tests read back from a headless browser.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import _errors, _stats
from ._engine import FAILED_EVENTS, Logs, Window
from ._events import format_time
from ._safe import safe

# Bucket widths in minutes; the smallest giving at most MAX_BUCKETS buckets is used.
_BUCKET_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)
MAX_BUCKETS = 240
_MAX_SLOWEST = 10
# The columns the report's queries read (stats, buckets, statuses, slowest, errors).
_KEPT = (
    "event", "method", "route", "path", "status_code", "duration_ms", "slow", "request_id",
    "error_type", "error_message", "exception", "is_access", "junk", "is_failed",
)  # fmt: skip


@dataclass
class Bucket:
    """One point on the time axis."""

    start: float
    count: float
    ok: float
    c4: float
    c5: float
    p50: float
    p95: float
    p99: float


@dataclass
class Collected:
    """Everything the report shows."""

    stats: _stats.Result
    width: int = 1
    buckets: list[Bucket] = field(default_factory=list)
    statuses: dict[int, float] = field(default_factory=dict)
    slowest: list[tuple[float, str, str, str]] = field(default_factory=list)
    errors: list[_errors.ErrorGroup] = field(default_factory=list)


def bucket_width(first: float, last: float) -> int:
    """Minutes per bucket: the smallest width giving at most :data:`MAX_BUCKETS` buckets."""
    low, high = int(first // 60), int(last // 60)
    return next(
        (m for m in _BUCKET_MINUTES if (high - low) // m + 1 <= MAX_BUCKETS),
        _BUCKET_MINUTES[-1],
    )


def _access(logs: Logs) -> str:
    failed = ", ".join(f"'{e}'" for e in FAILED_EVENTS)
    return (
        f"SELECT {logs.ts_sql} AS ts, coalesce(duration_ms, 0) AS d, {logs.weight_sql} AS w,"
        f" status_code AS s, event IN ({failed}) AS failed, request_id, method, path, event"
        f" FROM lines WHERE {logs.access_sql}"
    )


def buckets_sql(logs: Logs, low: int, width: int) -> str:
    """Per bucket of *width* minutes from minute *low*: requests by class and percentiles."""
    pcts = ", ".join(f"p.p{p}" for p in _stats.PERCENTILES)
    durations = "SELECT slot AS key, d, w FROM a"
    return f"""
    WITH a AS MATERIALIZED (
        SELECT {low} + (CAST(floor(epoch(ts) / 60) AS BIGINT) - {low}) // {width} * {width}
               AS slot, d, w, s, failed
        FROM ({_access(logs)}) WHERE ts IS NOT NULL
    ), counts AS (
        SELECT slot, sum(w) AS count,
               coalesce(sum(w) FILTER (WHERE s >= 500 OR failed), 0) AS c5,
               coalesce(sum(w) FILTER (WHERE s BETWEEN 400 AND 499 AND NOT failed), 0) AS c4
        FROM a GROUP BY slot
    )
    SELECT c.*, {pcts} FROM counts c
    JOIN ({_stats.percentiles_sql(durations)}) p ON p.key = c.slot ORDER BY slot
    """


def collect(logs: Logs) -> Collected:
    """Every figure of the report, from one read of the input (kept in memory)."""
    logs.materialize(_KEPT)
    data = Collected(stats=_stats.compute(logs, "route"))
    first, last = data.stats.first, data.stats.last
    if first is not None and last is not None:
        data.width = width = bucket_width(first, last)
        low = int(first // 60)
        found = {int(r["slot"]): r for r in logs.rows(buckets_sql(logs, low, width))}
        for slot in range(low, int(last // 60) + 1, width):
            r = found.get(slot)
            if r is None:
                data.buckets.append(Bucket(slot * 60.0, 0, 0, 0, 0, 0, 0, 0))
                continue
            count, c4, c5 = float(r["count"]), float(r["c4"]), float(r["c5"])
            data.buckets.append(
                Bucket(
                    start=slot * 60.0,
                    count=count,
                    ok=(count - c4 - c5) / width,
                    c4=c4 / width,
                    c5=c5 / width,
                    p50=float(r["p50"]),
                    p95=float(r["p95"]),
                    p99=float(r["p99"]),
                )
            )
    for status, count in logs.query(
        f"SELECT coalesce(s, 0), sum(w) FROM ({_access(logs)}) GROUP BY 1 ORDER BY 1"
    ):
        data.statuses[int(status)] = float(count)
    slowest = f"SELECT d, s, request_id, method, path, event FROM ({_access(logs)})"
    order = "d DESC, ts NULLS LAST, request_id NULLS LAST"  # ties: the earliest first
    for r in logs.rows(f"{slowest} ORDER BY {order} LIMIT {_MAX_SLOWEST}"):
        method = r["method"] or ("WS" if str(r["event"]).startswith("websocket") else "-")
        what = f"{method} {r['path']}"
        data.slowest.append((float(r["d"]), str(r["request_id"] or ""), what, str(r["s"])))
    data.errors = _errors.compute(logs)
    return data


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
    """Lines and dots: p50, p95 and p99 of ``duration_ms`` per bucket (log scale when spread).

    Every bucket with requests gets a dot per percentile, so a log that fits in one bucket
    (one minute) still draws visible marks: a line through one point has no length.
    """
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    live = [b for b in items if b.count > 0]
    high = max((b.p99 for b in live), default=1.0) or 1.0
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
        colour = _LINE_COLOURS[name]
        points = [(x_of(i), y_of(getattr(b, name)), b) for i, b in enumerate(items) if b.count > 0]
        if len(points) > 1:
            drawn = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            body.append(
                f'<polyline class="line" fill="none" stroke="{colour}" stroke-width="2"'
                f' points="{drawn}"><title>{name}</title></polyline>'
            )
        body.extend(
            f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
            f"<title>{format_time(b.start)} UTC: {name} {_fmt_ms(getattr(b, name))}</title>"
            "</circle>"
            for x, y, b in points
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
    svg.setAttribute("data-visible-marks", String(n));
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


def _routes_table(items: Sequence[_stats.Row]) -> str:
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
    """The same groups as ``reqlog errors``: fingerprint, counts, times, routes, examples."""
    top = data.errors[:15]
    if not top:
        return '<p class="empty">No failed requests, 5xx responses or logged exceptions.</p>'
    head = (
        "<tr><th class=n>count</th><th>error</th><th>where</th><th>first / last seen</th>"
        "<th>routes</th><th>message</th><th>request IDs (<code>reqlog trace ID</code>)</th></tr>"
    )
    rows = []
    for g in top:
        seen = (
            f"{format_time(g.first)}<br>{format_time(g.last)}"
            if g.first is not None and g.last is not None
            else "-"
        )
        routes = "<br>".join(f"<code>{_e(r)}</code> ({n:,.0f})" for r, n in g.top_routes())
        ids = "<br>".join(f"<code>{_e(rid)}</code>" for rid in g.request_ids)
        rows.append(
            f'<tr class="error-group"><td class=n>{g.count:,.0f}</td>'
            f"<td><code>{_e(g.error)}</code></td><td><code>{_e(g.where)}</code></td>"
            f"<td class=n>{seen}</td><td>{routes}</td><td>{_e(g.message[:300])}</td>"
            f"<td>{ids}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


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


def render(data: Collected, sources: Sequence[str], title: str) -> str:
    """The whole HTML page; every value from the logs goes through ``html.escape``."""
    result = data.stats
    total = result.total
    route_rows = sorted(result.rows, key=lambda r: (-r.p95, r.key))[:20]
    count = total.count if total else 0.0
    when = (
        f"{format_time(result.first)} to {format_time(result.last)} UTC"
        if result.first is not None and result.last is not None
        else "no timestamps"
    )
    sampled = total is not None and total.count != total.events
    cards = [
        (f"{count:,.0f}", "requests" + (" (scaled for sampling)" if sampled else "")),
        (f"{count / result.span_s:,.1f}", "requests/s"),
        (f"{total.rate_5xx:.2%}" if total else "-", "5xx rate"),
        (f"{total.rate_4xx:.2%}" if total else "-", "4xx rate"),
        (_fmt_ms(total.p50) if total else "-", "p50"),
        (_fmt_ms(total.p95) if total else "-", "p95"),
        (_fmt_ms(total.p99) if total else "-", "p99"),
        (f"{total.slow:,.0f}" if total else "0", "slow requests"),
    ]
    width = data.width
    per = "per minute" if width == 1 else f"per minute (buckets of {width} min)"
    skipped = result.skipped
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(when)} &middot; {result.access_events:,} access events from'
        f" {_e(', '.join(sources))}"
        + (f" &middot; {skipped:,} lines that are not JSON events skipped" if skipped else "")
        + "</p>",
        '<div class="cards">'
        + "".join(f"<div class=card><b>{_e(v)}</b><span>{_e(k)}</span></div>" for v, k in cards)
        + "</div>",
        f"<h2>Requests {per}</h2>",
        _legend([("2xx/3xx", _COLOURS["ok"]), ("4xx", _COLOURS["4xx"]), ("5xx", _COLOURS["5xx"])]),
        requests_chart(data.buckets, width),
        "<h2>Latency percentiles over time</h2>",
        _legend(list(_LINE_COLOURS.items())),
        latency_chart(data.buckets),
        "<h2>Status codes</h2>",
        status_chart(data.statuses),
        "<h2>Slowest routes (by p95)</h2>",
        _routes_table(route_rows),
        "<h2>Errors (as <code>reqlog errors</code> groups them)</h2>",
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


def run(
    names: Sequence[str],
    *,
    output: str,
    title: str | None,
    window: Window,
    threads: int | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """The ``report`` command."""
    with Logs(names, window, threads=threads, fast=True) as logs:
        for problem in logs.problems:
            print(f"reqlog: {safe(problem)}", file=err)
        data = collect(logs)
    if data.stats.skipped:
        print(f"reqlog: {_stats.skipped_message(data.stats.skipped)}", file=err)
    if data.stats.total is None:
        print(f"reqlog: {_stats.no_requests_message(data.stats.skipped)}", file=err)
        return 1
    sources = [("<stdin>" if n == "-" else n) for n in names] or ["<stdin>"]
    page = render(data, sources, title or "reqlog report")
    if output == "-":
        out.write(page)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as exc:
        print(f"reqlog: cannot write {safe(output)}: {safe(exc.strerror or exc)}", file=err)
        return 1
    events = data.stats.access_events
    print(f"reqlog: wrote {safe(output)} ({events:,} access events)", file=err)
    return 0
