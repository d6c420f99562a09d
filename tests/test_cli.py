"""Tests for the ``reqlog`` command line tool: real files, gzip, stdin and a followed file."""

from __future__ import annotations

import gzip
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from reqlog.cli import _input, main

RID_A = "3f2a9c0e8b7d4e1fa2b3c4d5e6f70812"
RID_B = "9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
RID_C = "c0ffee00-1234-4abc-8def-0123456789ab"


def access(
    request_id: str,
    ts: str,
    path: str,
    status: int,
    duration: float,
    *,
    route: str | None = None,
    method: str = "GET",
    **extra: Any,
) -> dict[str, Any]:
    """An access event as reqlog writes it."""
    level = "error" if status >= 500 else "warning" if status >= 400 else "info"
    return {
        "event": "request_completed",
        "level": level,
        "timestamp": ts,
        "logger": "reqlog.access",
        "request_id": request_id,
        "method": method,
        "path": path,
        "route": route if route is not None else path,
        "query": "",
        "status_code": status,
        "duration_ms": duration,
        "client_ip": "10.0.0.1",
        "user_agent": "curl/8.5.0",
        "http_version": "1.1",
        "response_bytes": 12,
        **extra,
    }


BANNER = "INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)"
LOADING: dict[str, Any] = {
    "event": "loading_item",
    "level": "info",
    "timestamp": "2026-11-24T05:54:20.100000Z",
    "logger": "app.items",
    "request_id": RID_A,
    "item_id": 42,
}
COMPLETED = access(
    RID_A, "2026-11-24T05:54:20.112000Z", "/items/42", 200, 20.0, route="/items/{item_id}"
)
FAILED: dict[str, Any] = {
    "event": "request_failed",
    "level": "error",
    "timestamp": "2026-11-24T05:54:21.000000Z",
    "logger": "reqlog.access",
    "request_id": RID_B,
    "method": "POST",
    "path": "/orders",
    "route": "/orders",
    "query": "",
    "status_code": 500,
    "duration_ms": 5.5,
    "error_type": "ZeroDivisionError",
    "error_message": "division by zero",
    "exception": [
        {
            "exc_type": "ZeroDivisionError",
            "exc_value": "division by zero",
            "frames": [{"filename": "/app/main.py", "lineno": 12, "name": "create_order"}],
        }
    ],
}
SLOW = access(
    RID_C,
    "2026-11-24T05:55:30.000000Z",
    "/reports/7",
    200,
    1500.0,
    route="/reports/{rid}",
    slow=True,
    slow_threshold_ms=1000,
    user_id="u1",
    level="warning",
)
EVENTS: list[dict[str, Any] | str] = [BANNER, LOADING, COMPLETED, FAILED, SLOW]


def write_log(path: Path, items: Sequence[Mapping[str, Any] | str] | None = None) -> Path:
    """Write events (and text lines) to *path*, one per line."""
    lines = [
        item.encode() if isinstance(item, str) else orjson.dumps(item)
        for item in (EVENTS if items is None else items)
    ]
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``reqlog`` in-process; return the exit status, stdout and stderr."""
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def cli(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m reqlog`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "reqlog", *args],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )


VIEW_OUTPUT = """\
INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)
--- 2026-11-24 (UTC) ---
05:54:20.100 [info     ] loading_item request_id=3f2a9c0e item_id=42
05:54:20.112 [info     ] GET /items/42 -> 200 in 20.0 ms request_id=3f2a9c0e client_ip=10.0.0.1
05:54:21.000 [error    ] POST /orders -> 500 in 5.5 ms ZeroDivisionError: division by zero \
request_id=9b1c2d3e
Traceback (most recent call last):
  File "/app/main.py", line 12, in create_order
