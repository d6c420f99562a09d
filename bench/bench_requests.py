"""Per-request cost: in-process (the ASGI app driven directly) and requests/s under uvicorn + wrk.

Each contender runs in a process of its own (its logging setup is process-wide); the
contenders are interleaved round by round so that a noisy neighbour on the machine slows
them all alike, and each figure is a median.

    python -m bench.bench_requests                 # both, printed as JSON
    python -m bench.bench_requests --one reqlog    # one in-process measurement (internal)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from starlette.types import ASGIApp, Message

from bench.apps import CONTENDERS, build

__all__ = ["measure_inprocess", "run", "run_uvicorn"]

ROUNDS = 5
REQUESTS = 2000
WRK_SECONDS = 5
WRK_CONNECTIONS = 32
WRK_ROUNDS = 3


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "root_path": "",
        "query_string": b"q=shoes",
        "headers": [
            (b"host", b"bench"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"*/*"),
        ],
        "client": ("10.0.0.1", 51000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _drive(app: ASGIApp, count: int) -> float:
    """CPU seconds for ``count`` requests through the app, with a do-nothing server around it.

    CPU time of the whole process (every thread, so reqlog's writer too), not wall time:
    on a machine shared with other work, wall time measures the neighbours as well.
    """
    template = _scope()
    request: Message = {"type": "http.request", "body": b"", "more_body": False}
    disconnect: Message = {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    start = time.process_time()
    for _ in range(count):
        received = False

        async def receive() -> Message:
            nonlocal received
            if received:
                # After the body, a real server's receive() waits for the client to go.
                await asyncio.sleep(3600)
                return disconnect
            received = True
            return request

        scope = dict(template)
        scope["headers"] = list(template["headers"])
        scope["state"] = {}
        await app(scope, receive, send)
    return time.process_time() - start


def measure_inprocess(name: str, count: int = REQUESTS, repeats: int = 3) -> float:
    """Median microseconds per request for one contender, in this process."""
    app = build(name)

    async def main() -> list[float]:
        await _drive(app, 300)  # warm up: middleware stack, caches
        return [await _drive(app, count) / count * 1e6 for _ in range(repeats)]

    return statistics.median(asyncio.run(main()))


def _measure_in_child(name: str, count: int) -> float | None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_requests", "--one", name, "--count", str(count)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        print(f"bench: {name} failed in-process: {done.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return float(done.stdout.strip().splitlines()[-1])


def run_inprocess(
    names: list[str], rounds: int = ROUNDS, count: int = REQUESTS
) -> dict[str, dict[str, Any]]:
    """Interleaved rounds: {name: {"us": median us/request, "rounds": [...]}}."""
    samples: dict[str, list[float]] = {name: [] for name in names}
    skipped: dict[str, str] = {}
    for _ in range(rounds):
        for name in names:
            if name in skipped:
                continue
            value = _measure_in_child(name, count)
            if value is None:
                skipped[name] = "failed to build or run (see stderr)"
                continue
            samples[name].append(value)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in skipped:
            results[name] = {"skipped": skipped[name]}
        else:
            results[name] = {"us": statistics.median(samples[name]), "rounds": samples[name]}
    return results


# --- uvicorn + wrk ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _wrk_once(name: str, seconds: int, connections: int) -> float | None:
    port = _free_port()
    env = {**os.environ, "BENCH_APP": name}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.apps:create",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        if not _wait_port(port, server):
            server.kill()
            err = server.stderr.read().decode()[-500:] if server.stderr else ""
            print(f"bench: uvicorn with {name} did not start: {err}", file=sys.stderr)
            return None
        url = f"http://127.0.0.1:{port}/items/42?q=shoes"
        wrk = str(wrk_path())
        # Warm-up, then the measured run.
        subprocess.run([wrk, "-t1", "-c4", "-d1s", url], capture_output=True, check=False)
        done = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", url],
            capture_output=True,
            text=True,
            check=False,
        )
        match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
        if match is None or errors is not None:
            print(f"bench: wrk against {name}: {done.stdout}{done.stderr}", file=sys.stderr)
            return None
        return float(match.group(1))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_uvicorn(
    names: list[str], rounds: int = WRK_ROUNDS, seconds: int = WRK_SECONDS
) -> dict[str, dict[str, Any]]:
    """Requests/s under a real uvicorn (one worker) with wrk, rounds interleaved."""
    if wrk_path() is None:
        return {name: {"skipped": "wrk is not installed"} for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            value = _wrk_once(name, seconds, WRK_CONNECTIONS)
            if value is not None:
                samples[name].append(value)
    return {
        name: (
            {"rps": statistics.median(values), "rounds": values}
            if values
            else {"skipped": "failed to start or to serve (see stderr)"}
        )
        for name, values in samples.items()
    }


def run(quick: bool = False) -> dict[str, Any]:
    names = list(CONTENDERS)
    if quick:
        return {
            "inprocess": run_inprocess(names, rounds=1, count=300),
            "uvicorn": run_uvicorn(names, rounds=1, seconds=1),
            "uvicorn_load": _load(),
        }
    inprocess = run_inprocess(names)
    load = _load()
    uvicorn = run_uvicorn(names)
    # The wall-clock figures mean little on a loaded machine: say how loaded it was.
    return {"inprocess": inprocess, "uvicorn": uvicorn, "uvicorn_load": max(load, _load())}


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", help="measure one contender in-process and print us/request")
    parser.add_argument("--count", type=int, default=REQUESTS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(f"{measure_inprocess(args.one, args.count):.3f}")
        return
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
