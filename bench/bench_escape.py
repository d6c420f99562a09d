"""Instructions per event that "one event, one line" costs (callgrind), format by format.

The first rows isolate the check JSONRenderer runs on every rendered line (and the rewrite
for a line that needs it), less the cost of the bare loop. The others render one
access-sized event through reqlog's real entry point
(``_emit.emit_access``, the default chain, output to ``os.devnull``) 200 and then 1200
times under valgrind's callgrind; the difference over 1000 is its instructions per event,
start-up cancelled. ``--against DIR`` runs the same cases with the reqlog package found in
DIR (a checkout of an earlier commit, say ``git archive main reqlog | tar -x -C DIR``), so
that the cost of the escaping is read as a difference between two counts of the same event.
Those chain rows move by several thousand instructions between runs (timestamps formatted
once per wall-clock second, caches): read the isolated rows for the checks themselves.

python -m bench.bench_escape                      # every case, printed as a Markdown table
python -m bench.bench_escape --against /tmp/main  # the same, beside an earlier reqlog
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

FEW, MANY = 200, 1200
#: The checks alone cost a few hundred instructions: 100,000 of them rise above the noise
#: (a few hundred thousand instructions between two runs of the same process).
CHECK_FEW, CHECK_MANY = 2_000, 102_000
_COLLECTED = re.compile(r"Collected : (\d+)")
HERE = Path(__file__).resolve()

# A copy of bench_events.ACCESS, on purpose: the driven process runs this file alone (with
# PYTHONPATH at another checkout under --against) and counts every instruction it executes.
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
#: case name: (format, a field added to the access event)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "json, ASCII": ("json", {}),
    "json, UTF-8 without C1/U+2028 (é, 日本)": ("json", {"user": "José 日本"}),
    "json, lead byte of U+2028 but not it (—)": ("json", {"user": "José — 日本"}),
    "json, U+2028 in a value": ("json", {"user": "José\u2028日本"}),
    "json, lone surrogate in a value": ("json", {"user": "José\ud800"}),
    "console, ASCII": ("console", {}),
    "console, LF in a value": ("console", {"user": "José\nforged"}),
    "logfmt, ASCII": ("logfmt", {}),
    "logfmt, LF and ESC in a value": ("logfmt", {"user": "José\n\x1b[2J"}),
}


#: case name: the line the JSON check reads (orjson's rendering of the access event + field)
CHECKS: dict[str, dict[str, Any]] = {
    "JSON check alone, ASCII line": {},
    "JSON check alone, UTF-8 line (é, 日本)": {"user": "José 日本"},
    "JSON check + escape_json, line with —": {"user": "José — 日本"},
    "JSON check + escape_json, line with U+2028": {"user": "José\u2028日本"},
    "loop without the check (subtracted from the rows above)": {},
}


def drive(case: str, events: int) -> None:
    """What valgrind runs: ``events`` times ``case``; garbage collection off, so that the
    count does not depend on when a collection falls."""
    import gc

    gc.disable()
    if case in CHECKS:
        _drive_check(case, events)
        return
    import reqlog
    from reqlog import _emit, context

    fmt, extra = CASES[case]
    with open(os.devnull, "wb") as sink:
        reqlog.configure(output=sink, format=fmt, stdlib=False)  # type: ignore[arg-type]
        token = context.CURRENT.set(
            context.RequestContext({"request_id": "9f3b1c2d4e5f60718293a4b5c6d7e8f9"}, None)
        )
        try:
            for _ in range(events):
                _emit.emit_access(logging.INFO, "request_completed", {**ACCESS, **extra})
        finally:
            context.CURRENT.reset(token)


def _drive_check(case: str, events: int) -> None:
    import orjson

    from reqlog import _escape

    data = orjson.dumps({**ACCESS, **CHECKS[case]}, option=orjson.OPT_APPEND_NEWLINE)
    if case.startswith("loop without"):
        for _ in range(events):
            pass
        return
    escape_json = _escape.escape_json
    for _ in range(events):
        # The check exactly as JSONRenderer inlines it.
        if 0x7F in data or (not data.isascii() and (0xC2 in data or 0xE2 in data)):
            escape_json(data)


def _count(case: str, events: int, pythonpath: str | None) -> int | None:
    # A fixed hash seed: with a random one, the same run's count moves by thousands of
    # instructions per event (dict layouts), which hides the differences measured here.
    env = {
        **os.environ,
        "PYTHONMALLOC": "malloc",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(HERE),
            "--drive",
            case,
            str(events),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        print(f"bench: {case} under callgrind failed: {done.stderr[-500:]}", file=sys.stderr)
        return None
    return int(found.group(1))


def per_event(case: str, pythonpath: str | None = None) -> float | None:
    low, high = (CHECK_FEW, CHECK_MANY) if case in CHECKS else (FEW, MANY)
    few, many = _count(case, low, pythonpath), _count(case, high, pythonpath)
    if few is None or many is None:
        return None
    return (many - few) / (high - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drive", nargs=2, metavar=("CASE", "EVENTS"))
    parser.add_argument("--against", metavar="DIR", help="a directory holding another reqlog")
    args = parser.parse_args()
    if args.drive:
        drive(args.drive[0], int(args.drive[1]))
        return
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        raise SystemExit(1)
    # The reqlog next to this file, unless DIR is given.
    here = str(HERE.parent.parent)
    jobs = [(case, here) for case in [*CHECKS, *CASES]]
    if args.against:
        jobs += [(case, args.against) for case in CASES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda job: per_event(*job), jobs))
    results = dict(zip(jobs, counts, strict=True))
    header = "| case | instructions/event |"
    rule = "|---|---:|"
    if args.against:
        header += " against | difference |"
        rule += "---:|---:|"
    print(header)
    print(rule)
    loop = results[(list(CHECKS)[-1], here)] or 0.0
    for case in list(CHECKS)[:-1]:
        value = results[(case, here)]
        text = "failed" if value is None else f"{value - loop:,.0f}"
        print(f"| {case} | {text} |" + (" | |" if args.against else ""))
    for case in CASES:
        mine = results[(case, here)]
        row = f"| {case} | {mine:,.0f} |" if mine is not None else f"| {case} | failed |"
        if args.against:
            other = results[(case, args.against)]
            if mine is None or other is None:
                row += " failed | |"
            else:
                row += f" {other:,.0f} | {mine - other:+,.0f} |"
        print(row)


if __name__ == "__main__":
    main()