ZeroDivisionError: division by zero
05:55:30.000 [warning  ] GET /reports/7 -> 200 in 1500.0 ms (slow) request_id=c0ffee00 \
client_ip=10.0.0.1 user_id=u1
"""


# The uvicorn banner in EVENTS is not a JSON event: the DuckDB commands count it.
SKIPPED_ONE = (
    "reqlog: skipped 1 line(s) that are not JSON log events"
    " (text such as a server banner, malformed or truncated JSON)\n"
)


# view ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["app.log", "app.log.gz"])
def test_view_plain_and_gzip(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    log = write_log(tmp_path / name)

    assert run(["view", str(log), "--color", "never"], capsys) == (0, VIEW_OUTPUT, "")


def test_view_colours_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    log = write_log(tmp_path / "app.log")

    status, out, _ = run(["view", str(log), "--color", "always", "--status", "5xx"], capsys)

    assert status == 0
    assert "\x1b[31;1m500\x1b[0m" in out
    assert "\x1b[" not in run(["view", str(log)], capsys)[1]  # captured output is no TTY


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--status", "5xx"], ["POST /orders"]),
        (["--status", "200,>=500"], ["GET /items/42", "POST /orders", "GET /reports/7"]),
        (["--request-id", "3F2A9C0E"], ["loading_item", "GET /items/42"]),
        (["--request-id", "c0ffee001234"], ["GET /reports/7"]),
        (["--level", "warning"], ["POST /orders", "GET /reports/7"]),
        (["--slow"], ["GET /reports/7"]),
        (["--route", "/items/*"], ["GET /items/42"]),
        (["--route", "/orders"], ["POST /orders"]),
        (["--since", "2026-11-24T05:54:21"], ["POST /orders", "GET /reports/7"]),
        (["--until", "2026-11-24 05:54:21"], ["loading_item", "GET /items/42"]),
    ],
)
def test_view_filters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], shown: list[str]
) -> None:
    log = write_log(tmp_path / "app.log")

    status, out, _ = run(["view", str(log), *args], capsys)

    assert status == 0
    lines = [line for line in out.splitlines() if line[:2].isdigit()]
    assert len(lines) == len(shown)
    for line, text in zip(lines, shown, strict=True):
        assert text in line
    assert "Uvicorn" not in out  # text lines are shown only without filters


def test_view_json_prints_matching_lines_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "app.log")

    status, out, _ = run(["view", str(log), "--json", "--request-id", RID_A], capsys)

    assert status == 0
    assert [orjson.loads(line) for line in out.splitlines()] == [LOADING, COMPLETED]


def test_view_counts_malformed_and_binary_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "mixed.log"
    good = orjson.dumps(LOADING)
    log.write_bytes(b'{"event": "trunc\n' + good + b"\n\x00\x01\xff\xfe binary\n[1, 2]\n")

    status, out, err = run(["view", str(log)], capsys)

    assert status == 0
    # JSON that is not an object is not an event: it passes through like any text line.
    assert out.endswith("loading_item request_id=3f2a9c0e item_id=42\n[1, 2]\n")
    assert "binary" not in out
    assert err == "reqlog: skipped 2 malformed line(s)\n"


def test_view_odd_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "odd.log"
    log.write_bytes(b'{}\n{"event": 5, "level": "WARNING", "n": null, "tags": ["a b"]}\n')

    assert run(["view", str(log)], capsys) == (
        0,
        '- [-        ] -\n- [warning  ] 5 n=None tags=["a b"]\n',
        "",
    )


def test_view_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["view", "--status", "teapot"])

    assert exc.value.code == 2
    assert "not a status filter: 'teapot'" in capsys.readouterr().err


def test_view_reads_stdin() -> None:
    data = b"".join(orjson.dumps(e) + b"\n" for e in EVENTS if not isinstance(e, str))

    result = cli(["view", "--status", "5xx"], stdin=data)

    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith(
        "--- 2026-11-24 (UTC) ---\n05:54:21.000 [error    ] POST /orders -> 500 in 5.5 ms"
    )


def test_view_follow_shows_appended_lines(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log", [LOADING])
    proc = subprocess.Popen(
        [sys.executable, "-m", "reqlog", "view", "-f", str(log), "--color", "never"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = _line_queue(proc)
    try:
        assert _next_line_with(lines, b"loading_item")
        with log.open("ab") as fh:
            fh.write(orjson.dumps(COMPLETED)[:40])  # half a line: not shown yet
            fh.flush()
            time.sleep(0.3)
            fh.write(orjson.dumps(COMPLETED)[40:] + b"\n")
        assert _next_line_with(lines, b"GET /items/42") == (
            b"05:54:20.112 [info     ] GET /items/42 -> 200 in 20.0 ms"
            b" request_id=3f2a9c0e client_ip=10.0.0.1\n"
        )
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert (proc.returncode, err) == (0, b"")


def _line_queue(proc: subprocess.Popen[bytes]) -> queue.Queue[bytes]:
    """Lines of the process's stdout, read by a thread so that waiting for one can time out."""
    lines: queue.Queue[bytes] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in iter(stdout.readline, b""):
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_line_with(lines: queue.Queue[bytes], needle: bytes, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if needle in line:
            return line
    pytest.fail(f"no line with {needle!r} within {timeout}s")


# stats --------------------------------------------------------------------------------------


def _stats_log(path: Path) -> Path:
    items: list[dict[str, Any] | str] = []
    for i in range(1, 101):  # durations 1..100 ms, one 404 and one 503, over 70 s
        status = 404 if i == 50 else 503 if i == 100 else 200
        ts = f"2026-11-24T06:{i * 7 // 600:02d}:{i * 7 % 600 / 10:09.6f}Z"
        route = "/items/{item_id}"
        items.append(access(f"{i:032x}", ts, f"/items/{i}", status, float(i), route=route))
    items.append(access("f" * 32, "2026-11-24T06:00:00Z", "/health", 200, 0.5, sample_rate=0.25))
    items.append({"event": "cache_miss", "level": "info", "timestamp": "2026-11-24T06:00:00Z"})
    return write_log(path, items)


def test_stats_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _stats_log(tmp_path / "app.log")

    status, out, err = run(["stats", str(log), "--json"], capsys)

    assert (status, err) == (0, "")
    doc = orjson.loads(out)
    assert doc["groups"][0] == {
        "key": "GET /items/{item_id}",
        "count": 100.0,
        "requests_per_s": 1.429,
        "rate_4xx": 0.01,
        "rate_5xx": 0.01,
        "p50_ms": 50.0,
        "p95_ms": 95.0,
        "p99_ms": 99.0,
        "max_ms": 100.0,
        "slow": 0.0,
        "total_ms": 5050.0,
        "events": 100,
    }
    # One event kept at sample_rate 0.25 stands for four requests.
    assert (
        doc["groups"][1]["key"],
        doc["groups"][1]["count"],
        doc["groups"][1]["events"],
    ) == ("GET /health", 4.0, 1)
    assert (doc["total"]["count"], doc["access_events"]) == (104.0, 101)
    assert doc["span_s"] == 70.0


def test_stats_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _stats_log(tmp_path / "app.log")

    status, out, _ = run(["stats", str(log), "--by", "status", "--sort", "count"], capsys)

    assert status == 0
    assert out == (
        "104 requests (101 access events), 2026-11-24 06:00:00 to 2026-11-24 06:01:10 UTC\n"
        "durations in ms; sorted by count\n"
        "status  count  req/s     4xx     5xx   p50   p95   p99   max  slow  total\n"
        "200       102   1.46       -       -  47.0  94.0  98.0  99.0     -   4.9s\n"
        "404         1   0.01  100.0%       -  50.0  50.0  50.0  50.0     -   0.1s\n"
        "503         1   0.01       -  100.0%   100   100   100   100     -   0.1s\n"
        "-------------------------------------------------------------------------\n"
        "(all)     104   1.49    1.0%    1.0%  48.0  95.0  99.0   100     -   5.1s\n"
    )


def test_stats_one_thread_matches_many(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _stats_log(tmp_path / "app.log")

    one = run(["stats", str(log), "--json", "--jobs", "1"], capsys)

    assert one == run(["stats", str(log), "--json", "--jobs", "2"], capsys)


def test_stats_reads_ecs_and_otel_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Events written through reqlog's own schema processors are read as the flat ones."""
    from reqlog.schemas import ECSSchema, OTelSchema

    flat = access(RID_A, "2026-11-24T06:00:00.000000Z", "/x/1", 503, 2.5, route="/x/{n}")
    log = write_log(
        tmp_path / "mixed.log",
        [
            ECSSchema()(None, "error", dict(flat)),
            OTelSchema()(None, "error", {**flat, "duration_ms": 7.5, "status_code": 200}),
            flat,
        ],
    )

    status, out, _ = run(["stats", str(log), "--json"], capsys)

    group = orjson.loads(out)["groups"][0]
    assert (status, group["key"], group["count"], group["max_ms"], group["rate_5xx"]) == (
        0,
        "GET /x/{n}",
        3.0,
        7.5,
        round(2 / 3, 4),
    )


# trace --------------------------------------------------------------------------------------


def test_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "app.log")

    assert (
        0,
        f"request {RID_A}: 2 event(s)\n"
        "  GET /items/42 -> 200 in 20.0 ms (route /items/{item_id}, client 10.0.0.1)\n"
        "+    8.000 ms [info     ] loading_item item_id=42\n"
        "+   20.000 ms [info     ] GET /items/42 -> 200 in 20.0 ms client_ip=10.0.0.1\n",
        "",
    ) == run(["trace", RID_A[:6], str(log)], capsys)


def test_trace_json_and_uuid_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "app.log.gz")

    status, out, _ = run(["trace", RID_C.replace("-", "").upper(), str(log), "--json"], capsys)

    assert status == 0
    assert [orjson.loads(x) for x in out.splitlines()] == [{"offset_ms": 1500.0, **SLOW}]


