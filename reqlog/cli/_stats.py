"""``reqlog stats``: per-route (or path, status, user...) latency and error figures, in DuckDB.

One SQL statement per run: the access events are grouped, each sampled event weighs
``1 / sample_rate``, and p50/p95/p99 are weighted nearest-rank percentiles (the smallest
duration whose cumulative weight reaches the share; :func:`percentile_sql`). The table's
``(all)`` row is the same figures over every group, from the same pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ._engine import Logs, Window, epoch_seconds
from ._safe import safe

GROUPINGS = ("route", "path", "status", "user", "method", "service")
SORT_KEYS = ("total", "count", "rps", "p50", "p95", "p99", "max", "4xx", "5xx", "slow", "name")
NO_ROUTE = "(no route)"
ANONYMOUS = "(anonymous)"
PERCENTILES = (50, 95, 99)

_METHOD = "coalesce(method, CASE WHEN event LIKE 'websocket%' THEN 'WS' END, '-')"
_KEYS = {
    "route": f"{_METHOD} || ' ' || coalesce(nullif(route, ''), '{NO_ROUTE}')",
    "path": f"{_METHOD} || ' ' || coalesce(nullif(path, ''), '-')",
    "status": "coalesce(CAST(status_code AS VARCHAR), '-')",
    "user": f"coalesce(user_id, '{ANONYMOUS}')",
    "method": _METHOD,
    "service": "coalesce(service, '-')",
}


def group_key_sql(by: str) -> str:
    """The SQL expression naming the group of an access event."""
    return _KEYS[by]


def percentile_sql(p: float | str, cum: str = "cum", total: str = "tot", value: str = "d") -> str:
    """Weighted nearest-rank percentile *p* (0-100) as an aggregate over ranked rows.

    Rows carry *cum*, the sum of the weights of every row whose value is at most this one's
    (a window ordered by value: ties count together), and *total*, the group's sum of weights.
    The percentile is the smallest value whose *cum* reaches ``p / 100 * total``; with every
    weight 1 that is the textbook nearest rank, ``ceil(p / 100 * n)``. The comparison is made
    in percent with a relative tolerance of 1e-12 so that ``0.95 * 20`` reaching 19 is not lost
    to rounding.
    """
    return f"min({value}) FILTER (WHERE {cum} * 100 >= ({p}) * {total} * (1 - 1e-12))"


#: Durations are ranked in two steps (see :func:`percentiles_sql`): first by bucket, 64 buckets
#: per unit of ``ln(1 + |d|)`` (each about 1.6% of its durations wide), then exactly inside the
#: one bucket that holds each percentile.
_BUCKETS_PER_LN = 64
#: The bucket of +inf and NaN (which DuckDB sorts after every number); -inf gets its negative.
#: Finite durations stay within +-ln(1.8e308) * 64, about 45,000.
_OUTSIDE = 1 << 20


def bucket_sql(value: str) -> str:
    """A BIGINT that never decreases as *value* grows: the coarse rank of a duration.

    ``sign(d) * floor(ln(1 + |d|) * 64)``: about 1.6% of the value wide above a millisecond,
    finer below, the same for negative values (which a hostile log may hold) mirrored.
    """
    return (
        f"CASE WHEN isfinite({value})"
        f" THEN CAST(sign({value}) * floor(ln(1 + abs({value})) * {_BUCKETS_PER_LN}) AS BIGINT)"
        f" WHEN {value} > 0 THEN {_OUTSIDE} ELSE -{_OUTSIDE} END"
    )


def percentiles_sql(source: str, shares: Sequence[int] = PERCENTILES) -> str:
    """Weighted nearest-rank percentiles of ``d`` per ``key``, from *source* (``key, d, w``).

    The answer is :func:`percentile_sql`'s, found without sorting every duration: durations
    are summed by bucket (:func:`bucket_sql`, a few thousand per key), the buckets ranked, and
    for each share the bucket where the cumulative weight reaches it is ranked duration by
    duration, starting from the weight of the buckets before it. As buckets never decrease
    with the duration, that is the cumulative weight of every duration. One row per key,
    with a column ``p{share}`` for each share.
    """

    # percentile_sql's test: the cumulative weight reaches p% of the total (in percent, with
    # a relative tolerance of 1e-12), at the end of a bucket and at a duration inside one.
    def reaches(cum: str, p: int) -> str:
        return f"({cum}) * 100 >= {p} * tot * (1 - 1e-12)"

    cuts = ", ".join(f"min(b) FILTER (WHERE {reaches('before + bw', p)}) AS b{p}" for p in shares)
    inside = ", ".join(f"b{p}" for p in shares)
    # The bucket's last duration when rounding leaves the sum inside it just short of the
    # share its total reached.
    picks = ", ".join(
        f"coalesce(min(d) FILTER (WHERE b = b{p} AND {reaches('before + cum', p)}),"
        f" max(d) FILTER (WHERE b = b{p})) AS p{p}"
        for p in shares
    )
    return f"""
    WITH src AS MATERIALIZED (
        SELECT key, d, w, {bucket_sql("d")} AS b FROM ({source})
    ), buckets AS (
        SELECT key, b, bw, sum(bw) OVER (PARTITION BY key) AS tot,
               coalesce(sum(bw) OVER (PARTITION BY key ORDER BY b
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                 AS before
        FROM (SELECT key, b, sum(w) AS bw FROM src GROUP BY key, b)
    ), cuts AS (
        SELECT key, {cuts} FROM buckets GROUP BY key
    )
    SELECT key, {picks} FROM (
        SELECT key, b, d, before, tot, {inside},
               sum(w) OVER (PARTITION BY key, b ORDER BY d) AS cum
        FROM src JOIN cuts USING (key) JOIN buckets USING (key, b)
        WHERE b IN ({inside})
    ) GROUP BY key
    """


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
class Result:
    """Every group's row, the ``(all)`` row, the time span and the lines skipped."""

    rows: list[Row]
    total: Row | None
    first: float | None
    last: float | None
    skipped: int

    @property
    def span_s(self) -> float:
        """Seconds between the first and last access event (at least one second)."""
        if self.first is None or self.last is None:
            return 1.0
        return max(self.last - self.first, 1.0)

    @property
    def access_events(self) -> int:
        """Access events read (lines, before weighting by sample rate)."""
        return self.total.events if self.total else 0


# The columns each grouping groups by, each already as shown (``-`` for a missing method, a
# WebSocket's method is WS): hashing and partitioning by them is cheaper than by one built
# string, which is made once per group at the end.
_METHOD_OR_WS = "coalesce(method, CASE WHEN starts_with(event, 'websocket') THEN 'WS' END, '-')"
_GROUP_COLUMNS = {
    "route": (_METHOD_OR_WS, f"coalesce(nullif(route, ''), '{NO_ROUTE}')"),
    "path": (_METHOD_OR_WS, "coalesce(nullif(path, ''), '-')"),
    "status": ("status_code",),
    "user": ("user_id",),
    "method": (_METHOD_OR_WS,),
    "service": ("service",),
}
_GROUP_KEYS = {
    "route": "{g0} || ' ' || {g1}",
    "path": "{g0} || ' ' || {g1}",
    "status": "coalesce(CAST({g0} AS VARCHAR), '-')",
    "user": f"coalesce({{g0}}, '{ANONYMOUS}')",
    "method": "{g0}",
    "service": "coalesce({g0}, '-')",
}


def stats_sql(logs: Logs, by: str) -> str:
    """The one statement behind ``stats``: one row per group and a ``(all)`` row.

    One scan feeds two aggregations: ``seen``, over every line kept (the lines that are not
    events, the time span), and ``hist``, the access events summed by group, duration and
    kind (4xx, 5xx or failed, slow: bits of ``kind``), far fewer rows than events. The group
    figures and the ``(all)`` row are sums over ``hist`` (grouping sets); the percentiles come
    from :func:`percentiles_sql` over its durations, each group numbered (``gid``) and the
    ``(all)`` row ranking every group's durations together.
    """
    columns = _GROUP_COLUMNS[by]
    raw = ", ".join(f"{c} AS g{i}" for i, c in enumerate(columns))
    groups = ", ".join(f"g{i}" for i in range(len(columns)))
    same = " AND ".join(f"h.g{i} IS NOT DISTINCT FROM f.g{i}" for i in range(len(columns)))
    durations = (
        f"SELECT f.gid AS key, h.d, h.w FROM hist h JOIN figures f ON NOT f.is_total AND {same}"
        " UNION ALL SELECT f.gid, h.d, h.w FROM hist h JOIN figures f ON f.is_total"
    )
    key = _GROUP_KEYS[by].format(g0="f.g0", g1="f.g1")
    pcts = ", ".join(f"p.p{p}" for p in PERCENTILES)
    return f"""
    WITH kept AS (
        SELECT junk, alien, {raw}, coalesce(duration_ms, 0) AS d, {logs.weight_sql} AS w,
               CASE WHEN status_code BETWEEN 400 AND 499 THEN 1 ELSE 0 END
               + CASE WHEN status_code >= 500 OR is_failed THEN 2 ELSE 0 END
               + CASE WHEN slow IS TRUE THEN 4 ELSE 0 END AS kind,
               {logs.ts_sql} AS ts
        FROM lines WHERE ({logs.access_sql}) OR junk OR alien
    ), seen AS (
        SELECT count(*) FILTER (WHERE junk) AS skipped, count(*) FILTER (WHERE alien) AS alien,
               epoch(min(ts) FILTER (WHERE NOT junk AND NOT alien)) AS first,
               epoch(max(ts) FILTER (WHERE NOT junk AND NOT alien)) AS last
        FROM kept
    ), hist AS (
        SELECT {groups}, d, kind, sum(w) AS w, count(*) AS n
        FROM kept WHERE NOT junk AND NOT alien GROUP BY {groups}, d, kind
    ), figures AS (
        SELECT grouping({groups}) > 0 AS is_total, {groups}, sum(w) AS count,
               sum(n) AS events, coalesce(sum(w) FILTER (WHERE kind & 1 <> 0), 0) AS c4,
               coalesce(sum(w) FILTER (WHERE kind & 2 <> 0), 0) AS c5,
               coalesce(sum(w) FILTER (WHERE kind & 4 <> 0), 0) AS slow,
               sum(w * d) AS total, max(d) AS max, row_number() OVER () AS gid
        FROM hist GROUP BY GROUPING SETS (({groups}), ())
    )
    SELECT f.* EXCLUDE ({groups}, gid), CASE WHEN NOT f.is_total THEN {key} END AS key,
           {pcts}, s.skipped, s.alien, s.first, s.last
    FROM figures f LEFT JOIN ({percentiles_sql(durations)}) p ON p.key = f.gid CROSS JOIN seen s
    """


_ALIENS = "SELECT count(*) FROM lines WHERE alien"


def compute(logs: Logs, by: str) -> Result:
    """Run the statement and turn its rows into :class:`Row` figures."""
    raw = list(logs.rows(stats_sql(logs, by)))
    if logs.narrowed and (raw[0]["alien"] if raw else logs.query(_ALIENS)[0][0]):
        logs.widen()  # a line in a schema the first lines did not show: read every name
        raw = list(logs.rows(stats_sql(logs, by)))
    skipped = logs.skipped_lines() if not raw else int(raw[0]["skipped"])
    total_raw = next((r for r in raw if r["is_total"]), None)
    first = epoch_seconds(total_raw["first"]) if total_raw else None
    last = epoch_seconds(total_raw["last"]) if total_raw else None
    span = max(last - first, 1.0) if first is not None and last is not None else 1.0
    groups = [_row(r, span) for r in raw if not r["is_total"] and r["count"]]
    total = _row(total_raw, span) if total_raw and total_raw["count"] else None
    return Result(groups, total, first, last, skipped)


def _row(raw: dict[str, Any], span: float) -> Row:
    count = float(raw["count"])
    return Row(
        key="(all)" if raw["is_total"] else str(raw["key"]),
        count=count,
        rps=count / span,
        rate_4xx=float(raw["c4"]) / count,
        rate_5xx=float(raw["c5"]) / count,
        p50=float(raw["p50"]),
        p95=float(raw["p95"]),
        p99=float(raw["p99"]),
        max=float(raw["max"]),
        slow=float(raw["slow"]),
        total_ms=float(raw["total"]),
        events=int(raw["events"]),
    )


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
    """A plain aligned text table (durations in ms); group names are escaped."""
    header = [by, "count", "req/s", "4xx", "5xx", "p50", "p95", "p99", "max", "slow", "total"]
    body = [
        [
            safe(r.key),
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


def no_requests_message(skipped: int) -> str:
    """What to say when the input held no access events."""
    names = "/".join(("request_completed", "request_failed", "websocket_*"))
    return f"no access events ({names} from reqlog.access); is this a reqlog JSON log?" + (
        f" ({skipped:,} line(s) were not JSON events)" if skipped else ""
    )


def skipped_message(skipped: int) -> str:
    """The stderr line about lines that were not events."""
    return (
        f"skipped {skipped:,} line(s) that are not JSON log events"
        " (text such as a server banner, malformed or truncated JSON)"
    )


def run(
    names: Sequence[str],
    *,
    by: str,
    sort: str,
    top: int | None,
    as_json: bool,
    window: Window,
    threads: int | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """The ``stats`` command; returns the exit status."""
    import orjson

    with Logs(names, window, threads=threads, fast=True) as logs:
        for problem in logs.problems:
            print(f"reqlog: {safe(problem)}", file=err)
        result = compute(logs, by)
    if result.skipped:
        print(f"reqlog: {skipped_message(result.skipped)}", file=err)
    if result.total is None:
        print(f"reqlog: {no_requests_message(result.skipped)}", file=err)
        return 1
    items = sort_rows(result.rows, sort)
    if top is not None:
        items = items[:top]
    if as_json:
        doc = {
            "by": by,
            "first": _iso(result.first),
            "last": _iso(result.last),
            "span_s": round(result.span_s, 3),
            "access_events": result.access_events,
            "skipped_lines": result.skipped,
            "groups": [r.as_dict() for r in items],
            "total": result.total.as_dict(),
        }
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    from ._events import format_time  # here: --json and the engine do not need it

    when = (
        f"{format_time(result.first)} to {format_time(result.last)} UTC"
        if result.first is not None and result.last is not None
        else "no timestamps"
    )
    total = result.total
    print(f"{_count(total.count)} requests ({total.events:,} access events), {when}", file=out)
    print(f"durations in ms; sorted by {sort}", file=out)
    print(render_table(items, total, by), file=out)
    return 0


def _iso(seconds: float | None) -> str | None:
    if seconds is None or math.isnan(seconds):
        return None
    from ._events import iso_time

    return iso_time(seconds)
