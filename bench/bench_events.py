"""Per-event cost of reqlog's default chain against structlog's own plain orjson chain.

Run ``python -m bench.bench_events`` (``--quick`` for a short run). Every case writes to
``os.devnull`` through a buffered file that is flushed per line, reqlog through its output
and the baseline through structlog's ``BytesLogger``, so both pay the same write. Cases are
interleaved round by round (``--repeats``), each round timing ``--iterations`` calls with
``time.perf_counter_ns``; the table shows the median round, in microseconds per event.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

import reqlog
from reqlog import context, testing
from reqlog._state import STATE

REQUEST_ID = "9f3b1c2d4e5f60718293a4b5c6d7e8f9"
CONTEXT = {"request_id": REQUEST_ID, "client_ip": "10.0.0.1", "user_id": "u-1042"}
ACCESS: dict[str, Any] = {
    "method": "GET",
    "path": "/items/42",
    "route": "/items/{item_id}",
    "query": "q=shoes&page=2",
    "status_code": 200,
    "duration_ms": 12.345,
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "http_version": "1.1",
    "response_bytes": 512,
}
ACCESS_AFTER_QUERY = ("status_code", "duration_ms", "user_agent", "http_version", "response_bytes")


# The case names other benchmarks refer to (bench_instructions counts their instructions).
PLAIN_APP = "structlog plain chain, app event"
REQLOG_APP = "reqlog default chain, app event"
REQLOG_APP_BACKGROUND = "reqlog defaults (background writer), app event"
REQLOG_APP_NO_REDACT = "reqlog, redact=False, app event"
PLAIN_ACCESS = "structlog plain chain, access event"
REQLOG_ACCESS = "reqlog default chain, access event"


@dataclass
class Case:
    """One measured way of logging an event."""

    name: str
    call: Callable[[], None]
    # Entered around each round: binds the request context the case needs.
    scope: Callable[[], AbstractContextManager[Any]]
    baseline: str | None = None  # the case this one is compared with


@contextmanager
def _structlog_request() -> Iterator[None]:
    tokens = structlog.contextvars.bind_contextvars(**CONTEXT)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def _reqlog_request(output: Any, **options: Any) -> Callable[[], AbstractContextManager[Any]]:
    """A round's scope: reqlog configured with ``output`` and ``options``, inside a request.

    Configuring per round (a fraction of a millisecond against a round of 20 000 events) lets
    every case use reqlog's real entry points: module-level loggers follow configure(), and
    access events go through the configured access policy exactly as the middleware sends them.
    """

    @contextmanager
    def scope() -> Iterator[None]:
        reqlog.configure(output=output, format="json", stdlib=False, **options)
        token = context.CURRENT.set(context.RequestContext(dict(CONTEXT), None))
        try:
            yield
        finally:
            context.CURRENT.reset(token)

    return scope


def _plain_structlog(sink: Any) -> Any:
    """structlog's recommended fast setup: contextvars, level, ISO time, orjson, BytesLogger."""
    wrapper: Any = structlog.make_filtering_bound_logger(logging.INFO)
    return wrapper(
        structlog.BytesLogger(sink),
        [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        {},
    )


def build_cases(sink: Any) -> list[Case]:
    """The cases, each writing to ``sink``."""
    plain = _plain_structlog(sink)
    log = reqlog.get_logger("app")
    secret_payload = {"user": "ada", "password": "hunter2", "card": {"cvv": "123"}}
    # Real traffic rarely repeats a query string: cycle through distinct ones, so that
    # reqlog's cache of strings known to be clean cannot flatter it. Both sides pay next().
    queries = itertools.cycle([f"q=shoes&page={n}&sort=price" for n in range(5000)])
    fields = {k: v for k, v in ACCESS.items() if k != "query"}
    method, path, route = ACCESS["method"], ACCESS["path"], ACCESS["route"]
    status, duration, agent, version, sent = (ACCESS[k] for k in ACCESS_AFTER_QUERY)
    plain_app, plain_access = PLAIN_APP, PLAIN_ACCESS

    def plain_access_event() -> None:
        plain.log(logging.INFO, "request_completed", query=next(queries), **fields)

    def access_event() -> None:
        # What the middleware does for a request with nothing to add (no proxy, no rejected
        # ID, no capture): the nine values to the configured access policy, in their order.
        access = STATE.access
        assert access is not None
        access.request(method, path, route, next(queries), status, duration, agent, version, sent)

    return [
        Case(plain_app, lambda: plain.info("loading_item", item_id=42), _structlog_request),
        Case(
            REQLOG_APP,
            lambda: log.info("loading_item", item_id=42),
            _reqlog_request(sink),
            baseline=plain_app,
        ),
        Case(
            # What configure(output=...) does with a path: the background writer (its
            # thread's time is not in this case's figure; it is in the instruction count).
            REQLOG_APP_BACKGROUND,
            lambda: log.info("loading_item", item_id=42),
            _reqlog_request(os.devnull),
            baseline=plain_app,
        ),
        Case(
            REQLOG_APP_NO_REDACT,
            lambda: log.info("loading_item", item_id=42),
            _reqlog_request(sink, redact=False),
            baseline=plain_app,
        ),
        Case(plain_access, plain_access_event, _structlog_request),
        Case(
            REQLOG_ACCESS,
            access_event,
            _reqlog_request(sink),
            baseline=plain_access,
        ),
        Case(
            "reqlog, redact=False, access event",
            access_event,
            _reqlog_request(sink, redact=False),
            baseline=plain_access,
        ),
        Case(
            "reqlog, sample_rate=0.5, access event",
            access_event,
            _reqlog_request(sink, sample_rate=0.5),
            baseline=plain_access,
        ),
        Case(
            "reqlog default chain, event with secrets",
            lambda: log.info(
                "login failed for Bearer abc.def.ghi", payload=secret_payload, api_key="k-1"
            ),
            _reqlog_request(sink),
            baseline=plain_app,
        ),
        Case(
            "reqlog, filtered out (debug)",
            lambda: log.debug("loading_item", item_id=42),
            _reqlog_request(sink),
        ),
    ]


def measure(cases: list[Case], iterations: int, repeats: int) -> dict[str, float]:
    """Median microseconds per event of each case, rounds interleaved across cases."""
    rounds: dict[str, list[float]] = {case.name: [] for case in cases}
    for case in cases:  # warm up caches and code paths
        with case.scope():
            for _ in range(min(iterations, 1000)):
                case.call()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for case in cases:
                call = case.call
                with case.scope():
                    start = time.perf_counter_ns()
                    for _ in range(iterations):
                        call()
                    elapsed = time.perf_counter_ns() - start
                rounds[case.name].append(elapsed / iterations / 1000.0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in rounds.items()}


def report(cases: list[Case], results: dict[str, float]) -> str:
    """The results as a Markdown table."""
    lines = ["| case | us/event | vs baseline |", "|---|---:|---:|"]
    for case in cases:
        value = results[case.name]
        ratio = f"{value / results[case.baseline]:.2f}x" if case.baseline else ""
        lines.append(f"| {case.name} | {value:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_events", description=__doc__)
    parser.add_argument("--iterations", type=int, default=20_000, help="calls per round")
    parser.add_argument("--repeats", type=int, default=15, help="rounds per case")
    parser.add_argument("--quick", action="store_true", help="a short run (2000 x 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    iterations, repeats = (2000, 5) if args.quick else (args.iterations, args.repeats)
    with open(os.devnull, "wb") as sink:
        cases = build_cases(sink)
        results = measure(cases, iterations, repeats)
        testing.reset()  # while the sink is open: reset flushes reqlog's output
    if args.json:
        rows = [{"case": c.name, "us": results[c.name], "baseline": c.baseline} for c in cases]
        print(json.dumps({"iterations": iterations, "repeats": repeats, "cases": rows}))
        return 0
    print(
        f"Python {platform.python_version()}, structlog {structlog.__version__}, "
        f"orjson {orjson.__version__}, reqlog {reqlog.__version__}; "
        f"{iterations} calls x {repeats} rounds, median round"
    )
    print(report(cases, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