def test_trace_not_found_and_ambiguous(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(
        tmp_path / "app.log",
        [*EVENTS, access("3f2a9c0e" + "0" * 24, "2026-11-24T06:00:00Z", "/", 200, 1.0)],
    )

    assert run(["trace", "abcdef", str(log)], capsys) == (
        1,
        "",
        "reqlog: no events with request ID 'abcdef'\n",
    )
    status, _, err = run(["trace", "3f2a9c0e", str(log)], capsys)
    assert status == 1
    assert err.startswith("reqlog: '3f2a9c0e' matches 2 requests; give more of the ID:\n")


# report -------------------------------------------------------------------------------------


def _report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    hostile = access(
        RID_A, "2026-11-24T05:56:00Z", "/<script>alert(1)</script>", 503, 3.0, route=""
    )
    log = write_log(tmp_path / "app.log", [*EVENTS, hostile])
    out = tmp_path / "report.html"
    status, _, err = run(["report", str(log), "-o", str(out)], capsys)
    assert (0, f"{SKIPPED_ONE}reqlog: wrote {out} (4 access events)\n") == (status, err)
    return out.read_text()


def test_report_is_self_contained_and_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = _report(tmp_path, capsys)

    assert page.count('<svg class="chart"') == 3
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for fetch in ('src="http', "src='http", 'href="http', "url(http", "@import"):
        assert fetch not in page
    assert "ZeroDivisionError" in page
    assert RID_B in page


@pytest.mark.slow
def test_report_charts_draw_in_headless_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _report(tmp_path, capsys)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]

    dom = subprocess.run(
        [browser, *flags, "--dump-dom", (tmp_path / "report.html").as_uri()],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()

    assert 'data-charts-drawn="3"' in dom
    assert dom.count("<rect") >= 4


# bad input ----------------------------------------------------------------------------------


def test_binary_garbage_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 40)  # 41 "lines": it holds 40 newline bytes

    assert run(["view", str(junk)], capsys) == (1, "", "reqlog: skipped 41 malformed line(s)\n")
    status, _, err = run(["stats", str(junk)], capsys)
    assert (status, err) == (
        1,
        "reqlog: skipped 41 line(s) that are not JSON log events"
        " (text such as a server banner, malformed or truncated JSON)\n"
        "reqlog: no access events (request_completed/request_failed/websocket_* from"
        " reqlog.access); is this a reqlog JSON log? (41 line(s) were not JSON events)\n",
    )


