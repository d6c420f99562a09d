"""End to end: real uvicorn processes writing through reqlog's background output."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import listening_socket

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

APP = textwrap.dedent(
    """
    import os

    from fastapi import FastAPI

    import reqlog

    reqlog.configure(format="json", service="e2e")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, exclude_paths=["/_*"])
    PAD = "x" * int(os.environ.get("PAD", "0"))


    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        reqlog.bind(pid=os.getpid())
        if PAD:
            reqlog.bind(pad=PAD)
        return {"id": item_id}


    def rss_kib() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


    @app.get("/_stats")
    async def stats() -> dict[str, int]:
        out = reqlog._state.STATE.output
        return {
            **reqlog.output_stats(),
            "queued": len(out._ends),
            "queued_bytes": len(out._buf),
            "rss_kib": rss_kib(),
        }


    @app.get("/_flush")
    def flush() -> dict[str, object]:
        flushed = reqlog.flush(timeout=10)
        return {"flushed": flushed, **reqlog.output_stats()}
    """
)


class Server:
    """A uvicorn subprocess serving tests' app module on a free port."""

    def __init__(
        self,
        app_dir: Path,
        env: dict[str, str],
        *args: str,
        stdout: Any = subprocess.DEVNULL,
        stderr: Any = subprocess.PIPE,
    ) -> None:
        (app_dir / "app.py").write_text(APP)
        sock = listening_socket()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        command = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(app_dir)]
        command += ["--fd", str(sock.fileno()), *args]
        fds = {sock.fileno(), *(fd for fd in (stdout, stderr) if isinstance(fd, int) and fd > 2)}
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=stdout,
            stderr=stderr,
            pass_fds=tuple(fds),
        )
        sock.close()

    def wait_ready(self) -> None:
        """One request, waiting in the backlog until uvicorn is up: never retried."""
        try:
            response = httpx.get(self.url + "/_stats", timeout=60)
        except httpx.TransportError as exc:
            self.kill()
            pytest.fail(f"uvicorn did not answer ({exc!r}): {self.stderr()}")
        assert response.status_code == 200

    def get(self, path: str) -> dict[str, Any]:
        response = httpx.get(self.url + path, timeout=30)
        assert response.status_code == 200
        result: dict[str, Any] = response.json()
        return result

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def send_requests(url: str, count: int, threads: int = 1, *, keepalive: bool = True) -> list[str]:
    """``count`` requests, each with its own request ID; every one must succeed.

    ``keepalive=False`` opens a connection per request, so that several server processes
    sharing one socket each get a share of them (one worker would keep a keep-alive one).
    """
    ids = [uuid.uuid4().hex for _ in range(count)]
    limits = httpx.Limits(max_keepalive_connections=None if keepalive else 0)

    def run(part: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=30, limits=limits) as client:
            for rid in part:
                response = client.get(f"/items/{len(rid)}", headers={"X-Request-ID": rid})
                assert response.status_code == 200
                assert response.headers["x-request-id"] == rid

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(run, ids[i::threads]) for i in range(threads)]:
            future.result()
    return ids


def parse(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.lstrip(b"\0").splitlines()]


def completed_ids(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["request_id"] for e in events if e["event"] == "request_completed")


def test_every_request_reaches_the_file_and_sigterm_stops_cleanly(
    tmp_path: Path, servers: list[Server]
) -> None:
    log = tmp_path / "app.log"
    server = Server(tmp_path, {"REQLOG_OUTPUT": str(log)})
    servers.append(server)
    server.wait_ready()

    ids = send_requests(server.url, 1000)
    status = server.terminate()

    # uvicorn re-raises SIGTERM after its graceful shutdown.
    assert status == -signal.SIGTERM, server.stderr()
    events = parse(log.read_bytes())
    assert completed_ids(events) == Counter(ids)
    # Logged after the lifespan ended: written by the SIGTERM flush.
    assert events[-1]["event"].startswith("Finished server process")
    assert "Traceback" not in server.stderr()


