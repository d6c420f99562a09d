"""``reqlog diff``: per route, what changed between two logs or two time windows of one log.

The question after every deploy. For each route: traffic, 5xx rate (failures included) and
p50/p95/p99, before and after, with a 95% confidence interval for each figure. A change is
called real only when the two intervals do not overlap (and, for latency, when it is at least
:data:`MIN_LATENCY_CHANGE`); otherwise it is within noise. The rule is printed with the table.

- Percentiles: the distribution-free interval of a quantile. For p and n events, the ranks
  ``p -/+ 1.96 * sqrt(p * (1 - p) / n)`` (as shares of the requests) bound it; each bound is
  then a weighted nearest-rank percentile like the figure itself.
- Rates: the Wilson score interval of the share, with n the events read.
- Traffic: requests per second with a Poisson interval, ``n -/+ 1.96 * sqrt(n)`` events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from ._engine import FAILED_EVENTS, Logs, Window, epoch_seconds
from ._events import format_time, parse_duration
from ._safe import escape_json, safe
from ._stats import PERCENTILES, group_key_sql, percentile_sql

Z = 1.96
MIN_LATENCY_CHANGE = 0.10
RULE = (
    "a change is shown as worse/better when the 95% confidence intervals before and after do"
    " not overlap (percentiles: distribution-free quantile intervals, and at least"
    f" {MIN_LATENCY_CHANGE:.0%} apart; 5xx rate: Wilson intervals; traffic: Poisson intervals);"
    " otherwise it is within noise (~)"
)


@dataclass(frozen=True)
class Side:
    """One side of the comparison: files and a time window."""

    label: str
    names: tuple[str, ...]
    window: Window


def sides(
    logs: Sequence[str], *, at: float | None, window: str | None, bounds: Window
) -> tuple[Side, Side]:
    """BEFORE and AFTER from the command line (two logs, or one log and ``--at``)."""
    if at is None:
        if len(logs) != 2:
            msg = "diff needs two logs (BEFORE AFTER), or one log and --at TIME"
            raise ValueError(msg)
        if window is not None:
            msg = "--window goes with --at"
            raise ValueError(msg)
        return (
            Side(f"before: {logs[0]}", (logs[0],), bounds),
            Side(f"after: {logs[1]}", (logs[1],), bounds),
        )
    span = parse_duration(window) if window else None
    since = at - span if span is not None else bounds.since
    until = at + span if span is not None else bounds.until
    if bounds.since is not None:
        since = max(since, bounds.since) if since is not None else bounds.since
    if bounds.until is not None:
        until = min(until, bounds.until) if until is not None else bounds.until
    names = tuple(logs)
    return (
        Side(f"before {format_time(at)} UTC", names, Window(since, at)),
        Side(f"from {format_time(at)} UTC", names, Window(at, until)),
    )


def _shares(p: float, n: str) -> tuple[str, str]:
    """SQL for the lower and upper bounds (in percent) of the interval of percentile *p*."""
    q = p / 100
    half = f"{Z} * sqrt({q * (1 - q)!r} / {n})"
    return f"greatest(100 * ({q!r} - {half}), 0)", f"least(100 * ({q!r} + {half}), 100)"


def side_sql(logs: Logs) -> str:
    """Per route: requests, events, 5xx, time span, and each percentile with its interval."""
    failed = ", ".join(f"'{e}'" for e in FAILED_EVENTS)
    pcts = []
    for p in PERCENTILES:
        low, high = _shares(p, "n")
        pcts += [
            f"{percentile_sql(p)} AS p{p}",
            f"{percentile_sql(low)} AS p{p}_low",
            f"{percentile_sql(high)} AS p{p}_high",
        ]
    return f"""
    WITH base AS MATERIALIZED (
        SELECT {group_key_sql("route")} AS key, coalesce(duration_ms, 0) AS d,
               {logs.weight_sql} AS w, status_code AS s, event IN ({failed}) AS failed,
               {logs.ts_sql} AS ts
        FROM lines WHERE {logs.access_sql}
    ), totals AS (
        SELECT key, count(*) AS n, sum(w) AS count,
               coalesce(sum(w) FILTER (WHERE s >= 500 OR failed), 0) AS c5
        FROM base GROUP BY key
    ), ranked AS (
        SELECT h.key, h.d, t.n,
               sum(h.w) OVER (PARTITION BY h.key ORDER BY h.d) AS cum,
               sum(h.w) OVER (PARTITION BY h.key) AS tot
        FROM (SELECT key, d, sum(w) AS w FROM base GROUP BY key, d) h JOIN totals t USING (key)
    )
    SELECT t.key, t.n, t.count, t.c5, p.* EXCLUDE (key),
           (SELECT epoch(min(ts)) FROM base) AS first, (SELECT epoch(max(ts)) FROM base) AS last
    FROM totals t JOIN (SELECT key, {", ".join(pcts)} FROM ranked GROUP BY key) p USING (key)
    """


@dataclass
class Figures:
    """One route on one side."""

    n: int
    count: float
    c5: float
    span_s: float
    percentiles: dict[int, tuple[float, float, float]]  # p -> (value, low, high)

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.count / self.span_s

    def rps_interval(self) -> tuple[float, float]:
        """Poisson interval of the request rate (on the events read, scaled by weight)."""
        scale = self.count / self.n / self.span_s
        half = Z * math.sqrt(self.n)
        return max(self.n - half, 0.0) * scale, (self.n + half) * scale

    @property
    def rate_5xx(self) -> float:
        """Share of requests that failed or got a 5xx."""
        return self.c5 / self.count if self.count else 0.0

    def rate_interval(self) -> tuple[float, float]:
        """Wilson score interval of the 5xx rate."""
        return wilson(self.rate_5xx, self.n)


def wilson(p: float, n: int) -> tuple[float, float]:
    """The Wilson score interval (95%) of a share *p* observed over *n* trials."""
    if n == 0:
        return 0.0, 1.0
    z2 = Z * Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def read_side(side: Side, threads: int | None, err: TextIO) -> dict[str, Figures]:
    """Every route's figures on one side."""
    with Logs(side.names, side.window, threads=threads) as logs:
        for problem in logs.problems:
            print(f"reqlog: {safe(problem)}", file=err)
        rows = list(logs.rows(side_sql(logs)))
    if not rows:
        return {}
    first, last = epoch_seconds(rows[0]["first"]), epoch_seconds(rows[0]["last"])
    span = max(last - first, 1.0) if first is not None and last is not None else 1.0
    return {
        str(r["key"]): Figures(
            n=int(r["n"]),
            count=float(r["count"]),
            c5=float(r["c5"]),
            span_s=span,
            percentiles={
                p: (float(r[f"p{p}"]), float(r[f"p{p}_low"]), float(r[f"p{p}_high"]))
                for p in PERCENTILES
            },
        )
        for r in rows
    }


