"""Per-event cost: one access-log-sized event through each logging library, to os.devnull.

Every contender writes each line before returning (reqlog with ``background=False``), so
the comparison is of rendering plus one write, like for like; reqlog's background writer is
measured as an extra row. Each runs in a process of its own, interleaved, CPU time, medians.

    python -m bench.bench_libs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LIBS", "run"]

FIELDS: dict[str, Any] = {
    "request_id": "6f1c1bbf0a1b4f6c9f0c5b8a8f7b2f4e",
    "method": "GET",
    "path": "/items/42",
    "query": "q=shoes",
    "status_code": 200,
    "duration_ms": 1.234,
    "client_ip": "10.0.0.1",
    "user_agent": "bench/1.0",
}
EVENTS = 20_000


def _reqlog(background: bool) -> Callable[[], None]:
    import reqlog

    reqlog.configure(
        output=os.devnull, format="json", background=background, overflow="block", stdlib=False
    )
    log = reqlog.get_logger("bench")
    return lambda: log.info("request_completed", **FIELDS)


def reqlog_chain() -> Callable[[], None]:
    """reqlog's default chain (JSON), written before the call returns."""
    return _reqlog(background=False)


def reqlog_background() -> Callable[[], None]:
    """reqlog's default chain with the background writer (overflow=block: nothing dropped)."""
    return _reqlog(background=True)


def reqlog_stdlib() -> Callable[[], None]:
    """A standard-library record routed through reqlog's chain."""
    import reqlog

    reqlog.configure(output=os.devnull, format="json", background=False)
    log = logging.getLogger("bench.lib")
    return lambda: log.info("request_completed", extra=FIELDS)


def structlog_orjson() -> Callable[[], None]:
    """Plain structlog, its performance-guide setup: orjson to bytes, cached filtering logger."""
    import structlog

    from bench.apps import configure_plain_structlog

    configure_plain_structlog()
    log = structlog.get_logger("bench")
    return lambda: log.info("request_completed", **FIELDS)


def structlog_stdlib() -> Callable[[], None]:
    """structlog through the standard library's ProcessorFormatter (the documented bridge)."""
    import orjson
    import structlog

    def dumps(obj: Any, **kw: Any) -> str:
        return orjson.dumps(obj).decode()

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(serializer=dumps),
            ]
        )
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    log = structlog.get_logger("bench")
    return lambda: log.info("request_completed", **FIELDS)


def python_json_logger() -> Callable[[], None]:
    """The standard library with python-json-logger (the article's choice)."""
    from pythonjsonlogger import json as jsonlogger

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(jsonlogger.JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log = logging.getLogger("bench")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return lambda: log.info("request_completed", extra=FIELDS)


def loguru_serialize() -> Callable[[], None]:
    """loguru with ``serialize=True`` (its JSON output)."""
    from loguru import logger

    logger.remove()
    logger.add(open(os.devnull, "w"), serialize=True, level="INFO")  # noqa: SIM115
    return lambda: logger.info("request_completed", **FIELDS)


#: Name -> (builder, what it is).
LIBS: dict[str, tuple[Callable[[], Callable[[], None]], str]] = {
    "reqlog": (reqlog_chain, "reqlog default chain (JSON)"),
    "reqlog_background": (reqlog_background, "reqlog default chain, background writer"),
    "reqlog_stdlib": (reqlog_stdlib, "stdlib record routed through reqlog"),
    "structlog_orjson": (structlog_orjson, "plain structlog + orjson"),
    "structlog_stdlib": (structlog_stdlib, "structlog via stdlib ProcessorFormatter"),
    "python_json_logger": (python_json_logger, "stdlib + python-json-logger"),
    "loguru": (loguru_serialize, "loguru serialize=True"),
}


def measure(name: str, events: int = EVENTS, repeats: int = 5) -> float:
    """Median CPU microseconds per event for one library, in this process."""
    call = LIBS[name][0]()
    for _ in range(1000):
        call()
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(events):
            call()
        samples.append((time.process_time() - start) / events * 1e6)
    if name.startswith("reqlog"):
        import reqlog

        reqlog.flush(timeout=10)
    return statistics.median(samples)


def run(quick: bool = False) -> dict[str, dict[str, Any]]:
    rounds = 1 if quick else 3
    events = 2000 if quick else EVENTS
    samples: dict[str, list[float]] = {name: [] for name in LIBS}
    failed: dict[str, str] = {}
    for _ in range(rounds):
        for name in LIBS:
            if name in failed:
                continue
            done = subprocess.run(
                [sys.executable, "-m", "bench.bench_libs", "--one", name, "--events", str(events)],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                failed[name] = done.stderr.strip().splitlines()[-1] if done.stderr else "failed"
                continue
            samples[name].append(float(done.stdout.strip().splitlines()[-1]))
    return {
        name: (
            {"skipped": failed[name]}
            if name in failed
            else {"us": statistics.median(samples[name]), "rounds": samples[name]}
        )
        for name in LIBS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", help="measure one library and print us/event")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(f"{measure(args.one, args.events):.3f}")
        return
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
