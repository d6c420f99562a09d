"""What the disconnect watch costs, in instructions under callgrind.

Two figures: what every request pays for being registered with the watch (the loop check, a
closure, a set insertion and removal: those statements alone, in a loop), and what a request
that runs long enough to be watched pays on top (its read-ahead task started, waiting on the
server's receive(), then stopped at the response's end), measured through the whole middleware.
The timer's ticks are left out of both: one per event loop every 0.25 s, whatever the load.
Counts are made deterministic: no background writer thread, a fixed hash seed, address-space
randomisation off (``setarch -R``), bytecode compiled beforehand; each figure is
(count at 1200 requests - count at 200) / 1000.

python -m bench.bench_lifecycle               # prints the figures as JSON
python -m bench.bench_lifecycle --drive MODE N  # one run, what valgrind executes (internal)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import Message

MODES = {
    "registration": "the per-request registration steps of the middleware, alone, in a loop",
    "loop": "the same loop without them",
    "watched": "reqlog, every request watched (its read-ahead started, then stopped)",
    "unwatched": "the same requests, never watched",
}
FEW, MANY = 200, 1200
_MICRO = 100


def _app(watch: bool) -> FastAPI:
    import reqlog
    from reqlog import middleware

    reqlog.configure(output=os.devnull, format="json")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)
    stack: Any = app.build_middleware_stack()
    app.middleware_stack = stack
    while not isinstance(stack, middleware.RequestLoggingMiddleware):
        stack = stack.app
    logging_middleware = stack

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        if watch:
            # What the watch's timer does for a request it saw on its previous tick; called
            # here so that every request is watched exactly once, whatever the timing.
            inflight = logging_middleware._in_flight
            assert inflight is not None
            for start_watch in list(inflight.requests):
                start_watch()
        await asyncio.sleep(0)  # the read-ahead starts and waits for the client
        return {"id": item_id}

    return app


async def _registration(count: int, steps: bool) -> None:
    # The statements RequestLoggingMiddleware.__call__ runs per request for the watch, on the
    # real InFlight: the loop check, the watch closure, the set insertion and removal.
    from reqlog import _lifecycle, middleware

    holder = middleware.RequestLoggingMiddleware(FastAPI())
    get_loop = middleware._get_running_loop
    reading = 0
    ahead = None
    response_complete = False
    for _ in range(count):
        if not steps:
            continue
        loop = get_loop()
        inflight = holder._in_flight
        if inflight is None or inflight.loop is not loop:
            inflight = holder._in_flight = _lifecycle.InFlight(loop)

        def watch() -> None:
            if ahead is None and not reading and not response_complete:
                pass

        inflight.requests.add(watch)
        if inflight.timer is None:
            inflight.arm()
        requests = inflight.requests
        requests.discard(watch)
        if inflight.waiter is not None and not requests:
            inflight.waiter.set()


def _receiver(request: Message) -> Callable[[], Awaitable[Message]]:
    """A server's receive(): the request, then a wait for a client that stays."""
    received = False
    stays = asyncio.Event()  # uvicorn's receive() waits on an event like this one

    async def receive() -> Message:
        nonlocal received
        if received:
            await stays.wait()
        received = True
        return request

    return receive


async def _drive(mode: str, count: int) -> None:
    if mode in ("registration", "loop"):
        # A hundred times more: a few hundred instructions against a run's own variation.
        await _registration(count * _MICRO, mode == "registration")
        return
    app = _app(mode == "watched")
    request: Message = {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    for i in range(count):
        receive = _receiver(request)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/items/{i}",
            "raw_path": f"/items/{i}".encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"bench"), (b"user-agent", b"bench")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await app(scope, receive, send)


def _count(mode: str, requests: int) -> int:
    done = subprocess.run(
        [
            "setarch",
            "-R",
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.bench_lifecycle",
            "--drive",
            mode,
            str(requests),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={
            **os.environ,
            "PYTHONMALLOC": "malloc",
            "PYTHONHASHSEED": "0",
            "REQLOG_BACKGROUND": "0",
        },
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"bench: {mode} under callgrind failed: {done.stderr[-800:]}")
    return int(found.group(1))


def run() -> dict[str, Any]:
    if shutil.which("valgrind") is None or shutil.which("setarch") is None:
        return {"skipped": "valgrind and setarch are needed (apt-get install valgrind)"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "reqlog", "bench"], check=False)
    per_request = {}
    for mode in MODES:
        _count(mode, 20)  # a first run writes what the later ones read (bytecode caches)
        few = _count(mode, FEW)
        iterations = (MANY - FEW) * (_MICRO if mode in ("registration", "loop") else 1)
        per_request[mode] = (_count(mode, MANY) - few) / iterations
    return {
        "instructions_per_request": per_request,
        "registration": per_request["registration"] - per_request["loop"],
        "watch_of_a_long_request": per_request["watched"] - per_request["unwatched"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drive", nargs=2, metavar=("MODE", "REQUESTS"))
    args = parser.parse_args()
    if args.drive:
        asyncio.run(_drive(args.drive[0], int(args.drive[1])))
        return
    print(json.dumps(run(), indent=1))


if __name__ == "__main__":
    main()