def verdict(
    before: tuple[float, float],
    after: tuple[float, float],
    values: tuple[float, float],
    min_change: float = 0.0,
) -> int:
    """+1 when *after* is surely higher, -1 when surely lower, 0 within noise."""
    old, new = values
    big = abs(new - old) >= min_change * abs(old) if old else new != old
    if after[0] > before[1] and big:
        return 1
    if after[1] < before[0] and big:
        return -1
    return 0


@dataclass
class Change:
    """One route's comparison."""

    key: str
    before: Figures | None
    after: Figures | None
    traffic: int = 0
    rate_5xx: int = 0
    latency: dict[int, int] | None = None

    @property
    def worse(self) -> bool:
        """Latency up or errors up, beyond noise."""
        return self.rate_5xx > 0 or any(v > 0 for v in (self.latency or {}).values())

    @property
    def better(self) -> bool:
        """Latency or errors down beyond noise, and nothing worse."""
        return not self.worse and (
            self.rate_5xx < 0 or any(v < 0 for v in (self.latency or {}).values())
        )

    @property
    def severity(self) -> float:
        """How much worse: the largest relative increase among the worse figures."""
        if self.before is None or self.after is None:
            return 0.0
        worst = 0.0
        if self.rate_5xx > 0:
            worst = max(worst, (self.after.rate_5xx - self.before.rate_5xx) * 10)
        for p, v in (self.latency or {}).items():
            old, new = self.before.percentiles[p][0], self.after.percentiles[p][0]
            if v > 0:
                worst = max(worst, (new - old) / old if old else math.inf)
        return worst


