"""Instructions per request and per event under callgrind: the ratios free of machine noise.

Wall and CPU times on a shared 2-core VM move by 30-50% between identical runs, which hides a
difference of a few microseconds. valgrind's callgrind counts the instructions the process
executes instead: the same count on every run, whatever the neighbours do.

- Per request: each contender (bench/apps.py) in a process of its own, through the same
  in-process driver as bench_requests: 200 requests to warm up, then 1000 counted between two
  marks (bench/callgrind.py), reqlog's writer flushed so that its thread's work is counted.
- Per event: each case of bench/bench_events.py in a process of its own (a case binds context
  that would change the next one's cost), 500 events to warm up, then 5000 counted.

python -m bench.bench_instructions                   # everything, printed as JSON
python -m bench.bench_instructions --request NAME    # one contender's run (internal)
python -m bench.bench_instructions --event NAME      # one event case's run (internal)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import bench_events, callgrind
from bench.apps import CONTENDERS, build
from bench.bench_requests import _drive

__all__ = ["EVENT_CASES", "run"]

REQUESTS, WARM_REQUESTS = 1000, 200
EVENTS, WARM_EVENTS = 5000, 500

#: The bench_events cases counted in instructions (each costs a process under callgrind).
EVENT_CASES = (
    bench_events.PLAIN_APP,
    bench_events.REQLOG_APP,
    bench_events.REQLOG_APP_BACKGROUND,
    bench_events.REQLOG_APP_NO_REDACT,
    bench_events.PLAIN_ACCESS,
    bench_events.REQLOG_ACCESS,
)


def _settle() -> None:
    """Wait for reqlog's writer thread, if any, so that its work falls inside the stretch."""
    reqlog = sys.modules.get("reqlog")
    if reqlog is not None:
        reqlog.flush()


def _measure(warm: Callable[[], Any], counted: Callable[[], Any]) -> None:
    warm()
    _settle()
    callgrind.mark()
    counted()
    _settle()
    callgrind.mark()


def drive_requests(name: str) -> None:
    app = build(name)
    _measure(
        lambda: asyncio.run(_drive(app, WARM_REQUESTS)),
        lambda: asyncio.run(_drive(app, REQUESTS)),
    )


def drive_event(name: str) -> None:
    with open(os.devnull, "wb") as sink:
        case = {c.name: c for c in bench_events.build_cases(sink)}[name]

        def repeat(count: int) -> Callable[[], None]:
            def calls() -> None:
                for _ in range(count):
                    case.call()

            return calls

        with case.scope():
            _measure(repeat(WARM_EVENTS), repeat(EVENTS))


def _count(args: list[str], per: int) -> dict[str, Any]:
    try:
        segments, _ = callgrind.run(["bench.bench_instructions", *args])
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return {"skipped": "failed under callgrind (see stderr)"}
    return {"instructions": segments[1] / per}


def run(quick: bool = False) -> dict[str, Any]:
    """{"requests": {contender: {...}}, "events": {case: {...}}}, or why it was skipped."""
    reason = callgrind.available()
    if reason is not None:
        return {"skipped": reason}
    contenders = ["bare", "floor", "recipe", "reqlog"] if quick else list(CONTENDERS)
    cases = EVENT_CASES[:2] if quick else EVENT_CASES
    jobs = [("requests", name, ["--request", name], REQUESTS) for name in contenders]
    jobs += [("events", name, ["--event", name], EVENTS) for name in cases]
    # Two at a time: the counts do not depend on what else runs, so use both cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda job: _count(job[2], job[3]), jobs))
    results: dict[str, Any] = {"requests": {}, "events": {}}
    for (kind, name, _, _), count in zip(jobs, counts, strict=True):
        results[kind][name] = count
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--request", metavar="CONTENDER")
    parser.add_argument("--event", metavar="CASE")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.request:
        drive_requests(args.request)
    elif args.event:
        drive_event(args.event)
    else:
        print(json.dumps(run(args.quick), indent=1))


if __name__ == "__main__":
    main()
