"""Known answers for the DuckDB commands: every figure recomputed here, independently.

The logs are generated in each test (seeded), small enough for the suite to stay fast. The
expected figures are computed in plain Python with exact fractions: weighted nearest-rank
percentiles, Wilson and quantile intervals, fingerprints.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reqlog.cli import _diff, main
from tests.test_cli import access, run, write_log

duckdb = pytest.importorskip("duckdb")

T0 = dt.datetime(2026, 11, 24, 6, 0, tzinfo=dt.UTC).timestamp()
ROUTES = [("GET", "/items/{id}"), ("POST", "/orders"), ("GET", "/search"), ("GET", None)]
RATES: list[float | None] = [None, None, 0.5, 0.25, 0.1]


def ts(seconds: float) -> str:
    """reqlog's timestamp for *seconds* after T0."""
    return dt.datetime.fromtimestamp(T0 + seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def nearest_rank(pairs: Sequence[tuple[float, Fraction]], p: Fraction) -> float:
    """The smallest value whose cumulative weight reaches p * total (exact arithmetic)."""
    ordered = sorted(pairs)
    total = sum((w for _, w in ordered), Fraction(0))
    target = p * total
    cum = Fraction(0)
    for i, (value, weight) in enumerate(ordered):
        cum += weight
        if cum >= target and (i + 1 == len(ordered) or ordered[i + 1][0] != value):
            return value
    return ordered[-1][0]


def weight_of(rate: float | None) -> Fraction:
    """1 / sample_rate as a float (0.2 stands for 5 requests), then exact from there on."""
    return Fraction(1 / rate) if rate is not None and 0 < rate < 1 else Fraction(1)


def generated(seed: int, n: int = 400, start: float = 0.0) -> list[dict[str, Any]]:
    """Access events with ties, sampling, 4xx/5xx, failures and slow requests."""
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        method, route = rnd.choice(ROUTES)
        status = rnd.choice([200] * 12 + [404, 422, 500, 503])
        failed = status == 500 and rnd.random() < 0.5
        rate = rnd.choice(RATES) if status < 400 else None
        duration = round(rnd.choice([rnd.lognormvariate(2.5, 1.0), 5.0, 12.5]), 3)
        extra: dict[str, Any] = {"sample_rate": rate} if rate is not None else {}
        if duration > 60:
            extra["slow"] = True
        event = access(
            f"{seed:08x}{i:024x}",
            ts(start + i * 0.37),
            f"/p/{i}",
            status,
            duration,
            route=route,
            method=method,
            **extra,
        )
        if route is None:
            event["route"] = None
        if failed:
            event["event"] = "request_failed"
        events.append(event)
    return events


def expected_stats(events: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        groups.setdefault(f"{e['method']} {e['route'] or '(no route)'}", []).append(e)
    groups["(all)"] = list(events)
    times = [dt.datetime.fromisoformat(e["timestamp"]).timestamp() for e in events]
    span = max(max(times) - min(times), 1.0)
    out = {}
    for key, items in groups.items():
        pairs = [(e["duration_ms"], weight_of(e.get("sample_rate"))) for e in items]
        count = sum((w for _, w in pairs), Fraction(0))

        def share(cond: Any, items: list[dict[str, Any]] = items) -> Fraction:
            return sum((weight_of(e.get("sample_rate")) for e in items if cond(e)), Fraction(0))

        c4 = share(lambda e: 400 <= e["status_code"] < 500)
        c5 = share(lambda e: e["status_code"] >= 500 or e["event"] == "request_failed")
        out[key] = {
            "key": key,
            "count": round(float(count), 1),
            "requests_per_s": round(float(count) / span, 3),
            "rate_4xx": round(float(c4 / count), 4),
            "rate_5xx": round(float(c5 / count), 4),
            "p50_ms": nearest_rank(pairs, Fraction(50, 100)),
            "p95_ms": nearest_rank(pairs, Fraction(95, 100)),
            "p99_ms": nearest_rank(pairs, Fraction(99, 100)),
            "max_ms": max(d for d, _ in pairs),
            "slow": round(float(share(lambda e: e.get("slow") is True)), 1),
            "total_ms": round(float(sum((d * w for d, w in pairs), Fraction(0))), 3),
            "events": len(items),
        }
    return out


def test_stats_every_figure_matches_an_independent_computation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = generated(seed=3)
    log = write_log(tmp_path / "app.log", ["INFO: banner", *events, '{"event": "trunc'])

    status, out, err = run(["stats", str(log), "--json"], capsys)

    assert status == 0, err
    doc = orjson.loads(out)
    want = expected_stats(events)
    assert {g["key"]: g for g in doc["groups"]} == {k: v for k, v in want.items() if k != "(all)"}
    assert doc["total"] == {**want["(all)"], "key": "(all)"}
    assert (doc["access_events"], doc["skipped_lines"]) == (len(events), 2)
    assert doc["first"] == events[0]["timestamp"]
    assert doc["last"] == events[-1]["timestamp"]


#: A duration in ms and the sample rate it was logged at (None: not sampled); few distinct
#: durations, so that ties are common.
DURATION_AND_RATE = st.tuples(
    st.sampled_from([0.5, 1.0, 1.5, 2.0, 7.25, 100.0, 3.0]),
    st.sampled_from([None, 0.5, 0.25, 0.2, 0.1]),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        DURATION_AND_RATE,
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([1, 10, 25, 50, 90, 95, 99, 100]),
)
def test_weighted_percentile_sql_is_nearest_rank(
    rows: list[tuple[float, float | None]], p: int
) -> None:
    """The SQL of stats/diff/report agrees with nearest rank, and with quantile_disc unweighted."""
    from reqlog.cli._stats import percentile_sql

    con = duckdb.connect()
    con.execute("CREATE TABLE t (d DOUBLE, rate DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?)", rows)
    weight = "CASE WHEN rate > 0 AND rate < 1 THEN 1.0 / rate ELSE 1.0 END"
    got = con.execute(
        f"SELECT {percentile_sql(p)} FROM (SELECT d, sum(w) OVER (ORDER BY d) AS cum,"
        f" sum(w) OVER () AS tot FROM (SELECT d, sum({weight}) AS w FROM t GROUP BY d))"
    ).fetchone()
    pairs = [(d, weight_of(rate)) for d, rate in rows]
    assert got == (nearest_rank(pairs, Fraction(p, 100)),)
    unweighted = con.execute(f"SELECT quantile_disc(d, {p / 100}) FROM t").fetchone()
    assert unweighted == (nearest_rank([(d, Fraction(1)) for d, _ in rows], Fraction(p, 100)),)


_DURATIONS = st.one_of(
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.5, 7.25, 100.0, 100.001, 100.002, 1e300, -3.0]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(min_value=99.0, max_value=101.0),  # many durations in one bucket
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=3),
            _DURATIONS,
            st.sampled_from([None, 0.5, 0.25, 0.2, 0.1]),
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_bucketed_percentiles_are_nearest_rank(
    rows: list[tuple[int, float, float | None]],
) -> None:
    """stats ranks durations by bucket, then exactly in one bucket: still nearest rank.

    Every double a log can hold (negative, -0.0, subnormal, huge), ties, and many durations in
    one bucket; each key's p50/p95/p99 against exact arithmetic.
    """
    from reqlog.cli._stats import percentiles_sql

    con = duckdb.connect()
    con.execute("CREATE TABLE t (key BIGINT, d DOUBLE, rate DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    weight = "CASE WHEN rate > 0 AND rate < 1 THEN 1.0 / rate ELSE 1.0 END"
    got = {
        key: (p50, p95, p99)
        for key, p50, p95, p99 in con.execute(
            percentiles_sql(f"SELECT key, d, {weight} AS w FROM t")
        ).fetchall()
    }
    want = {}
    for key in {k for k, _, _ in rows}:
        pairs = [(d, weight_of(rate)) for k, d, rate in rows if k == key]
        want[key] = tuple(nearest_rank(pairs, Fraction(p, 100)) for p in (50, 95, 99))
    assert got == want


def test_bucketed_percentiles_order_infinities_and_nan_as_duckdb_does() -> None:
    """-inf first, +inf then NaN last (DuckDB's order), as ranking every duration gives."""
    from reqlog.cli._stats import percentile_sql, percentiles_sql

    values = [float("nan"), float("inf"), -float("inf"), 1.0, 2.0, float("nan"), 3.0, -1e308]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (key BIGINT, d DOUBLE)")
    for n in range(1, len(values) + 1):
        con.execute("DELETE FROM t")
        con.executemany("INSERT INTO t VALUES (1, ?)", [(v,) for v in values[:n]])
        got = con.execute(percentiles_sql("SELECT key, d, 1.0 AS w FROM t")).fetchall()
        ranked = con.execute(
            "SELECT "
            + ", ".join(percentile_sql(p) for p in (50, 95, 99))
            + " FROM (SELECT d, sum(w) OVER (ORDER BY d) AS cum, sum(w) OVER () AS tot"
            " FROM (SELECT d, 1.0 AS w FROM t))"
        ).fetchall()
        # repr: a NaN percentile is the same answer, and nan != nan
        assert [repr(g[1:]) for g in got] == [repr(r) for r in ranked], values[:n]


# diff ---------------------------------------------------------------------------------------


def _side(seed: int, start: float, slow: float, error_share: float) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    events = []
    for i in range(300):
        route = ("GET", "/items/{id}") if i % 3 else ("POST", "/orders")
        duration = round(rnd.lognormvariate(2.0, 0.3) * (slow if route[1] == "/orders" else 1), 3)
        status = 503 if route[1] == "/items/{id}" and rnd.random() < error_share else 200
        events.append(
            access(
                f"{seed:08x}{i:024x}",
                ts(start + i),
                "/x",
                status,
                duration,
                route=route[1],
                method=route[0],
            )
        )
    return events


def expected_side(events: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    times = [dt.datetime.fromisoformat(e["timestamp"]).timestamp() for e in events]
    span = max(max(times) - min(times), 1.0)
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        groups.setdefault(f"{e['method']} {e['route']}", []).append(e)
    out = {}
    for key, items in groups.items():
        n = len(items)
        pairs = [(e["duration_ms"], Fraction(1)) for e in items]
        c5 = sum(1 for e in items if e["status_code"] >= 500)
        figures: dict[str, Any] = {
            "requests": float(n),
            "events": n,
            "requests_per_s": round(n / span, 4),
            "rate_5xx": round(c5 / n, 5),
        }
        for p in (50, 95, 99):
            q = p / 100
            half = 1.96 * math.sqrt(q * (1 - q) / n)
            low, high = max(100 * (q - half), 0), min(100 * (q + half), 100)
            figures[f"p{p}_ms"] = {
                "value": nearest_rank(pairs, Fraction(p, 100)),
                "low": nearest_rank(pairs, Fraction(low) / 100),
                "high": nearest_rank(pairs, Fraction(high) / 100),
            }
        figures["_rate_interval"] = _wilson(c5 / n, n)
        figures["_rps_interval"] = (
            (n - 1.96 * math.sqrt(n)) / span,
            (n + 1.96 * math.sqrt(n)) / span,
        )
        out[key] = figures
    return out


def _wilson(p: float, n: int) -> tuple[float, float]:
    z = 1.96
    denominator = 1 + z * z / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max((centre - spread) / denominator, 0), min((centre + spread) / denominator, 1)


def _verdict(
    b: tuple[float, float], a: tuple[float, float], old: float, new: float, least: float
) -> int:
    big = abs(new - old) >= least * abs(old)
    return 1 if a[0] > b[1] and big else -1 if a[1] < b[0] and big else 0


def test_diff_figures_and_verdicts_match_an_independent_computation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _side(1, 0, slow=1.0, error_share=0.0)
    after = _side(2, 3600, slow=3.0, error_share=0.25)  # /orders 3x slower, /items errors
    new_route = access("e" * 32, ts(3700), "/new", 200, 1.0, route="/new")
    log = write_log(tmp_path / "app.log", [*before, *after, new_route])

    status, out, err = run(["diff", str(log), "--at", ts(1800), "--json"], capsys)

    assert status == 0, err
    doc = orjson.loads(out)
    got = {r["key"]: r for r in doc["routes"]}
    want_before, want_after = expected_side(before), expected_side([*after, new_route])
    for key in want_before:
        b, a = want_before[key], want_after[key]
        for side, want in (("before", b), ("after", a)):
            assert got[key][side] == {k: v for k, v in want.items() if not k.startswith("_")}
        latency = {
            f"p{p}": _verdict(
                (b[f"p{p}_ms"]["low"], b[f"p{p}_ms"]["high"]),
                (a[f"p{p}_ms"]["low"], a[f"p{p}_ms"]["high"]),
                b[f"p{p}_ms"]["value"],
                a[f"p{p}_ms"]["value"],
                0.10,
            )
            for p in (50, 95, 99)
        }
        assert got[key]["latency"] == latency
        rate = _verdict(b["_rate_interval"], a["_rate_interval"], b["rate_5xx"], a["rate_5xx"], 0)
        assert got[key]["rate_5xx"] == rate
        traffic = _verdict(b["_rps_interval"], a["_rps_interval"], 0, 1, 0)
        assert got[key]["traffic"] == traffic
    assert got["POST /orders"]["verdict"] == "worse"
    assert got["POST /orders"]["latency"] == {"p50": 1, "p95": 1, "p99": 1}
    assert (got["GET /items/{id}"]["verdict"], got["GET /items/{id}"]["rate_5xx"]) == ("worse", 1)
    assert got["GET /new"]["verdict"] == "new"
    # The routes that got worse come first, the rule is stated.
    assert [r["verdict"] for r in doc["routes"]][:2] == ["worse", "worse"]
    assert doc["rule"] == _diff.RULE
    status, text, _ = run(["diff", str(log), "--at", ts(1800)], capsys)
    assert text.splitlines()[-1] == f"rule: {_diff.RULE}"
    assert "POST /orders" in "\n".join(text.splitlines()[3:5])


def test_diff_of_two_files_and_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_log(tmp_path / "a.log", _side(1, 0, 1.0, 0.0))
    b = write_log(tmp_path / "b.log", _side(1, 0, 1.0, 0.0))

    status, out, _ = run(["diff", str(a), str(b), "--json"], capsys)

    assert status == 0
    assert {r["verdict"] for r in orjson.loads(out)["routes"]} == {"same"}
    with pytest.raises(SystemExit):
        main(["diff", str(a)])
    assert "one log and --at" in capsys.readouterr().err


# errors -------------------------------------------------------------------------------------


def _stack(kind: str, frames: list[tuple[str, int, str]]) -> list[dict[str, Any]]:
    return [
        {
            "exc_type": kind,
            "exc_value": "boom",
            "frames": [{"filename": f, "lineno": n, "name": fn} for f, n, fn in frames],
        }
    ]


LIB = "/usr/lib/python3.11/site-packages/httpx/_client.py"


def test_errors_groups_match_an_independent_computation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = []
    for i in range(7):  # same bug, two call sites' worth of library frames below it
        e = access(f"a{i:031x}", ts(10 * i), "/orders", 500, 3.0, route="/orders", method="POST")
        e.update(
            event="request_failed",
            error_type="KeyError",
            error_message=f"'sku-{i}'",
            exception=_stack(
                "KeyError",
                [
                    ("/app/main.py", 10, "create"),
                    ("/app/orders.py", 42 + i % 2, "price"),
                    (LIB, 9, "send"),
                ],
            ),
        )
        failures.append(e)
    for i in range(3):  # the same type raised elsewhere: another group
        e = access(f"b{i:031x}", ts(5 + i), "/items/1", 500, 1.0, route="/items/{id}")
        e.update(
            event="request_failed",
            error_type="KeyError",
            error_message="'x'",
            exception=_stack("KeyError", [("/app/items.py", 7, "load")]),
        )
        failures.append(e)
    plain_503 = [
        access(f"c{i:031x}", ts(20 + i), "/health", 503, 1.0, route="/health") for i in range(2)
    ]
    text_tb = {
        "event": "task_failed",
        "level": "error",
        "timestamp": ts(30),
        "logger": "app.tasks",
        "request_id": "d" * 32,
        "exception": 'Traceback (most recent call last):\n  File "/app/a.py", line 1, in f\n'
        "ValueError: inner\n\nThe above exception was the direct cause of the following"
        " exception:\n\nTraceback (most recent call last):\n"
        '  File "/app/tasks.py", line 5, in run\n'
        f'  File "{LIB}", line 3, in send\nRuntimeError: outer',
    }
    ok = [access(f"f{i:031x}", ts(i), "/ok", 200, 1.0, route="/ok") for i in range(5)]
    log = write_log(tmp_path / "app.log", [*ok, *failures, *plain_503, text_tb])

    status, out, err = run(["errors", str(log), "--json"], capsys)

    assert status == 0, err
    doc = orjson.loads(out)
    summary = [
        (
            g["error"],
            g["frame"] and (g["frame"]["filename"], g["frame"]["function"]),
            g["count"],
            g["first_seen"],
            g["last_seen"],
            g["routes"],
            len(g["request_ids"]),
        )
        for g in doc["groups"]
    ]
    assert summary == [
        ("KeyError", ("/app/orders.py", "price"), 7.0, ts(0), ts(60), {"POST /orders": 7.0}, 3),
        ("KeyError", ("/app/items.py", "load"), 3.0, ts(5), ts(7), {"GET /items/{id}": 3.0}, 3),
        ("HTTP 503", None, 2.0, ts(20), ts(21), {"GET /health": 2.0}, 2),
        ("RuntimeError", ("/app/tasks.py", "run"), 1.0, ts(30), ts(30), {}, 1),
    ]
    assert doc["failures"] == 13.0
    assert doc["groups"][0]["message"] == "'sku-6'"

    # The report shows the same groups, in the same order.
    page_path = tmp_path / "r.html"
    assert run(["report", str(log), "-o", str(page_path)], capsys)[0] == 0
    page = page_path.read_text()
    rows = page.split('<tr class="error-group">')[1:]
    assert len(rows) == 4
    for row, group in zip(rows, doc["groups"], strict=True):
        assert f"<td class=n>{group['count']:,.0f}</td><td><code>{group['error']}</code>" in row


def test_errors_examples_and_message_follow_time_not_file_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Examples are the earliest request IDs and the message the latest, however the lines
    are ordered in the files (several workers' logs concatenated, a copy made in parallel)."""
    failures = []
    for i in range(6):
        e = access(f"{i:032x}", ts(10 * i), "/orders", 500, 3.0, route="/orders", method="POST")
        e.update(event="request_failed", error_type="KeyError", error_message=f"'sku-{i}'")
        failures.append(e)
    shuffled = [failures[i] for i in (4, 1, 5, 0, 3, 2)]
    in_order = write_log(tmp_path / "a.log", failures)
    out_of_order = write_log(tmp_path / "b.log", shuffled)

    docs = []
    for log in (in_order, out_of_order):
        status, out, err = run(["errors", str(log), "--json"], capsys)
        assert status == 0, err
        docs.append(orjson.loads(out))

    for doc in docs:
        (group,) = doc["groups"]
        assert (group["request_ids"], group["message"]) == (
            [f"{i:032x}" for i in range(3)],
            "'sku-5'",
        )
        assert (group["first_seen"], group["last_seen"]) == (ts(0), ts(50))


# trace --------------------------------------------------------------------------------------


def test_trace_finds_events_before_and_after_the_access_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = "7" * 32
    completed = access(rid, ts(1.0), "/send", 200, 100.0, route="/send")
    inside = {"event": "validating", "level": "info", "timestamp": ts(0.95), "request_id": rid}
    task_a = {"event": "email_sent", "level": "info", "timestamp": ts(1.5), "request_id": rid}
    task_b = {"event": "audit_written", "level": "info", "timestamp": ts(1.2), "request_id": rid}
    other = access("8" * 32, ts(1.1), "/x", 200, 1.0)
    # Background events after the access event in the file, one of them in another file and
    # out of time order; another request's events between them.
    first = write_log(tmp_path / "a.log", [inside, completed, other, task_a])
    second = write_log(tmp_path / "b.log.gz", [task_b])

    status, out, _ = run(["trace", rid[:8], str(first), str(second), "--json"], capsys)

    assert status == 0
    got = [(e["event"], e["offset_ms"]) for e in map(orjson.loads, out.splitlines())]
    assert got == [
        ("validating", 50.0),
        ("request_completed", 100.0),
        ("audit_written", 300.0),
        ("email_sent", 600.0),
    ]
    status, text, _ = run(["trace", rid, str(first), str(second)], capsys)
    assert "(route /send, client 10.0.0.1, 2 event(s) after the response)" in text


# --since / --until and sql ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["stats", "--json"],
        ["errors", "--json"],
        ["sql", "--format", "json", "SELECT count(*) AS n FROM requests"],
        ["view", "--json"],
        ["report", "-o", "-"],
        ["trace", "f" * 8, "--json"],
        ["diff", "--at", ts(240)[:19], "--json"],
    ],
)
def test_since_and_until_bound_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    events = [access(f"{i:032x}", ts(i * 60), f"/{i}", 500, 1.0, route="/r") for i in range(10)]
    # trace: one request's events across the whole time span
    events += [
        {"event": "step", "timestamp": ts(i * 60 + 1), "request_id": "f" * 32} for i in range(10)
    ]
    log = write_log(tmp_path / "app.log", events)

    status, out, err = run(
        [*command, str(log), "--since", ts(120)[:19], "--until", ts(300)[:19]], capsys
    )

    assert status == 0, err
    if command[0] == "stats":
        assert orjson.loads(out)["access_events"] == 3
    elif command[0] == "errors":
        assert orjson.loads(out)["failures"] == 3.0
    elif command[0] == "sql":
        assert orjson.loads(out) == {"n": 3}
    elif command[0] == "report":
        assert "3 access events from" in out
    elif command[0] == "trace":
        assert [e["timestamp"] for e in map(orjson.loads, out.splitlines())] == [
            ts(121),
            ts(181),
            ts(241),
        ]
    elif command[0] == "diff":
        sides = orjson.loads(out)["routes"][0]
        assert (sides["before"]["events"], sides["after"]["events"]) == (2, 1)
    else:
        assert len(out.splitlines()) == 6


def test_sql_views_unify_schemas_and_keep_the_whole_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reqlog.schemas import ECSSchema, OTelSchema

    flat = access("1" * 32, ts(0), "/a", 201, 4.0, route="/a", method="POST", user_id="u1")
    log = write_log(
        tmp_path / "app.log",
        [
            flat,
            ECSSchema()(None, "info", dict(flat)),
            OTelSchema()(None, "info", dict(flat)),
            {**LOADING_EVENT, "timestamp": ts(0)},
        ],
    )

    status, out, err = run(
        [
            "sql",
            "SELECT method, route, path, status_code, duration_ms, user_id, weight FROM requests",
            str(log),
            "--format",
            "csv",
        ],
        capsys,
    )

    assert status == 0, err
    assert out.splitlines() == [
        "method,route,path,status_code,duration_ms,user_id,weight",
        *["POST,/a,/a,201,4,u1,1"] * 3,
    ]
    status, out, _ = run(
        ["sql", "SELECT event, json->>'item_id' AS item FROM events WHERE NOT access", str(log)],
        capsys,
    )
    assert out.splitlines()[2:4] == ["loading_item  42", "(1 row)"]
    status, _, err = run(["sql", "SELECT nope FROM requests", str(log)], capsys)
    assert status == 1
    assert 'Referenced column "nope" not found' in err


LOADING_EVENT: dict[str, Any] = {
    "event": "loading_item",
    "level": "info",
    "logger": "app.items",
    "request_id": "1" * 32,
    "item_id": 42,
}


def test_without_duckdb_the_command_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reqlog.cli._engine import distribution_name

    log = write_log(tmp_path / "app.log", generated(seed=1, n=3))
    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb now raises ImportError

    for command in ("stats", "report", "errors"):
        status, _, err = run([command, str(log)], capsys)
        assert (status, err) == (
            3,
            f"reqlog {command}: this command reads logs with DuckDB, which is not installed;"
            f" install it with: pip install '{distribution_name()}[cli]'\n",
        )
    # view needs no extra.
    assert run(["view", str(log)], capsys)[0] == 0


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=10_000))
def test_gzip_and_plain_inputs_give_the_same_figures(seed: int) -> None:
    import tempfile

    events = generated(seed, n=50)
    with tempfile.TemporaryDirectory() as tmp:
        plain = write_log(Path(tmp) / "a.log", events[:25])
        packed = write_log(Path(tmp) / "b.log.gz", events[25:])
        both = write_log(Path(tmp) / "all.log", events)
        from reqlog.cli import _engine, _stats

        with _engine.Logs([str(plain), str(packed)]) as logs:
            split = _stats.compute(logs, "route")
        with _engine.Logs([str(both)]) as logs:
            whole = _stats.compute(logs, "route")
    assert {r.key: r.as_dict() for r in split.rows} == {r.key: r.as_dict() for r in whole.rows}


