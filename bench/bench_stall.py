"""Request latency under uvicorn when stdout is a pipe nobody reads, against one that is read.

The server is reqlog's contender app (``bench.apps``) with ``output="stdout"``; its stdout is
an os.pipe. "normal": a thread in this process reads the pipe. "stalled": the pipe is full
and never read. "stalled, background=False": the same with reqlog writing synchronously, to
show what the background writer saves (requests hang once the pipe is full).

    python -m bench.bench_stall
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from bench.bench_requests import _free_port, _wait_port

__all__ = ["run"]

REQUESTS = 1000


def _full_pipe() -> tuple[int, int]:
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


def _latencies(stalled: bool, background: bool, count: int) -> dict[str, Any]:
    read_fd, write_fd = _full_pipe() if stalled else os.pipe()
    port = _free_port()
    env = {
        **os.environ,
        "BENCH_APP": "reqlog_stdout",
        "REQLOG_BACKGROUND": "true" if background else "false",
    }
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--factory", "bench.bench_stall:create"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ],
        env=env,
        stdout=write_fd,
        stderr=subprocess.DEVNULL,
        pass_fds=(write_fd,),
    )
    os.close(write_fd)
    reader = None
    if not stalled:

        def drain() -> None:
            while os.read(read_fd, 1 << 16):
                pass

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
    samples: list[float] = []
    timeouts = 0
    try:
        if not _wait_port(port, server):
            return {"skipped": "uvicorn did not start"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
            for i in range(50 + count):
                start = time.perf_counter()
                try:
                    client.get("/items/42?q=shoes")
                except httpx.TimeoutException:
                    # Only a synchronous writer blocked on the full pipe gets here.
                    timeouts += 1
                    if timeouts >= 3:
                        break
                    continue
                if i >= 50:  # the first 50 warm up
                    samples.append((time.perf_counter() - start) * 1000)
    finally:
        server.send_signal(signal.SIGTERM)
        if stalled:
            # Let the server's shutdown flush go somewhere.
            threading.Thread(
                target=lambda: [os.read(read_fd, 1 << 16) for _ in range(1000)], daemon=True
            ).start()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if not samples:
        return {"completed": 0, "timeouts": timeouts}
    samples.sort()
    return {
        "completed": len(samples),
        "timeouts": timeouts,
        "median_ms": statistics.median(samples),
        "p99_ms": samples[int(len(samples) * 0.99) - 1],
    }


def create() -> Any:
    """uvicorn factory: reqlog's contender app writing to stdout."""
    from fastapi import FastAPI

    import reqlog
    from bench.apps import _routes

    reqlog.configure(output="stdout", format="json")
    app = _routes(FastAPI())
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    return app


def run(quick: bool = False) -> dict[str, Any]:
    count = 200 if quick else REQUESTS
    results: dict[str, Any] = {}
    for _ in range(1 if quick else 2):
        for label, stalled, background in [
            ("normal", False, True),
            ("stalled", True, True),
        ]:
            result = _latencies(stalled, background, count)
            previous = results.get(label)
            if previous is None or result.get("median_ms", 1e9) < previous.get("median_ms", 1e9):
                results[label] = result
    results["stalled_sync"] = _latencies(True, False, 20)
    return results


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
