"""Generate realistic reqlog JSON-lines logs for benchmarking the ``reqlog`` command line tool.

The output looks like what ``reqlog.configure(format="json")`` writes for a busy FastAPI service:
one ``request_completed`` (or ``request_failed``) access event per request, application events
inside requests that carry the same ``request_id``, a few uvicorn banner lines, slow requests,
sampled fast requests with ``sample_rate`` and the odd client disconnect.

    python bench/gen_logs.py -n 1000000 -o bench/out/1m.jsonl
    python bench/gen_logs.py -n 200000 -o bench/out/200k.jsonl.gz
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import random
import sys
import uuid
from collections.abc import Iterator
from typing import IO, Any

import orjson

# (method, route template, path maker, median ms, sigma, share of traffic)
_ROUTES: list[tuple[str, str | None, str, float, float, float]] = [
    ("GET", "/items/{item_id}", "/items/{n}", 8.0, 0.5, 30.0),
    ("GET", "/items", "/items", 25.0, 0.6, 15.0),
    ("POST", "/items", "/items", 40.0, 0.5, 6.0),
    ("GET", "/users/{user_id}", "/users/{n}", 12.0, 0.4, 12.0),
    ("PUT", "/users/{user_id}", "/users/{n}", 30.0, 0.5, 3.0),
    ("GET", "/search", "/search", 120.0, 0.8, 8.0),
    ("POST", "/orders", "/orders", 90.0, 0.6, 5.0),
    ("GET", "/orders/{order_id}", "/orders/{n}", 20.0, 0.5, 7.0),
    ("GET", "/reports/{rid}", "/reports/{n}", 900.0, 0.7, 1.0),
    ("GET", "/health", "/health", 0.8, 0.3, 12.0),
    ("GET", None, "/wp-login.php", 1.0, 0.3, 0.5),
    ("GET", None, "/favicon.ico", 0.7, 0.3, 0.5),
]
_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "python-httpx/0.27.0",
    "curl/8.5.0",
    "orders-worker/2.3",
]
_ERRORS = [
    ("ZeroDivisionError", "division by zero"),
    ("KeyError", "'sku'"),
    ("TimeoutError", "upstream did not answer in 5s"),
    ("ValueError", "invalid literal for int() with base 10: 'abc'"),
]
SLOW_MS = 500.0
SAMPLE_RATE = 0.5


def _timestamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _exception(error_type: str, message: str) -> list[dict[str, Any]]:
    return [
        {
            "exc_type": error_type,
            "exc_value": message,
            "syntax_error": None,
            "is_cause": False,
            "frames": [
                {"filename": "/app/main.py", "lineno": 42, "name": "read_item"},
                {"filename": "/app/services/items.py", "lineno": 17, "name": "load"},
            ],
        }
    ]


def events(n_lines: int, seed: int, rate: float = 200.0) -> Iterator[dict[str, Any] | str]:
    """Yield about *n_lines* events (dicts) and banner lines (str), in time order."""
    rnd = random.Random(seed)
    weights = [r[5] for r in _ROUTES]
    t = dt.datetime(2026, 11, 24, 5, 0, tzinfo=dt.UTC).timestamp()
    yield "INFO:     Started server process [4242]"
    yield "INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)"
    produced = 2
    while produced < n_lines:
        # A daily-ish wave in traffic so the report has a shape.
        t += rnd.expovariate(rate * (1.0 + 0.5 * ((int(t) // 600) % 3)))
        method, route, path_t, median, sigma, _ = rnd.choices(_ROUTES, weights)[0]
        path = path_t.replace("{n}", str(rnd.randint(1, 5000)))
        request_id = uuid.UUID(int=rnd.getrandbits(128)).hex
        duration = rnd.lognormvariate(0.0, sigma) * median
        user = f"u{rnd.randint(1, 800)}" if rnd.random() < 0.7 else None
        context: dict[str, Any] = {
            "request_id": request_id,
            "client_ip": f"10.0.{rnd.randint(0, 9)}.{rnd.randint(1, 254)}",
        }
        if user:
            context["user_id"] = user
        for i in range(rnd.choice((0, 0, 1, 1, 2))):
            yield {
                "event": rnd.choice(("loading_item", "cache_miss", "db_query")),
                "level": "info" if i == 0 else "debug",
                "timestamp": _timestamp(t + duration / 1000.0 * (i + 1) / 3.0),
                "logger": "app.items",
                "service": "orders",
                **context,
                "rows": rnd.randint(0, 50),
            }
            produced += 1
        status = 200 if method != "POST" else 201
        if route is None:
            status = 404
        elif rnd.random() < 0.03:
            status = rnd.choice((400, 401, 403, 404, 409, 422))
        elif rnd.random() < 0.004:
            status = rnd.choice((502, 503))
        failed = route is not None and rnd.random() < 0.002
        slow = duration >= SLOW_MS
        access: dict[str, Any] = {
            "event": "request_failed" if failed else "request_completed",
            "level": "info",
            "timestamp": _timestamp(t + duration / 1000.0),
            "logger": "reqlog.access",
            "service": "orders",
            **context,
            "method": method,
            "path": path,
            "route": route,
            "query": "q=shoes&page=2" if route == "/search" else "",
            "status_code": 500 if failed else status,
            "duration_ms": round(duration, 3),
            "user_agent": rnd.choice(_AGENTS),
            "http_version": "1.1",
            "response_bytes": 0 if failed else rnd.randint(40, 20000),
        }
        if failed:
            error_type, message = rnd.choice(_ERRORS)
            access["level"] = "error"
            access.update(
                error_type=error_type,
                error_message=message,
                exception=_exception(error_type, message),
            )
        elif access["status_code"] >= 500:
            access["level"] = "error"
        elif access["status_code"] >= 400:
            access["level"] = "warning"
        if slow:
            access.update(slow=True, slow_threshold_ms=SLOW_MS, level="warning")
        elif access["status_code"] < 400 and not failed:
            # Fast successful requests are sampled: only half of them are written.
            if rnd.random() >= SAMPLE_RATE:
                continue
            access["sample_rate"] = SAMPLE_RATE
        if rnd.random() < 0.001:
            access["outcome"] = "client_disconnected"
        yield access
        produced += 1


def write(out: IO[bytes], n_lines: int, seed: int) -> None:
    """Write the generated log to a binary stream."""
    for item in events(n_lines, seed):
        if isinstance(item, str):
            out.write(item.encode() + b"\n")
        else:
            out.write(orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--lines", type=int, default=100_000, help="about this many lines")
    parser.add_argument("-o", "--output", default="-", help="file to write (.gz compresses)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.output == "-":
        write(sys.stdout.buffer, args.lines, args.seed)
    elif args.output.endswith(".gz"):
        with gzip.open(args.output, "wb", compresslevel=5) as fh:
            write(fh, args.lines, args.seed)
    else:
        with open(args.output, "wb", buffering=1 << 20) as fh:
            write(fh, args.lines, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