def test_every_request_reaches_stdout_read_by_another_process(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server(tmp_path, {"REQLOG_OUTPUT": "stdout"}, stdout=subprocess.PIPE)
    servers.append(server)
    assert server.proc.stdout is not None
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(server.proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    server.wait_ready()

    ids = send_requests(server.url, 1000)
    status = server.terminate()
    reader.join(30)

    assert status == -signal.SIGTERM, server.stderr()
    events = parse(bytes(received))
    assert completed_ids(events) == Counter(ids)
    assert events[-1]["event"].startswith("Finished server process")


def stalled_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full: the server's first write to it blocks."""
    read_fd, write_fd = os.pipe()
    flags = fcntl.fcntl(write_fd, fcntl.F_GETFL)
    fcntl.fcntl(write_fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    for size in (4096, 512, 64, 8, 1):
        try:
            while True:
                os.write(write_fd, b"\0" * size)
        except BlockingIOError:
            pass
    fcntl.fcntl(write_fd, fcntl.F_SETFL, flags)
    return read_fd, write_fd


def test_a_pipe_nobody_reads_costs_requests_nothing_and_drops_are_exact(
    tmp_path: Path, servers: list[Server]
) -> None:
    read_fd, write_fd = stalled_pipe()
    queue_size = 50
    env = {"REQLOG_OUTPUT": "stdout", "REQLOG_QUEUE_SIZE": str(queue_size), "PAD": "50000"}
    server = Server(tmp_path, env, stdout=write_fd)
    os.close(write_fd)
    servers.append(server)
    server.wait_ready()
    before = server.get("/_stats")

    # 1000 requests of 50 kB access events each: 50 MB if the queue were unbounded.
    ids = send_requests(server.url, 1000)

    during = server.get("/_stats")
    assert during["written"] == 0
    assert during["queued"] <= queue_size
    assert during["rss_kib"] - before["rss_kib"] < 20_000

    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert server.get("/_flush")["flushed"]
    later = send_requests(server.url, 100)
    after = server.get("/_flush")
    assert server.terminate() == -signal.SIGTERM
    reader.join(30)
    os.close(read_fd)

    events = parse(bytes(received))
    seen = completed_ids(events)
    notices = [e for e in events if e["event"] == "logs_dropped"]
    dropped = sum(e["count"] for e in notices)
    assert {e["reason"] for e in notices} == {"queue_full"}
    # Exact: each request is either written once or counted in a logs_dropped event.
    assert set(seen) <= set(ids) | set(later)
    assert all(n == 1 for n in seen.values())
    assert len(set(ids) & set(seen)) + dropped == len(ids)
    assert dropped == after["dropped"] > 0
    assert after["accepted"] == after["written"] + after["dropped"]
    # Logging resumed once the pipe was read.
    assert set(later) <= set(seen)


@pytest.mark.parametrize(
    ("pad", "requests"),
    [(0, 10_000), (20_000, 1_000)],
    ids=["10k_access_lines", "20MB_of_long_lines"],
)
def test_a_full_queue_costs_about_its_bytes_of_memory(
    tmp_path: Path, servers: list[Server], pad: int, requests: int
) -> None:
    """With the default bounds (10,000 lines, 8 MiB) and a pipe nobody reads, the server's
    memory grows by about the bytes queued; it grew by 37 MB for 10,000 access lines."""
    from reqlog import output

    read_fd, write_fd = stalled_pipe()
    server = Server(tmp_path, {"REQLOG_OUTPUT": "stdout", "PAD": str(pad)}, stdout=write_fd)
    os.close(write_fd)
    servers.append(server)
    server.wait_ready()
    before = server.get("/_stats")

    send_requests(server.url, requests, threads=4)

    during = server.get("/_stats")
    assert during["written"] == 0
    assert during["dropped"] > 0  # the queue is full
    assert during["queued_bytes"] <= output.DEFAULT_QUEUE_BYTES
    grown = (during["rss_kib"] - before["rss_kib"]) * 1024
    # The bytes queued, the buffer's growth slack, and a few MB of allocator noise.
    assert grown < during["queued_bytes"] * 1.25 + 4_000_000, (grown, during)
    server.kill()
    os.close(read_fd)


def test_four_workers_append_whole_lines_to_one_file(tmp_path: Path, servers: list[Server]) -> None:
    log = tmp_path / "app.log"
    # Lines of 3 kB: any torn or interleaved write would show as invalid JSON.
    env = {"REQLOG_OUTPUT": str(log), "PAD": "3000"}
    server = Server(tmp_path, env, "--workers", "4")
    servers.append(server)
    server.wait_ready()
    # The first worker up answers the request above; the others may still be importing the
    # app, and a connection made meanwhile stays with the first one. Start once all four
    # have said so, and give every request its own connection.
    _await_lines(log, b'"event":"Application startup complete."', 4)

    ids = send_requests(server.url, 1000, threads=16, keepalive=False)
    server.terminate()

    lines = log.read_bytes().splitlines()
    events = [orjson.loads(line) for line in lines]  # every line is valid JSON
    completed = [e for e in events if e["event"] == "request_completed"]
    assert len(completed) == 1000
    assert completed_ids(events) == Counter(ids)
    assert len({e["pid"] for e in completed}) > 1


def _await_lines(path: Path, needle: bytes, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or path.read_bytes().count(needle) < count:
        assert time.monotonic() < deadline, f"fewer than {count} lines with {needle!r}"
        time.sleep(0.02)


CLOSED_STDOUT_APP = textwrap.dedent(
    """
    import sys

    import uvicorn
    from fastapi import FastAPI

    import reqlog

    reqlog.configure(format="json", output="stdout")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    server: uvicorn.Server


    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        # Only reqlog writes here: an app's own print() to a stdout nobody reads fails with
        # BrokenPipeError until reqlog's writer has noticed and pointed fd 1 at /dev/null.
        reqlog.get_logger("app").info("pong")
        return {"ok": True}


    @app.get("/stop")
    async def stop() -> dict[str, bool]:
        server.should_exit = True
        return {"ok": True}


    config = uvicorn.Config(app, fd=int(sys.argv[1]), log_config=None)
    server = uvicorn.Server(config)
    server.run()
    """
)


def test_closed_stdout_keeps_serving_and_exits_0(tmp_path: Path) -> None:
    script = tmp_path / "serve.py"
    script.write_text(CLOSED_STDOUT_APP)
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(sock.fileno())],
        pass_fds=[sock.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sock.close()
    try:
        assert proc.stdout is not None
        first = orjson.loads(proc.stdout.readline())
        assert first["logger"].startswith("uvicorn")
        # Waits in the backlog until uvicorn is up: one request, never retried.
        assert httpx.get(url + "/ping", timeout=60).status_code == 200

        proc.stdout.close()  # the reader goes away
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(200):
                assert client.get("/ping").status_code == 200
            client.get("/stop")
        status = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    assert status == 0, stderr
    assert stderr.count("reqlog: cannot write to stdout") == 1
    assert "Traceback" not in stderr
    assert "Exception ignored" not in stderr


@pytest.mark.parametrize("stderr_too", [False, True], ids=["stdout_stalled", "both_stalled"])
def test_sigterm_with_stdout_stalled_and_lifespan_on_ends_within_the_bound(
    tmp_path: Path, servers: list[Server], stderr_too: bool
) -> None:
    """The lifespan's flush gives up at its deadline: what is not written is counted as
    dropped, reported once on stderr, and the process dies of its SIGTERM as usual."""
    from reqlog import output

    read_fd, write_fd = stalled_pipe()
    stderr: Any = write_fd if stderr_too else subprocess.PIPE
    server = Server(tmp_path, {"REQLOG_OUTPUT": "stdout"}, stdout=write_fd, stderr=stderr)
    os.close(write_fd)
    servers.append(server)
    server.wait_ready()
    send_requests(server.url, 50)
    before = server.get("/_stats")
    assert before["written"] == 0

    server.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    status = server.proc.wait(60)  # on reqlog 0.1 it never came back: a pipe write blocked
    took = time.monotonic() - started

    assert status == -signal.SIGTERM
    # The documented bound, and generous room for a loaded machine to tear a process down.
    bound = output.SHUTDOWN_FLUSH_TIMEOUT_S + output.LATE_WAIT_S + output.REPORT_TIMEOUT_S
    assert took < bound + 10
    os.set_blocking(read_fd, False)
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read_fd, 1 << 16):
            # Nothing was written to the full pipe: no line, and no torn half of one.
            assert chunk.count(0) == len(chunk)
    os.close(read_fd)
    if not stderr_too:
        reports = [line for line in server.stderr().splitlines() if "gave up on" in line]
        assert len(reports) == 1, server.stderr()
        given_up = int(reports[0].split("shutdown deadline: ")[1].split()[0])
        # Every line accepted before SIGTERM, and the server's first shutdown lines.
        assert given_up >= before["accepted"] > 50
