"""Outputs: the background writer, overflow, flush, files and rotation, failing sinks."""

from __future__ import annotations

import errno
import fcntl
import io
import itertools
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from freezegun import freeze_time
from hypothesis import given
from hypothesis import strategies as st
from starlette.types import Message

import reqlog
from reqlog import _state, output


def read_events(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def current() -> output.Output:
    return _state.STATE.output


# --- a pipe nobody reads --------------------------------------------------------------------


def fill(fd: int) -> None:
    """Fill a non-blocking pipe to the last byte, so that any write to it blocks."""
    for size in (4096, 512, 64, 8, 1):
        try:
            while True:
                os.write(fd, b"\0" * size)
        except BlockingIOError:
            pass


class StalledPipe:
    """An os.pipe whose buffer is full: the next write to it blocks until ``drain()``."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        flags = fcntl.fcntl(self.write_fd, fcntl.F_GETFL)
        fcntl.fcntl(self.write_fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        fill(self.write_fd)
        fcntl.fcntl(self.write_fd, fcntl.F_SETFL, flags)
        self.stream = open(self.write_fd, "wb", buffering=0)  # noqa: SIM115
        self.data = bytearray()
        self._reader: threading.Thread | None = None

    def drain(self) -> None:
        """Start reading, in a thread, until the write end closes."""
        if self._reader is not None:
            return

        def read() -> None:
            while chunk := os.read(self.read_fd, 65536):
                self.data += chunk

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def lines(self) -> list[bytes]:
        """Everything written, once the write end is closed."""
        self.close()
        return bytes(self.data).lstrip(b"\0").splitlines()

    def close(self) -> None:
        self.drain()
        self.stream.close()
        assert self._reader is not None
        self._reader.join(5)
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


@pytest.fixture
def stalled() -> Iterator[StalledPipe]:
    pipe = StalledPipe()
    yield pipe
    pipe.drain()
    reqlog.flush(timeout=5)
    reqlog.configure(output=io.BytesIO())
    pipe.close()


def wait_until_writer_blocked(out: output.Output) -> None:
    """The writer took everything queued and sits in a write() that cannot finish.

    The queue is emptied only by the writer taking it whole, under the lock, and what it took
    it writes before it takes anything else: from then on nothing queued leaves the queue.
    """
    deadline = time.monotonic() + 30
    while out._ends or out._idle:
        assert time.monotonic() < deadline, "the writer never picked the line up"
        time.sleep(0.005)


# --- background writing ------------------------------------------------------------------------


def test_file_output_is_written_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    reqlog.configure(output=str(path), format="json")
    log = reqlog.get_logger("orders")

    for i in range(500):
        log.info("tick", i=i)

    assert current().background
    assert reqlog.flush(timeout=5)
    assert [e["i"] for e in read_events(path)] == list(range(500))
    assert reqlog.output_stats() == {"accepted": 500, "written": 500, "dropped": 0, "errors": 0}


def test_lifespan_shutdown_switches_to_writing_through(tmp_path: Path) -> None:
    """After the app's lifespan ends, the server's last lines are written at once: a server
    that then dies of the SIGTERM it re-raises skips atexit."""
    path = tmp_path / "app.log"
    reqlog.configure(output=str(path), format="json")
    log = reqlog.get_logger("server")
    for i in range(100):
        log.info("tick", i=i)
    current().write_through(timeout=5)
    log.info("Application shutdown complete.")
    # Read without flush(): written before info() returned.
    assert [e.get("i", e["event"]) for e in read_events(path)] == [
        *range(100),
        "Application shutdown complete.",
    ]
    assert reqlog.output_stats() == {"accepted": 101, "written": 101, "dropped": 0, "errors": 0}


def test_user_streams_are_written_synchronously_by_default(log_output: Any) -> None:
    log_output.configure()

    reqlog.get_logger("t").info("now")

    assert not current().background
    assert log_output.stream.getvalue().count(b"\n") == 1


def test_background_can_be_chosen_either_way(tmp_path: Path) -> None:
    reqlog.configure(output=str(tmp_path / "a.log"), background=False)
    assert not current().background
    reqlog.configure(output=io.BytesIO(), background=True)
    assert current().background


def test_environment_chooses_background_queue_and_overflow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REQLOG_BACKGROUND", "false")
    monkeypatch.setenv("REQLOG_QUEUE_SIZE", "123")
    monkeypatch.setenv("REQLOG_QUEUE_BYTES", "45678")
    monkeypatch.setenv("REQLOG_OVERFLOW", "block")
    reqlog.configure(output=str(tmp_path / "a.log"))

    out = current()
    assert (out.background, out.queue_size, out.queue_bytes, out.overflow) == (
        False,
        123,
        45678,
        "block",
    )
    monkeypatch.setenv("REQLOG_QUEUE_BYTES", "-1")
    with pytest.raises(ValueError, match=r"^queue_bytes \(from REQLOG_QUEUE_BYTES\): expected"):
        reqlog.configure(output=str(tmp_path / "a.log"))


def test_several_outputs_get_every_line(tmp_path: Path) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    reqlog.configure(output=[str(first), str(second)], format="json")

    reqlog.get_logger("t").info("both", n=1)
    reqlog.flush(timeout=5)

    assert read_events(first) == read_events(second)
    assert [e["event"] for e in read_events(first)] == ["both"]


def test_reconfigure_writes_what_the_old_output_accepted(tmp_path: Path) -> None:
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    reqlog.configure(output=str(old), format="json")
    for i in range(100):
        reqlog.get_logger("t").info("before", i=i)

    reqlog.configure(output=str(new), format="json")
    reqlog.get_logger("t").info("after")
    reqlog.flush(timeout=5)

    assert len(read_events(old)) == 100
    assert [e["event"] for e in read_events(new)] == ["after"]


def test_flush_waits_for_a_slow_sink_and_honours_its_timeout() -> None:
    class SlowSink(output.Sink):
        def __init__(self) -> None:
            self.lines: list[bytes] = []

        def write(self, data: bytes) -> None:
            time.sleep(0.3)
            self.lines += data.splitlines()

    sink = SlowSink()
    out = output.Output([sink], background=True)
    out.write(b"one\n")

    assert out.flush(timeout=0.01) is False
    assert out.flush(timeout=5) is True
    assert sink.lines == [b"one"]
    assert out.stats() == {"accepted": 1, "written": 1, "dropped": 0, "errors": 0}
    out.close()


# --- overflow ---------------------------------------------------------------------------------


def test_a_stalled_sink_never_blocks_the_caller_and_drops_are_counted(
    stalled: StalledPipe,
) -> None:
    reqlog.configure(output=stalled.stream, background=True, queue_size=100, format="json")
    log = reqlog.get_logger("t")
    log.info("blocker")
    wait_until_writer_blocked(current())

    started = time.monotonic()
    for i in range(1000):
        log.info("tick", i=i)
    assert time.monotonic() - started < 5  # it returned at all: the pipe is still full

    stats = reqlog.output_stats()
    # Lines below warning stop at 90% of the queue. The counters count events: the
    # logs_dropped notice to come is not one.
    assert stats == {"accepted": 1001, "written": 0, "dropped": 910, "errors": 0}
    assert len(current()._ends) == 90

    stalled.drain()
    assert reqlog.flush(timeout=5)
    log.info("after")
    assert reqlog.flush(timeout=5)
    events = [orjson.loads(line) for line in stalled.lines()]

    assert [e["i"] for e in events if e["event"] == "tick"] == list(range(90))
    notices = [e for e in events if e["event"] == "logs_dropped"]
    assert notices == [
        {
            "event": "logs_dropped",
            "count": 910,
            "reason": "queue_full",
            "logger": "reqlog",
            "level": "warning",
            "timestamp": notices[0]["timestamp"],
        }
    ]
    assert events[-1]["event"] == "after"
    stats = reqlog.output_stats()
    assert stats == {"accepted": 1002, "written": 92, "dropped": 910, "errors": 0}
    assert stats["accepted"] == stats["written"] + stats["dropped"]


def test_warnings_and_errors_are_the_last_to_go(stalled: StalledPipe) -> None:
    reqlog.configure(output=stalled.stream, background=True, queue_size=10, format="json")
    log = reqlog.get_logger("t")
    log.info("blocker")
    wait_until_writer_blocked(current())

    for i in range(9):
        log.info("fill", i=i)
    log.info("dropped_info")
    log.warning("kept_warning")
    log.error("dropped_error")

    stalled.drain()
    assert reqlog.flush(timeout=5)
    events = [orjson.loads(line)["event"] for line in stalled.lines()]
    assert events == ["blocker", *["fill"] * 9, "kept_warning", "logs_dropped"]
    assert reqlog.output_stats()["dropped"] == 2


def test_stdlib_warnings_keep_their_priority(stalled: StalledPipe) -> None:
    import logging

    reqlog.configure(output=stalled.stream, background=True, queue_size=10, format="json")
    logging.getLogger("lib").warning("blocker")
    wait_until_writer_blocked(current())

    for _ in range(10):
        logging.getLogger("lib").info("fill")
    logging.getLogger("lib").warning("kept")

    stalled.drain()
    reqlog.flush(timeout=5)
    events = [orjson.loads(line)["event"] for line in stalled.lines()]
    assert events == ["blocker", *["fill"] * 9, "kept", "logs_dropped"]


def test_overflow_block_waits_for_room_instead_of_dropping(stalled: StalledPipe) -> None:
    reqlog.configure(
        output=stalled.stream, background=True, queue_size=2, overflow="block", format="json"
    )
    log = reqlog.get_logger("t")
    log.info("blocker")
    wait_until_writer_blocked(current())
    log.info("one")
    log.info("two")

    waiting = threading.Thread(target=log.info, args=("three",))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()

    stalled.drain()
    waiting.join(5)
    assert not waiting.is_alive()
    assert reqlog.flush(timeout=5)
    events = [orjson.loads(line)["event"] for line in stalled.lines()]
    assert events == ["blocker", "one", "two", "three"]
    assert reqlog.output_stats()["dropped"] == 0


def test_queued_lines_cost_their_bytes_not_the_renderers_allocations(
    stalled: StalledPipe,
) -> None:
    """orjson hands out every line in an 8 KB allocation: 10,000 queued access events held
    80 MB. The queue copies them into one buffer."""
    import tracemalloc

    reqlog.configure(output=stalled.stream, background=True, format="json")
    log = reqlog.get_logger("reqlog.access")
    log.info("blocker")
    wait_until_writer_blocked(current())
    fields = {
        "method": "GET",
        "path": "/items/42",
        "route": "/items/{item_id}",
        "status_code": 200,
        "duration_ms": 1.5,
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    }
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            log.info("request_completed", **fields)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    queued = len(current()._ends)
    assert queued == 9_000  # lines below warning stop at 90% of queue_size
    line_bytes = len(current()._buf) / queued
    assert grown < queued * (line_bytes + 8) * 1.3  # the buffer's own slack, and little else


def test_the_queue_is_bounded_in_bytes_too(stalled: StalledPipe) -> None:
    reqlog.configure(output=stalled.stream, background=True, queue_bytes=100_000, format="json")
    log = reqlog.get_logger("t")
    log.info("blocker")
    wait_until_writer_blocked(current())

    for i in range(500):
        log.info("big", i=i, pad="x" * 1000)  # about 1.1 KB each
    queued_info = len(current()._ends)
    for i in range(30):
        log.error("big_error", i=i, pad="x" * 1000)
    kept_errors = len(current()._ends) - queued_info

    # Lines below warning stop at 90% of queue_bytes; warnings and errors get the rest.
    assert 80 <= queued_info <= 90_000 // 1000
    assert 1 <= kept_errors < 30
    assert len(current()._buf) <= 100_000
    stats = reqlog.output_stats()
    assert stats["dropped"] == (500 - queued_info) + (30 - kept_errors)
    stalled.drain()
    assert reqlog.flush(timeout=5)
    events = [orjson.loads(line) for line in stalled.lines()]
    assert [e["i"] for e in events if e["event"] == "big_error"] == list(range(kept_errors))
    assert events[-1]["event"] == "logs_dropped"
    assert events[-1]["count"] == stats["dropped"]


def test_a_line_longer_than_queue_bytes_is_written_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    reqlog.configure(output=str(path), queue_bytes=1000, format="json")
    reqlog.get_logger("t").info("huge", pad="x" * 5000)
    assert reqlog.flush(timeout=5)
    assert [e["event"] for e in read_events(path)] == ["huge"]


# --- failing sinks --------------------------------------------------------------------------


class FlakySink(output.Sink):
    """A disk that is full until it is not."""

    name = "flaky"

    def __init__(self) -> None:
        self.full = True
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.lines += data.splitlines()


def test_a_failing_sink_is_counted_reported_once_and_resumes(
    capfd: pytest.CaptureFixture[str],
) -> None:
    sink = FlakySink()
    out = output.Output([sink], background=True)
    for i in range(3):
        out.write(b'{"event":"lost"}\n')
        assert out.flush(timeout=5)
        assert out.stats()["errors"] == i + 1

    sink.full = False
    out.write(b'{"event":"back"}\n')
    assert out.flush(timeout=5)
    out.write(b'{"event":"again"}\n')
    assert out.flush(timeout=5)

    assert [orjson.loads(line)["event"] for line in sink.lines] == ["back", "logs_dropped", "again"]
    assert orjson.loads(sink.lines[1])["count"] == 3
    assert orjson.loads(sink.lines[1])["reason"] == "sink_error"
    assert out.stats() == {"accepted": 5, "written": 2, "dropped": 3, "errors": 3}
    err = capfd.readouterr().err
    assert err.count("reqlog: cannot write to flaky") == 1
    assert "No space left on device" in err
    out.close()


def test_disk_full_never_breaks_a_request(capfd: pytest.CaptureFixture[str]) -> None:
    reqlog.configure(output="/dev/full", format="json")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.get("/")
    async def index() -> dict[str, bool]:
        return {"ok": True}

    import asyncio

    async def call() -> int:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/")).status_code

    assert asyncio.run(call()) == 200
    assert reqlog.flush(timeout=5)
    stats = reqlog.output_stats()
    assert stats["written"] == 0
    assert stats["dropped"] == stats["accepted"] >= 1
    assert stats["errors"] >= 1
    assert "No space left on device" in capfd.readouterr().err


def test_a_closed_pipe_counts_and_stays_closed(capfd: pytest.CaptureFixture[str]) -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    with open(write_fd, "wb", buffering=0) as stream:
        out = output.Output([output.StreamSink(stream)], background=True)
        for _ in range(5):
            out.write(b"x\n")
        assert out.flush(timeout=5)
        assert out.stats()["dropped"] == 5
        out.close()
    assert capfd.readouterr().err.count("reqlog: cannot write to") == 1


def test_a_missing_stdout_is_a_broken_sink_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Python started with fd 1 closed has sys.stdout = None.
    monkeypatch.setattr(sys, "stdout", None)
    reqlog.configure(output="stdout", format="json")
    reqlog.get_logger("t").info("nowhere")
    assert reqlog.flush(timeout=5)
    assert reqlog.output_stats()["dropped"] == 1
    assert "cannot write to stdout" in capfd.readouterr().err


# --- files ------------------------------------------------------------------------------------


def test_file_output_appends(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b'{"event":"earlier"}\n')
    reqlog.configure(output=str(path), format="json")
    reqlog.get_logger("t").info("later")
    reqlog.flush(timeout=5)
    assert [e["event"] for e in read_events(path)] == ["earlier", "later"]


def test_rotation_by_size_keeps_whole_lines_and_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    reqlog.configure(output=str(path), format="json", rotate_bytes=2000, backups=2)
    log = reqlog.get_logger("t")
    for i in range(200):
        log.info("tick", i=i)
        if i % 10 == 0:
            reqlog.flush(timeout=5)
    reqlog.flush(timeout=5)

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["app.log", "app.log.1", "app.log.2"]
    seen = []
    for name in ["app.log.2", "app.log.1", "app.log"]:
        file = tmp_path / name
        assert file.stat().st_size <= 2000
        seen += [e["i"] for e in read_events(file)]
    assert seen == list(range(seen[0], 200))


def test_rotation_by_time(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    # The handler starts counting from the file's mtime: a log file from earlier that day.
    path.touch()
    yesterday = datetime(2024, 5, 1, 23, 0, tzinfo=UTC).timestamp()
    os.utime(path, (yesterday, yesterday))
    with freeze_time("2024-05-01 23:59:58") as frozen:
        reqlog.configure(output=str(path), format="json", rotate_when="midnight", backups=3)
        reqlog.get_logger("t").info("may")
        reqlog.flush(timeout=5)
        frozen.tick(5)
        reqlog.get_logger("t").info("june")
        reqlog.flush(timeout=5)

    assert [e["event"] for e in read_events(tmp_path / "app.log.2024-05-01")] == ["may"]
    assert [e["event"] for e in read_events(path)] == ["june"]


def test_a_file_moved_by_logrotate_is_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "REOPEN_CHECK_S", 0.0)
    path = tmp_path / "app.log"
    reqlog.configure(output=str(path), format="json")
    reqlog.get_logger("t").info("before")
    reqlog.flush(timeout=5)

    path.rename(tmp_path / "app.log.1")
    reqlog.get_logger("t").info("after")
    reqlog.flush(timeout=5)

    assert [e["event"] for e in read_events(tmp_path / "app.log.1")] == ["before"]
    assert [e["event"] for e in read_events(path)] == ["after"]


def test_rotation_is_refused_when_several_processes_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    with pytest.raises(ValueError, match=r"rotate_bytes: .*WEB_CONCURRENCY=4.*logrotate"):
        reqlog.configure(output=str(tmp_path / "app.log"), rotate_bytes=10_000, backups=3)

    monkeypatch.delenv("WEB_CONCURRENCY")
    monkeypatch.setattr(sys, "argv", ["uvicorn", "app:app", "--workers", "4"])
    with pytest.raises(ValueError, match=r"rotate_when: .*--workers 4"):
        reqlog.configure(output=str(tmp_path / "app.log"), rotate_when="midnight")

    # Plain appends stay allowed: they are safe across processes.
    reqlog.configure(output=str(tmp_path / "app.log"))


def _configure_rotation_in_child(path: str, result: Any) -> None:
    try:
        reqlog.configure(output=path, rotate_bytes=10_000, backups=3)
        result.put("configured")
    except ValueError as exc:
        result.put(str(exc))


def test_rotation_is_refused_in_a_multiprocessing_worker(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Queue()
    child = ctx.Process(
        target=_configure_rotation_in_child, args=(str(tmp_path / "app.log"), result)
    )
    child.start()
    message = result.get(timeout=30)
    child.join(10)
    assert "started by multiprocessing" in message
    assert "logrotate" in message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue_size": 0}, "queue_size: expected a positive number of lines, got 0"),
        ({"queue_bytes": 0}, "queue_bytes: expected a positive number of bytes, got 0"),
        ({"queue_bytes": "lots"}, "queue_bytes: expected a positive number of bytes, got 'lots'"),
        ({"overflow": "sometimes"}, "overflow: expected 'drop' or 'block', got 'sometimes'"),
        ({"background": "maybe"}, "background: expected True, False or None"),
        ({"rotate_when": "weekly"}, "rotate_when: expected one of"),
        ({"rotate_bytes": -1}, "rotate_bytes: expected a positive number of bytes, got -1"),
        ({"backups": -1}, "backups: expected a number of old files to keep"),
        ({"rotate_bytes": 10, "rotate_when": "H"}, "rotate_bytes: choose rotation by size"),
        ({"rotate_bytes": 10}, "backups: rotate_bytes needs at least 1 backup"),
        ({"output": []}, "output: an empty list writes nowhere"),
    ],
)
def test_bad_output_options_are_refused_at_configure(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    options.setdefault("output", str(tmp_path / "app.log"))
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        reqlog.configure(**options)


# --- flushing on its own ------------------------------------------------------------------------


def test_lifespan_shutdown_flushes() -> None:
    import asyncio

    class SlowSink(output.Sink):
        def __init__(self) -> None:
            self.lines: list[bytes] = []

        def write(self, data: bytes) -> None:
            time.sleep(0.2)
            self.lines += data.splitlines()

    sink = SlowSink()
    reqlog.configure(output=sink, background=True, format="json")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    async def lifespan() -> list[str]:
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent: list[str] = []

        async def receive() -> Message:
            return next(messages)

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                # The server hears "complete" only once the logs are out.
                sent.append(f"complete with {len(sink.lines)} lines written")
            else:
                reqlog.get_logger("t").info("started")

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        return sent

    assert asyncio.run(lifespan()) == ["complete with 1 lines written"]


def test_shutdown_gives_up_on_a_stalled_sink_at_its_deadline(
    stalled: StalledPipe, capfd: pytest.CaptureFixture[str]
) -> None:
    reqlog.configure(output=stalled.stream, background=True, format="json")
    log = reqlog.get_logger("t")
    log.info("blocker")
    wait_until_writer_blocked(current())
    for i in range(10):
        log.info("tick", i=i)

    started = time.monotonic()
    assert current().finish(timeout=0.5) is False
    assert time.monotonic() - started < 5  # it came back at all: the pipe is still full
    assert reqlog.output_stats() == {"accepted": 11, "written": 0, "dropped": 11, "errors": 0}
    # From now on nothing waits: lines are dropped and counted at once, flushes return.
    log.info("later")
    assert current().finish(timeout=5) is False
    assert reqlog.flush(timeout=5)
    assert reqlog.output_stats() == {"accepted": 12, "written": 0, "dropped": 12, "errors": 0}
    err = capfd.readouterr().err
    assert err.count("reqlog: gave up on") == 1
    assert "11 lines not written, counted as dropped (11 dropped since configure())" in err

    # Should the write it gave up on end after all, the count follows.
    stalled.drain()
    deadline = time.monotonic() + 10
    while reqlog.output_stats()["written"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert reqlog.output_stats() == {"accepted": 12, "written": 1, "dropped": 11, "errors": 0}


def test_writing_through_waits_for_each_line_within_the_shutdown_deadline(
    stalled: StalledPipe, capfd: pytest.CaptureFixture[str]
) -> None:
    stalled.drain()
    reqlog.configure(output=stalled.stream, background=True, format="json")
    log = reqlog.get_logger("t")
    log.info("before")
    current().write_through(timeout=0.5)
    log.info("written_through")  # waited for: written before info() returned
    assert reqlog.output_stats()["written"] == 2
    assert capfd.readouterr().err == ""


def test_exit_flushes_what_was_accepted(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    script = textwrap.dedent(
        f"""
        import reqlog
        reqlog.configure(output={str(path)!r}, format="json")
        log = reqlog.get_logger("t")
        for i in range(2000):
            log.info("tick", i=i)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert [e["i"] for e in read_events(path)] == list(range(2000))


def test_sigterm_flushes_then_dies_of_sigterm(tmp_path: Path) -> None:
    import signal

    path = tmp_path / "app.log"
    script = textwrap.dedent(
        f"""
        import os, signal, reqlog
        reqlog.configure(output={str(path)!r}, format="json")
        log = reqlog.get_logger("t")
        for i in range(2000):
            log.info("tick", i=i)
        os.kill(os.getpid(), signal.SIGTERM)
        raise SystemExit("still alive")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True)
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert [e["i"] for e in read_events(path)] == list(range(2000))


def test_a_forked_child_writes_its_own_lines(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    reqlog.configure(output=str(path), format="json")
    reqlog.get_logger("t").info("parent")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            reqlog.get_logger("t").info("child")
            code = 0 if reqlog.flush(timeout=5) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    reqlog.flush(timeout=5)
    assert sorted(e["event"] for e in read_events(path)) == ["child", "parent"]


# --- a disk that fills up, then has room again --------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: writes to it really fail with ENOSPC once it is full."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); the RLIMIT_FSIZE test runs")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        reqlog.configure(output=io.BytesIO())  # let go of the file before unmounting
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(mount: Path, leave: int) -> Path:
    """Fill the file system at ``mount`` but for about ``leave`` bytes."""
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    filler = mount / "filler"
    filler.write_bytes(b"\0" * (free - leave))
    return filler


def check_missing_lines_are_counted(path: Path, sent: int) -> None:
    """Every line of ``path`` is one whole event; the events missing are exactly those that
    output_stats() and the logs_dropped notices count."""
    events = read_events(path)  # a torn or glued line fails to parse here
    ticks = [e["i"] for e in events if e["event"] == "tick"]
    notices = [e for e in events if e["event"] == "logs_dropped"]
    stats = reqlog.output_stats()
    assert ticks == sorted(set(ticks))
    missing = sent - len(ticks)
    assert missing > 0
    assert {n["reason"] for n in notices} == {"sink_error"}
    assert sum(n["count"] for n in notices) == missing
    assert stats["dropped"] == missing
    assert stats["accepted"] == stats["written"] + stats["dropped"] == sent


def test_disk_full_then_freed_loses_whole_lines_and_counts_them_exactly(
    small_disk: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = small_disk / "app.log"
    reqlog.configure(output=str(path), format="json")
    filler = fill_disk(small_disk, leave=12_000)
    log = reqlog.get_logger("t")
    for i in range(200):
        log.info("tick", i=i, pad="x" * 150)  # about 40 KB in all
    assert reqlog.flush(timeout=10)
    assert 0 < reqlog.output_stats()["dropped"] < 200

    filler.unlink()  # room again
    for i in range(200, 220):
        log.info("tick", i=i)
    assert reqlog.flush(timeout=10)

    check_missing_lines_are_counted(path, 220)
    assert [e["i"] for e in read_events(path) if e["event"] == "tick"][-20:] == list(
        range(200, 220)
    )
    assert capfd.readouterr().err.count("No space left on device") == 1


def test_disk_full_when_writing_synchronously_leaves_no_torn_line(small_disk: Path) -> None:
    path = small_disk / "app.log"
    reqlog.configure(output=str(path), format="json", background=False)
    filler = fill_disk(small_disk, leave=12_000)
    log = reqlog.get_logger("t")
    for i in range(100):
        log.info("tick", i=i, pad="x" * 300)
    filler.unlink()
    log.info("tick", i=100)

    events = read_events(path)
    ticks = [e["i"] for e in events if e["event"] == "tick"]
    assert ticks[-1] == 100
    assert reqlog.output_stats()["dropped"] == 101 - len(ticks) > 0


def test_a_write_cut_short_by_the_file_size_limit_is_taken_back(tmp_path: Path) -> None:
    """The same fault without root: past RLIMIT_FSIZE a write is cut short (EFBIG)."""
    path = tmp_path / "app.log"
    script = textwrap.dedent(
        f"""
        import json, resource, signal, reqlog
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, hard))
        reqlog.configure(output={str(path)!r}, format="json")
        log = reqlog.get_logger("t")
        for i in range(200):
            log.info("tick", i=i, pad="x" * 150)
        assert reqlog.flush(timeout=10)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        for i in range(200, 220):
            log.info("tick", i=i)
        assert reqlog.flush(timeout=10)
        print(json.dumps(reqlog.output_stats()))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr
    stats = orjson.loads(done.stdout)
    events = read_events(path)
    ticks = [e["i"] for e in events if e["event"] == "tick"]
    notices = [e for e in events if e["event"] == "logs_dropped"]
    assert ticks == sorted(set(ticks))
    assert ticks[-20:] == list(range(200, 220))
    assert stats["dropped"] == sum(n["count"] for n in notices) == 220 - len(ticks) > 0
    assert stats["accepted"] == stats["written"] + stats["dropped"] == 220
    assert b"File too large" in done.stderr


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40),
    limit=st.integers(min_value=1, max_value=200),
)
def test_a_batch_is_cut_into_the_fewest_chunks_of_whole_lines(sizes: list[int], limit: int) -> None:
    ends = array("Q", itertools.accumulate(sizes))
    chunks = output._chunks(ends, limit)
    # Every line once, in order, each chunk starting where the previous one ended.
    assert [(first, start) for first, _, start, _ in chunks] == [
        (0, 0),
        *((last, end) for _, last, _, end in chunks[:-1]),
    ]
    assert chunks[-1][1] == len(ends)
    assert chunks[-1][3] == ends[-1]
    for first, last, start, end in chunks:
        assert end == ends[last - 1]
        # Within the limit unless one line alone is longer; and no room for the next line.
        assert end - start <= limit or last == first + 1
        assert last == len(ends) or ends[last] - start > limit
