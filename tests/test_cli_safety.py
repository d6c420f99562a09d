"""Hostile logs: no command writes a control or line-separator character taken from a log.

Also the HTML report's escaping, its charts in headless Chromium, ``view``'s WebSocket
sentence, and ``top`` driven in a real terminal (tmux).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reqlog.cli import main
from reqlog.cli._safe import UNSAFE, escape
from tests.test_cli import access, write_log

pytest.importorskip("duckdb")

HOSTILE = "/x\x1b]0;pwned\x07\x1b[2J"
RID = "5" * 32
UNSAFE_CHARS = "\x00\x07\x08\t\n\r\x1b\x7f\x85\x9b\u2028\u2029\u202e"
# Our own colour codes are never asked for here (--color never); a line ends with "\n".
ALLOWED = {"\n"}

hostile_text = st.text(
    alphabet=st.sampled_from([*UNSAFE_CHARS, "a", "/", " ", "[", "]", ";", "=", '"', "é"]),
    min_size=1,
    max_size=12,
)


def hostile_events(text: str) -> list[dict[str, Any]]:
    failed = access(RID, "2026-11-24T06:00:01Z", "/" + text, 500, 2.0, route="/r" + text)
    failed.update(
        event="request_failed",
        error_type="E" + text,
        error_message=text,
        user_id=text,
        user_agent=text,
        exception=[
            {
                "exc_type": "E" + text,
                "exc_value": text,
                "frames": [{"filename": "/app/" + text, "lineno": 1, "name": "f" + text}],
            }
        ],
    )
    return [
        access(
            RID[:-1] + "0",
            "2026-11-24T06:00:00Z",
            "/" + text,
            200,
            1.0,
            route=text,
            method="G" + text,
            **{"k" + text: text},
        )
        | {"query": text},
        {
            "event": text,
            "level": "info",
            "timestamp": "2026-11-24T06:00:00.5Z",
            "request_id": RID,
            "logger": "app" + text,
            text: text,
        },
        failed,
    ]


def run_all(log: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    commands = {
        "view": ["view", str(log), "--color", "never"],
        "view-verbose": ["view", str(log), "--color", "never", "-v"],
        "view-json": ["view", str(log), "--json"],
        "trace": ["trace", RID, str(log), "--color", "never"],
        "trace-json": ["trace", RID, str(log), "--json"],
        "stats": ["stats", str(log)],
        "stats-path": ["stats", str(log), "--by", "path"],
        "stats-user": ["stats", str(log), "--by", "user", "--json"],
        "errors": ["errors", str(log)],
        "errors-json": ["errors", str(log), "--json"],
        "sql": ["sql", "SELECT * FROM requests", str(log)],
        "sql-events": ["sql", "SELECT event, logger, json FROM events", str(log)],
        "sql-csv": ["sql", "--format", "csv", "SELECT path, user_agent FROM requests", str(log)],
        "sql-json": ["sql", "--format", "json", "SELECT path FROM requests", str(log)],
        "diff": ["diff", str(log), str(log), "--all"],
    }
    outputs = {}
    for name, args in commands.items():
        main(args)
        captured = capsys.readouterr()
        outputs[name] = captured.out + captured.err
    return outputs


def assert_safe(outputs: dict[str, str]) -> None:
    for name, text in outputs.items():
        bad = {c for c in UNSAFE.findall(text) if c not in ALLOWED}
        assert not bad, f"{name} wrote {bad!r}"


def test_a_hostile_path_is_shown_escaped_by_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "app.log", hostile_events(HOSTILE))

    outputs = run_all(log, capsys)

    assert_safe(outputs)
    for name in ("view", "trace", "stats-path", "errors", "sql"):
        assert escape(HOSTILE) in outputs[name], name
    assert "/x\\x1b]0;pwned\\x07\\x1b[2J" in outputs["view"]
    # JSON outputs stay valid JSON holding the same value.
    assert orjson.loads(outputs["view-json"].splitlines()[0])["path"] == "/" + HOSTILE
    assert orjson.loads(outputs["sql-json"].splitlines()[0]) == {"path": "/" + HOSTILE}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_text)
def test_no_command_writes_a_control_character_from_a_log(text: str) -> None:
    """Property: whatever a field, a key or an event name holds, the output stays inert."""
    with tempfile.TemporaryDirectory() as tmp:
        log = write_log(Path(tmp) / "app.log", hostile_events(text))
        capture = _Capture()
        with capture:
            for name, args in {
                "view": ["view", str(log), "--color", "never"],
                "trace": ["trace", RID, str(log), "--color", "never"],
                "stats": ["stats", str(log), "--by", "path"],
                "errors": ["errors", str(log)],
                "sql": ["sql", "SELECT * FROM requests", str(log)],
                "diff": ["diff", str(log), str(log), "--all"],
            }.items():
                main(args)
                capture.outputs[name] = capture.take()
    assert_safe(capture.outputs)
    # No line of output can be forged by a newline in the log: each event is one line here
    # (the traceback's lines are ours, and indented or fixed).
    view_lines = capture.outputs["view"].splitlines()
    assert not [
        line
        for line in view_lines
        if line
        and not line[0].isdigit()
        and not line.startswith(("---", "Traceback", "  File", "E"))
    ]


class _Capture:
    """stdout/stderr into strings (capsys cannot be used inside a hypothesis test)."""

    def __init__(self) -> None:
        import io

        self.buffer = io.StringIO()
        self.outputs: dict[str, str] = {}

    def __enter__(self) -> None:
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.buffer

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self.saved

    def take(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


# report -------------------------------------------------------------------------------------

MARKUP = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "</script><script>alert(3)</script>",
    "<svg onload=alert(4)>",
    "' onmouseover='alert(5)",
]


def _hostile_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    events = []
    for i, text in enumerate(MARKUP):
        e = access(
            f"{i:032x}",
            f"2026-11-24T06:00:0{i}Z",
            "/" + text,
            500,
            1.0 + i,
            route="/r" + text,
            user_agent=text,
            user_id=text,
        )
        e.update(event="request_failed", error_type="E", error_message=text)
        events.append(e)
    log = write_log(tmp_path / "app.log", events)
    out = tmp_path / "report.html"
    assert main(["report", str(log), "-o", str(out), "--title", MARKUP[0]]) == 0
    capsys.readouterr()
    return out.read_text()


def test_report_escapes_markup_from_every_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = _hostile_report(tmp_path, capsys)

    # Only the report's own script element; no element or attribute came from the log.
    assert page.count("<script") == 1
    assert page.count("</script>") == 1
    assert not re.search(r"<(img|svg onload)", page)
    assert not re.search(r"<[^>]*\son\w+\s*=", page)  # no event handler in any tag
    for text in MARKUP:
        assert text not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page


def _chromium_dom(page: Path, tmp_path: Path) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
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
    return subprocess.run(
        [browser, *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        timeout=90,
        check=True,
    ).stdout.decode()


def test_report_of_a_log_within_one_minute_draws_every_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fixed: the latency chart was empty (polylines of identical points)."""
    log = write_log(
        tmp_path / "app.log",
        [access(f"{i:032x}", f"2026-11-24T06:00:{i:02d}Z", "/a", 200, 1.0 + i) for i in range(5)],
    )
    page = tmp_path / "report.html"
    assert main(["report", str(log), "-o", str(page)]) == 0
    capsys.readouterr()

    dom = _chromium_dom(page, tmp_path)

    assert 'data-charts-drawn="3"' in dom
    marks = dict(re.findall(r'data-kind="(\w+)"[^>]*data-visible-marks="(\d+)"', dom))
    assert marks == {"requests": "1", "latency": "3", "status": "1"}