def compare(before: dict[str, Figures], after: dict[str, Figures]) -> list[Change]:
    """Every route of either side, the ones that got worse first (most first)."""
    out = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        change = Change(key, b, a)
        if b is not None and a is not None:
            change.traffic = verdict(b.rps_interval(), a.rps_interval(), (b.rps, a.rps))
            change.rate_5xx = verdict(
                b.rate_interval(), a.rate_interval(), (b.rate_5xx, a.rate_5xx)
            )
            change.latency = {
                p: verdict(
                    b.percentiles[p][1:],
                    a.percentiles[p][1:],
                    (b.percentiles[p][0], a.percentiles[p][0]),
                    MIN_LATENCY_CHANGE,
                )
                for p in PERCENTILES
            }
        out.append(change)

    def order(c: Change) -> tuple[int, float, str]:
        if c.worse:
            return (0, -c.severity, c.key)
        if c.before is None or c.after is None:
            return (1, 0.0, c.key)
        if c.better:
            return (2, 0.0, c.key)
        return (3, 0.0, c.key)

    return sorted(out, key=order)


def _mark(v: int) -> str:
    return {1: "▲", -1: "▼", 0: "~"}[v]


def _ms(v: float) -> str:
    return f"{v / 1000:.1f}s" if v >= 10_000 else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def render(changes: Sequence[Change], show_all: bool) -> str:
    """The table for the terminal (route names escaped)."""
    header = ["route", "req/s", "5xx", *[f"p{p} ms" for p in PERCENTILES], "verdict"]
    body = []
    hidden = 0
    for c in changes:
        b, a = c.before, c.after
        if b is None or a is None:
            only = a or b
            assert only is not None
            state = "new" if b is None else "gone"
            cells = [
                safe(c.key),
                f"{only.rps:.2f} ({state})",
                f"{only.rate_5xx:.1%}",
                *[_ms(only.percentiles[p][0]) for p in PERCENTILES],
                state,
            ]
            body.append(cells)
            continue
        if not (c.worse or c.better or c.traffic or show_all):
            hidden += 1
            continue
        latency = c.latency or {}
        cells = [
            safe(c.key),
            f"{b.rps:.2f} -> {a.rps:.2f} {_mark(c.traffic)}",
            f"{b.rate_5xx:.1%} -> {a.rate_5xx:.1%} {_mark(c.rate_5xx)}",
            *[
                f"{_ms(b.percentiles[p][0])} -> {_ms(a.percentiles[p][0])} {_mark(latency[p])}"
                for p in PERCENTILES
            ],
            "worse"
            if c.worse
            else "better"
            if c.better
            else {1: "more traffic", -1: "less traffic"}.get(c.traffic, "same"),
        ]
        body.append(cells)
    if not body:
        return f"no route changed beyond noise ({hidden} route(s) compared; --all shows them)"
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    ]
    lines.insert(1, "-" * len(lines[0]))
    if hidden:
        lines.append(f"{hidden} route(s) within noise not shown (--all shows them)")
    return "\n".join(lines)


def _figures_dict(f: Figures | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {
        "requests": round(f.count, 1),
        "events": f.n,
        "requests_per_s": round(f.rps, 4),
        "rate_5xx": round(f.rate_5xx, 5),
        **{
            f"p{p}_ms": {"value": v, "low": lo, "high": hi}
            for p, (v, lo, hi) in f.percentiles.items()
        },
    }


def run(
    pair: tuple[Side, Side],
    *,
    as_json: bool,
    show_all: bool,
    threads: int | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """The ``diff`` command."""
    before_side, after_side = pair
    before = read_side(before_side, threads, err)
    after = read_side(after_side, threads, err)
    if not before and not after:
        print("reqlog: no access events on either side", file=err)
        return 1
    changes = compare(before, after)
    if as_json:
        doc = {
            "before": before_side.label,
            "after": after_side.label,
            "rule": RULE,
            "routes": [
                {
                    "key": c.key,
                    "verdict": "worse"
                    if c.worse
                    else "better"
                    if c.better
                    else "new"
                    if c.before is None
                    else "gone"
                    if c.after is None
                    else "same",
                    "traffic": c.traffic,
                    "rate_5xx": c.rate_5xx,
                    "latency": {f"p{p}": v for p, v in (c.latency or {}).items()},
                    "before": _figures_dict(c.before),
                    "after": _figures_dict(c.after),
                }
                for c in changes
            ],
        }
        out.write(escape_json(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()) + "\n")
        return 0
    print(f"{safe(before_side.label)}  vs  {safe(after_side.label)}", file=out)
    print(render(changes, show_all), file=out)
    print(f"rule: {RULE}", file=out)
    return 0
