"""Outputs: the background writer, overflow, flush, files and rotation, failing sinks."""

from __future__ import annotations

import errno
import fcntl
import io
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from freezegun import freeze_time
from starlette.types import Message

import reqlog
from reqlog import _config, output


def read_events(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def current() -> output.Output:
    return _config.current_output()


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
    while out._queue or out._idle:
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
    assert not current().background
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
    monkeypatch.setenv("REQLOG_OVERFLOW", "block")
    reqlog.configure(output=str(tmp_path / "a.log"))

    out = current()
    assert (out.background, out.queue_size, out.overflow) == (False, 123, "block")


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
    # Lines below warning stop at 90% of the queue; the logs_dropped notice to come is
    # already counted as accepted.
    assert stats == {"accepted": 1002, "written": 0, "dropped": 910, "errors": 0}
    assert len(current()._queue) == 90

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
    assert stats == {"accepted": 1003, "written": 93, "dropped": 910, "errors": 0}
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
    assert out.stats() == {"accepted": 6, "written": 3, "dropped": 3, "errors": 3}
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