def test_hostile_report_renders_without_running_injected_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _hostile_report(tmp_path, capsys)

    dom = _chromium_dom(tmp_path / "report.html", tmp_path)

    assert 'data-charts-drawn="3"' in dom
    assert "<img" not in dom
    assert dom.count("<script") == 1


# view: WebSocket events ---------------------------------------------------------------------


def test_view_shows_websocket_events_as_sentences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fixed: websocket_closed was printed as raw fields."""
    base = {
        "level": "info",
        "logger": "reqlog.access",
        "request_id": RID,
        "path": "/ws/chat",
        "route": "/ws/{room}",
        "user_agent": None,
    }
    log = write_log(
        tmp_path / "ws.log",
        [
            {
                **base,
                "event": "websocket_closed",
                "timestamp": "2026-11-24T06:00:00Z",
                "accepted": True,
                "close_code": 1000,
                "closed_by": "client",
                "duration_ms": 5200.0,
            },
            {
                **base,
                "event": "websocket_closed",
                "timestamp": "2026-11-24T06:00:01Z",
                "accepted": False,
                "close_code": 1008,
                "closed_by": "server",
                "duration_ms": 3.0,
            },
            {
                **base,
                "event": "websocket_failed",
                "timestamp": "2026-11-24T06:00:02Z",
                "level": "error",
                "accepted": True,
                "close_code": 1006,
                "closed_by": None,
                "duration_ms": 12.5,
                "error_type": "RuntimeError",
                "error_message": "boom",
            },
        ],
    )

    main(["view", str(log), "--color", "never"])

    assert capsys.readouterr().out.splitlines()[1:] == [
        "06:00:00 [info     ] WS /ws/chat closed by client (1000) after 5.2 s request_id=55555555",
        "06:00:01 [info     ] WS /ws/chat not accepted (1008) after 3.0 ms request_id=55555555",
        "06:00:02 [error    ] WS /ws/chat failed after 12.5 ms (1006): RuntimeError: boom"
        " request_id=55555555",
    ]


# top in a real terminal ---------------------------------------------------------------------


# The terminal's own size, not the one the test runner's environment may claim.
TERMINAL_ENV = "env -u COLUMNS -u LINES NO_COLOR=1"


def _tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], capture_output=True, check=True, timeout=30, text=True
    ).stdout


def test_top_in_a_real_terminal(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    session = f"reqlog-top-{os.getpid()}"
    socket = str(tmp_path / "tmux.sock")
    env = f"cd {Path.cwd()} && {TERMINAL_ENV} {sys.executable} -m reqlog top {log} --refresh 0.2"
    _tmux("-S", socket, "new-session", "-d", "-s", session, "-x", "140", "-y", "40", env)
    try:
        _wait_for_screen(socket, session, "waiting for access events")
        # 20 requests to /items/{id} (1..20 ms, the 20th a 503) and the hostile path.
        events = [
            access(
                f"{i:032x}",
                "2026-11-24T06:00:00Z",
                f"/items/{i}",
                503 if i == 20 else 200,
                float(i),
                route="/items/{id}",
            )
            for i in range(1, 21)
        ]
        events.append(access(RID, "2026-11-24T06:00:00Z", HOSTILE, 200, 999.0, route=None))
        with log.open("ab") as fh:
            fh.write(b"".join(orjson.dumps(e) + b"\n" for e in events))
        screen = _wait_for_screen(socket, session, "GET /items/{id}")
        row = next(line for line in screen.splitlines() if "GET /items/{id}" in line)
        # 5xx 1/20, p50 10 ms, p95 19 ms, p99 20 ms (nearest rank over 1..20).
        assert row.split()[3:] == ["-", "5.0%", "10.0", "ms", "19.0", "ms", "20.0", "ms"]
        assert "/x\\x1b]0;pwned\\x07\\x1b[2J" in screen
        assert "pwned" not in _tmux("-S", socket, "display-message", "-p", "#{pane_title}")
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], check=False, timeout=30)


def _wait_for_screen(socket: str, session: str, needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux("-S", socket, "capture-pane", "-p", "-t", session)
        if needle in screen:
            return screen
        time.sleep(0.1)
    pytest.fail(f"{needle!r} not on the screen within {timeout}s:\n{screen}")


def test_top_reads_a_pipe(tmp_path: Path) -> None:
    """``uvicorn app:app | reqlog top``: standard input, read to its end; the screen stays."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    log = write_log(
        tmp_path / "app.log",
        [
            access(
                f"{i:032x}",
                "2026-11-24T06:00:00Z",
                "/o",
                200,
                2.0,
                route="/o",
                method="POST",
                sample_rate=0.5,
            )
            for i in range(4)
        ]
        + ["INFO:     Uvicorn running", '{"trunc'],
    )
    socket = str(tmp_path / "tmux.sock")
    command = f"cat {log} | {TERMINAL_ENV} {sys.executable} -m reqlog top --refresh 0.2"
    _tmux(
        "-S",
        socket,
        "new-session",
        "-d",
        "-s",
        "pipe",
        "-x",
        "140",
        "-y",
        "30",
        f"cd {Path.cwd()} && {command}",
    )
    try:
        screen = _wait_for_screen(socket, "pipe", "input ended")
        assert "reqlog top: 6 lines, 4 events read" in screen
        assert "1 malformed lines skipped" in screen
        row = next(line for line in screen.splitlines() if line.startswith("POST /o"))
        # 4 events at sample_rate 0.5 stand for 8 requests.
        assert row.split()[3:] == ["-", "-", "2.0", "ms", "2.0", "ms", "2.0", "ms"]
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], check=False, timeout=30)