def test_missing_file_is_reported_and_others_still_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "app.log")
    missing = tmp_path / "nope.log"

    status, out, err = run(["stats", str(missing), str(log), "--json"], capsys)

    assert (0, f"reqlog: {missing}: no such file or directory\n{SKIPPED_ONE}") == (status, err)
    assert orjson.loads(out)["access_events"] == 3
    assert (1, "", f"reqlog: {missing}: no such file or directory\n") == run(
        ["view", str(missing)], capsys
    )


def test_truncated_gzip_keeps_what_was_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = write_log(tmp_path / "app.log.gz").read_bytes()
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(whole[: len(whole) - 12])

    status, out, err = run(["view", str(cut)], capsys)

    assert status == 0
    assert "loading_item" in out
    # The cut-off last line is counted, not shown.
    assert err == (
        f"reqlog: {cut}: gzip stream is truncated; read what was there\n"
        "reqlog: skipped 1 malformed line(s)\n"
    )


def test_huge_line_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_input, "MAX_LINE", 1000)
    monkeypatch.setattr(_input, "BLOCK_SIZE", 256)
    huge = {**LOADING, "blob": "x" * 5000}
    log = write_log(tmp_path / "app.log", [LOADING, huge, COMPLETED])

    status, out, err = run(["view", str(log), "--json"], capsys)

    assert status == 0
    assert [orjson.loads(line) for line in out.splitlines()] == [LOADING, COMPLETED]
    assert err == "reqlog: skipped 1 line(s) longer than 1,000 bytes\n"
