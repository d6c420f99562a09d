"""What the disconnect watch costs, in instructions under callgrind.

Two figures: what every request pays for being registered with the watch (set insertion and
removal, a closure), and what a request that runs long enough to be watched pays on top (the
read-ahead task and its cancellation). Counts are made deterministic: no background writer
thread, a fixed hash seed, address-space randomisation off (``setarch -R``), bytecode compiled
beforehand; each figure is (count at 1200 requests - count at 200) / 1000.

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
from typing import Any

from fastapi import FastAPI
from starlette.types import Message

MODES = {
    "registered": "reqlog defaults: every request registered with the disconnect watch",
    "unregistered": "the same, registration off (as on a trio loop)",
    "watched": "a 2 ms handler, every request watched (read-ahead started)",
    "unwatched": "the same handler, never watched",
}
FEW, MANY = 200, 1200


def _app(sleep: float) -> FastAPI:
    import reqlog

    reqlog.configure(output=os.devnull, format="json")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        if sleep:
            await asyncio.sleep(sleep)
        return {"id": item_id}

    app.build_middleware_stack()
    return app


async def _drive(mode: str, count: int) -> None:
    from reqlog import middleware

    if mode == "unregistered":

        def no_loop() -> asyncio.AbstractEventLoop:
            raise RuntimeError

        middleware._get_running_loop = no_loop
    sleep = 0.005 if mode in ("watched", "unwatched") else 0.0
    started = 0
    if mode == "watched":
        # Counted, so that the figure is per watched request even if a tick comes late.
        real = middleware._ReadAhead.__init__

        def counting(self: Any, receive: Any) -> None:
            nonlocal started
            started += 1
            real(self, receive)

        middleware._ReadAhead.__init__ = counting  # type: ignore[method-assign]
    setattr(middleware, "WATCH_INTERVAL_S", 0.0005 if mode == "watched" else 3600.0)  # noqa: B010
    app = _app(sleep)
    request: Message = {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    for i in range(count):
        received = False

        async def receive() -> Message:
            nonlocal received
            if received:
                await asyncio.sleep(3600)  # a client that stays
            received = True
            return request

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
    if mode == "watched":
        print(f"watched: {started}", file=sys.stderr)


def _count(mode: str, requests: int) -> tuple[int, int]:
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
    watched = re.search(r"watched: (\d+)", done.stderr)
    return int(found.group(1)), int(watched.group(1)) if watched else 0


def run() -> dict[str, Any]:
    if shutil.which("valgrind") is None or shutil.which("setarch") is None:
        return {"skipped": "valgrind and setarch are needed (apt-get install valgrind)"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "reqlog", "bench"], check=False)
    totals: dict[str, float] = {}
    watched = 0
    for mode in MODES:
        (many, watched_many), (few, watched_few) = _count(mode, MANY), _count(mode, FEW)
        totals[mode] = many - few
        watched = watched or watched_many - watched_few
    per_request = {mode: total / (MANY - FEW) for mode, total in totals.items()}
    return {
        "instructions_per_request": per_request,
        "registration": per_request["registered"] - per_request["unregistered"],
        "requests_watched": f"{watched} of {MANY - FEW}",
        "watch_of_a_long_request": (totals["watched"] - totals["unwatched"]) / max(watched, 1),
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