# report's figures -----------------------------------------------------------------------------


def test_report_per_minute_figures_match_an_independent_computation(tmp_path: Path) -> None:
    """Each minute of the report's charts: requests by class and weighted p50/p95/p99."""
    from reqlog.cli import _report
    from reqlog.cli._engine import Logs

    events = generated(seed=5, n=600)  # 0.37 s apart: four minutes
    log = write_log(tmp_path / "app.log", ["INFO: banner", *events])

    with Logs([str(log)], fast=True) as logs:
        data = _report.collect(logs)

    minutes: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        when = dt.datetime.fromisoformat(e["timestamp"]).timestamp()
        minutes.setdefault(int(when // 60) * 60, []).append(e)
    want = []
    for start, items in sorted(minutes.items()):
        pairs = [(e["duration_ms"], weight_of(e.get("sample_rate"))) for e in items]
        failed = [e["status_code"] >= 500 or e["event"] == "request_failed" for e in items]
        c5 = sum((w for (_, w), f in zip(pairs, failed, strict=True) if f), Fraction(0))
        c4 = sum(
            (
                w
                for (_, w), f, e in zip(pairs, failed, items, strict=True)
                if 400 <= e["status_code"] < 500 and not f
            ),
            Fraction(0),
        )
        count = sum((w for _, w in pairs), Fraction(0))
        want.append(
            (
                float(start),
                float(count),
                float(count - c4 - c5),
                float(c4),
                float(c5),
                *(nearest_rank(pairs, Fraction(p, 100)) for p in (50, 95, 99)),
            )
        )
    got = [(b.start, b.count, b.ok, b.c4, b.c5, b.p50, b.p95, b.p99) for b in data.buckets]
    assert data.width == 1
    assert got == want


def test_report_per_minute_figures_of_a_small_log_are_the_known_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three minutes worked out by hand: counts by class, nearest-rank and weighted percentiles.

    Minute 0: durations 1..10 ms (200), 50 ms (404), 100 ms (request_failed, 500), the last at
    59.999 s: 12 requests, p50 the 6th (6 ms), p95 and p99 the 12th (100 ms). Minute 1: none.
    Minute 2, from 120.000 s: 0.5 ms (503), 2 ms, 8 ms, 3 ms at sample_rate 0.5 (weight 2),
    4 ms at 0.25 (weight 4): 9 requests; p50 is where the weight reaches 4.5, at 4 ms (the
    unweighted answer would be 3 ms), p95 and p99 8 ms. Text and app events count for nothing.
    """
    from reqlog.cli import _report
    from reqlog.cli._engine import Logs

    def at(i: int, seconds: float, status: int, duration: float, **extra: Any) -> dict[str, Any]:
        return access(f"{i:032x}", ts(seconds), f"/k/{i}", status, duration, **extra)

    minute0 = [at(i, 5.0 * i, 200, float(i + 1)) for i in range(10)]
    minute0 += [at(10, 51.0, 404, 50.0), at(11, 59.999, 500, 100.0, event="request_failed")]
    minute2 = [
        at(12, 120.0, 503, 0.5),
        at(13, 121.0, 200, 8.0),
        at(14, 122.0, 200, 3.0, sample_rate=0.5),
        at(15, 150.0, 200, 4.0, sample_rate=0.25),
        at(16, 179.5, 200, 2.0),
    ]
    app_event = {"event": "loading", "level": "info", "timestamp": ts(90.0), "duration_ms": 1e6}
    log = write_log(tmp_path / "app.log", ["INFO: banner", *minute0, app_event, *minute2])

    with Logs([str(log)], fast=True) as logs:
        data = _report.collect(logs)

    assert data.width == 1
    got = [(b.start - T0, b.count, b.ok, b.c4, b.c5, b.p50, b.p95, b.p99) for b in data.buckets]
    assert got == [
        (0.0, 12.0, 10.0, 1.0, 1.0, 6.0, 100.0, 100.0),
        (60.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        (120.0, 9.0, 8.0, 0.0, 1.0, 4.0, 8.0, 8.0),
    ]
    # The same answers from the independent computation the generated-log test uses.
    for (*_, p50, p95, p99), items in ((got[0], minute0), (got[2], minute2)):
        pairs = [(e["duration_ms"], weight_of(e.get("sample_rate"))) for e in items]
        want = tuple(nearest_rank(pairs, Fraction(p, 100)) for p in (50, 95, 99))
        assert (p50, p95, p99) == want

    # ... and what the charts say, in the rendered report.
    out = tmp_path / "report.html"
    status, _, err = run(["report", str(log), "-o", str(out)], capsys)
    assert status == 0, err
    html = out.read_text()
    for title in (
        "2026-11-24 06:00:00 UTC: 10.0 ok req/min",
        "2026-11-24 06:00:00 UTC: 1.0 4xx req/min",
        "2026-11-24 06:00:00 UTC: 1.0 5xx req/min",
        "2026-11-24 06:00:00 UTC: p50 6.0 ms",
        "2026-11-24 06:00:00 UTC: p99 100 ms",
        "2026-11-24 06:02:00 UTC: 8.0 ok req/min",
        "2026-11-24 06:02:00 UTC: p50 4.0 ms",
        "2026-11-24 06:02:00 UTC: p95 8.0 ms",
    ):
        assert f"<title>{title}</title>" in html
    assert "06:01:00 UTC: p50" not in html  # a minute without requests has no dot


# top's figures --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        DURATION_AND_RATE,
        min_size=1,
        max_size=80,
    )
)
def test_top_percentiles_are_weighted_nearest_rank(rows: list[tuple[float, float | None]]) -> None:
    from reqlog.cli._top import weighted_percentiles

    lists: dict[float, list[float]] = {}
    for d, rate in rows:
        lists.setdefault(float(weight_of(rate)), []).append(d)
    pairs = [(d, weight_of(rate)) for d, rate in rows]

    got = weighted_percentiles(lists, (1, 50, 95, 99, 100))

    assert got == [nearest_rank(pairs, Fraction(p, 100)) for p in (1, 50, 95, 99, 100)]


def test_top_window_slides_with_the_clock() -> None:
    from reqlog.cli._engine import Window
    from reqlog.cli._top import State

    now = [1000.0]
    state = State(window_s=60, time_window=Window(), clock=lambda: now[0])
    old = [access(f"{i:032x}", ts(0), "/a", 500, 100.0, route="/a") for i in range(10)]
    state.add_lines([orjson.dumps(e) for e in old])
    now[0] += 30
    new = [access(f"{i:032x}", ts(0), "/a", 200, float(i), route="/a") for i in range(1, 31)]
    state.add_lines([orjson.dumps(e) for e in new] + [b"banner", b'{"trunc'])

    routes, overall, slowest, span = state.snapshot()
    # 40 durations: 1..30 and ten of 100; the 20th is 20.
    assert (routes[0].count, routes[0].rate_5xx, routes[0].p50, span) == (40, 0.25, 20.0, 30)
    now[0] += 45  # the first second left the 60 s window
    routes, overall, slowest, span = state.snapshot()
    assert (routes[0].count, routes[0].rate_5xx, routes[0].p50, routes[0].p99, span) == (
        30,
        0.0,
        15.0,
        30.0,
        60,
    )
    assert overall is not None
    assert (overall.key, overall.count, overall.p99) == ("(all)", 30, 30.0)
    assert [s.duration for s in slowest] == [30.0, 29.0, 28.0, 27.0, 26.0, 25.0, 24.0, 23.0]
    assert (state.lines, state.events, state.stats.malformed) == (42, 40, 1)


def test_quoted_globs_are_read_and_a_glob_matching_nothing_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = generated(seed=5, n=40)
    write_log(tmp_path / "web-1.jsonl", events[:20])
    write_log(tmp_path / "web-2.jsonl", events[20:])

    status, out, _ = run(["stats", str(tmp_path / "web-*.jsonl"), "--json"], capsys)

    assert (status, orjson.loads(out)["access_events"]) == (0, 40)
    status, out, err = run(["stats", str(tmp_path / "nothing-*.jsonl")], capsys)
    assert (status, out) == (1, "")
    assert err.startswith("reqlog stats: IO Error: No files found that match the pattern")


@pytest.mark.parametrize("command", ["stats", "report"])
def test_a_schema_change_after_the_first_lines_is_still_read(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """Files are read with the schemas of their first lines; a later line in another schema
    is noticed and the file is read again with every schema's names."""
    from reqlog.cli import _engine
    from reqlog.schemas import ECSSchema, OTelSchema

    monkeypatch.setattr(_engine, "SNIFF_BYTES", 2000)
    flat = [access(f"{i:032x}", ts(i), "/a", 200, 1.0, route="/a") for i in range(20)]
    later = access("e" * 32, ts(30), "/a", 503, 9.0, route="/a")
    log = write_log(
        tmp_path / "app.log",
        [*flat, ECSSchema()(None, "error", dict(later)), OTelSchema()(None, "error", dict(later))],
    )
    assert _engine.resolve([str(log)]).sources[0].schemas == frozenset()

    if command == "stats":
        status, out, err = run(["stats", str(log), "--json"], capsys)
        total = orjson.loads(out)["total"]
        assert (status, err, total["count"], total["max_ms"], total["rate_5xx"]) == (
            0,
            "",
            22.0,
            9.0,
            round(2 / 22, 4),
        )
    else:
        status, out, err = run(["report", str(log), "-o", "-"], capsys)
        assert (status, err) == (0, "")
        assert "22 access events from" in out


def test_the_install_hint_names_the_distribution_in_pyproject() -> None:
    """The name comes from the installed metadata, so a rename of the distribution follows."""
    import tomllib

    from reqlog.cli._engine import distribution_name

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert distribution_name() == pyproject["project"]["name"]


@pytest.mark.parametrize("compress", [False, True])
def test_stats_reads_standard_input(compress: bool) -> None:
    """``kubectl logs ... | reqlog stats``: stdin, plain or gzip, copied for DuckDB and removed."""
    import gzip
    import subprocess
    import tempfile

    events = generated(seed=9, n=30)
    data = b"".join(orjson.dumps(e) + b"\n" for e in events)
    before = set(Path(tempfile.gettempdir()).glob("reqlog-stdin-*"))

    result = subprocess.run(
        [sys.executable, "-m", "reqlog", "stats", "--json"],
        input=gzip.compress(data) if compress else data,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    doc = orjson.loads(result.stdout)
    assert doc["total"] == {**expected_stats(events)["(all)"], "key": "(all)"}
    assert set(Path(tempfile.gettempdir()).glob("reqlog-stdin-*")) == before


@pytest.mark.parametrize("by", ["route", "path", "status", "user", "method", "service"])
def test_stats_groupings_match_an_independent_computation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], by: str
) -> None:
    events = generated(seed=4, n=200)
    rnd = random.Random(4)
    for e in events:
        if rnd.random() < 0.5:
            e["user_id"] = f"u{rnd.randint(1, 4)}"
        if rnd.random() < 0.5:
            e["service"] = rnd.choice(["orders", "billing"])
    ws = {
        "event": "websocket_closed", "level": "info", "timestamp": ts(1), "logger": "reqlog.access",
        "path": "/ws", "route": "/ws", "duration_ms": 50.0, "close_code": 1000,
    }  # fmt: skip
    log = write_log(tmp_path / "app.log", [*events, ws])

    status, out, err = run(["stats", str(log), "--json", "--by", by], capsys)

    assert status == 0, err

    def key(e: dict[str, Any]) -> str:
        method = e.get("method") or "WS"
        return {
            "route": f"{method} {e.get('route') or '(no route)'}",
            "path": f"{method} {e.get('path') or '-'}",
            "status": str(e["status_code"]) if e.get("status_code") is not None else "-",
            "user": e.get("user_id") or "(anonymous)",
            "method": method,
            "service": e.get("service") or "-",
        }[by]

    groups: dict[str, list[tuple[float, Fraction]]] = {}
    for e in [*events, ws]:
        groups.setdefault(key(e), []).append((e["duration_ms"], weight_of(e.get("sample_rate"))))
    got = {g["key"]: (g["count"], g["p50_ms"], g["p99_ms"]) for g in orjson.loads(out)["groups"]}
    assert got == {
        k: (
            round(float(sum((w for _, w in v), Fraction(0))), 1),
            nearest_rank(v, Fraction(1, 2)),
            nearest_rank(v, Fraction(99, 100)),
        )
        for k, v in groups.items()
    }


def test_times_on_the_command_line() -> None:
    from reqlog.cli._events import parse_time_arg

    now = dt.datetime(2026, 11, 24, 15, 30, tzinfo=dt.UTC).timestamp()

    assert parse_time_arg("15m", now) == now - 900
    assert (
        parse_time_arg("14:05", now) == dt.datetime(2026, 11, 24, 14, 5, tzinfo=dt.UTC).timestamp()
    )
    assert (
        parse_time_arg("9:00:30", now)
        == dt.datetime(2026, 11, 24, 9, 0, 30, tzinfo=dt.UTC).timestamp()
    )
    # later than now today: yesterday's
    assert parse_time_arg("16:00", now) == dt.datetime(2026, 11, 23, 16, tzinfo=dt.UTC).timestamp()
    assert (
        parse_time_arg("2026-11-24 05:54", now)
        == dt.datetime(2026, 11, 24, 5, 54, tzinfo=dt.UTC).timestamp()
    )
    assert (
        parse_time_arg("2026-11-24T07:54+02:00", now)
        == dt.datetime(2026, 11, 24, 5, 54, tzinfo=dt.UTC).timestamp()
    )
    for bad in ("25:00", "soon", "14:5"):
        with pytest.raises(ValueError, match="not a time"):
            parse_time_arg(bad, now)
