"""What redaction costs on hostile text, against benign text of the same length.

The default ``Redactor`` runs on every event, over text clients control. Every input below is
redacted as free text (an event message) and as a query string, by the real processor entry
(``redactor(logger, method, event)``), at 4 KiB and 64 KiB: adversarial inputs built to make a
regular-expression engine backtrack or to pack the text with matches (the prefix of every
pattern repeated, long digit runs, ``bearer bearer ...``, nested ``?a=?b=``, ``=?a``...), beside
benign text of the same length (log lines, a traceback, JSON, URLs and prose, none of it
secret). The goal: the worst adversarial input costs at most 3x benign text of its length.

CPU time (``time.process_time``) per redaction, median of ``--rounds`` rounds interleaved
across inputs, one warmed-up Redactor for all (its caches in their steady state). Per-event
figures for the common events are in instructions, under callgrind (``--instructions``).

python -m bench.bench_redaction                   # the table, as Markdown
python -m bench.bench_redaction --instructions    # + instructions per access event (valgrind)
python -m bench.bench_redaction --drive-events N  # N access events through a Redactor (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from reqlog.processors import Redactor

SIZES = (4096, 65536)
GOAL = 3.0

# Benign: what free text and query strings hold on a real service, none of it secret.
_BENIGN_PARTS = (
    "2024-05-01T12:00:00.123Z INFO orders.api request_completed method=GET "
    "path=/api/orders/4711 status=200 duration_ms=12.7 user_id=u-1042 "
    "request_id=9f3b1c2d-4e5f-6071-8293-a4b5c6d7e8f9 client_ip=10.0.0.17\n",
    "Traceback (most recent call last):\n"
    '  File "/srv/app/orders/service.py", line 218, in create_order\n'
    "    total = compute_total(cart, currency=currency, discount=discount)\n"
    '  File "/srv/app/orders/pricing.py", line 87, in compute_total\n'
    '    raise ValueError(f"unknown currency {currency!r} for cart {cart.id}")\n'
    "ValueError: unknown currency 'XTS' for cart 88231\n",
    '{"order": {"id": 88231, "customer": {"name": "Ann Lee", "email": "ann@example.com"}, '
    '"items": [{"sku": "SKU-1", "qty": 2, "price": 9.99}, {"sku": "SKU-7", "qty": 1, '
    '"price": 129.0}], "shipping": {"city": "Lyon", "zip": "69002"}, "status": "pending"}}\n',
    "GET https://shop.example.com/search?q=red+shoes&page=2&sort=price_asc&size=42 "
    "Referer: https://www.example.org/blog/2024/05/how-to-choose-running-shoes?utm_source=news\n",
    "The customer asked to change the delivery address before the parcel left the warehouse; "
    "support confirmed the change at 14:32 and the courier was told about it by phone.\n",
)
BENIGN_UNIT = "".join(_BENIGN_PARTS)
PROSE_UNIT = (
    "The quick brown fox jumps over the lazy dog while the warehouse team packs 12 parcels. "
)


def _fill(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def _numbered(template: str, size: int) -> str:
    pieces: list[str] = []
    length = index = 0
    while length < size:
        piece = template.format(index)
        pieces.append(piece)
        length += len(piece)
        index += 1
    return "".join(pieces)[:size]


# Adversarial: each repeats one pattern's prefix (or a near miss of it) to the size wanted,
# or packs the text with candidates that each need a closer look.
ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "eyJ repeated": lambda n: _fill("eyJ", n),
    "eyJa. repeated (JWT parts)": lambda n: _fill("eyJa.", n),
    "eyJ + one long part": lambda n: "eyJ" + _fill("a", n - 3),
    "bearer bearer ...": lambda n: _fill("bearer ", n),
    "BearerBearer...": lambda n: _fill("Bearer", n),
    "basic basic ...": lambda n: _fill("basic ", n),
    "Basic <base64> repeated": lambda n: _fill("Basic QWxhZGRpbjpvcGVu ", n),
    "long digit run": lambda n: _fill("4", n),
    "digits and spaces": lambda n: _fill("4 ", n),
    "digits and hyphens": lambda n: _fill("4-", n),
    "card numbers repeated": lambda n: _fill("4111 1111 1111 1111 ", n),
    "=?a repeated": lambda n: "=" + _fill("?a", n - 1),
    "nested ?a=?b=": lambda n: _fill("?a=?b=", n),
    "a= repeated": lambda n: _fill("a=", n),
    "a: repeated": lambda n: _fill("a:", n),
    "distinct names k0=v k1=v ...": lambda n: _numbered("k{}=v ", n),
    "pwd=x repeated": lambda n: _fill("pwd=x ", n),
    "password: repeated": lambda n: _fill("password: ", n),
    '"password": " repeated': lambda n: _fill('"password": "', n),
    "password:[REDACTED] repeated": lambda n: _fill("password:[REDACTED]", n),
    "quotes and escapes": lambda n: _fill('\\"', n),
    ":// repeated": lambda n: _fill("://", n),
    "://a: repeated": lambda n: _fill("://a:", n),
    "AKIA repeated": lambda n: _fill("AKIA", n),
    "ghp_ repeated": lambda n: _fill("ghp_", n),
    "glpat- repeated": lambda n: _fill("glpat-", n),
    "xoxb- repeated": lambda n: _fill("xoxb-", n),
    "sk_live_ repeated": lambda n: _fill("sk_live_", n),
    "AIza repeated": lambda n: _fill("AIza", n),
    "PEM BEGIN repeated": lambda n: _fill("-----BEGIN RSA PRIVATE KEY-----", n),
    "hyphens": lambda n: _fill("-", n),
    "percent signs": lambda n: _fill("%", n),
    "one long word": lambda n: _fill("a", n),
    "non-ASCII": lambda n: _fill("é€😀", n),
}
BENIGN: dict[str, Callable[[int], str]] = {
    "benign: logs, traceback, JSON, URLs": lambda n: _fill(BENIGN_UNIT, n),
    "benign: prose": lambda n: _fill(PROSE_UNIT, n),
}
REFERENCE = "benign: logs, traceback, JSON, URLs"

# The access event as the Redactor sees it (after the context, level, logger and timestamp).
ACCESS_EVENT: dict[str, Any] = {
    "method": "GET",
    "path": "/items/42",
    "route": "/items/{item_id}",
    "status_code": 200,
    "duration_ms": 12.345,
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "http_version": "1.1",
    "response_bytes": 512,
    "event": "request_completed",
    "request_id": "9f3b1c2d4e5f60718293a4b5c6d7e8f9",
    "client_ip": "10.0.0.1",
    "logger": "reqlog.access",
    "level": "info",
    "timestamp": "2024-05-01T12:00:00.123456Z",
}


def _cpu(call: Callable[[], object], repeat: int) -> float:
    start = time.process_time_ns()
    for _ in range(repeat):
        call()
    return (time.process_time_ns() - start) / repeat / 1e6


def _redacting(redactor: Redactor, key: str, text: str) -> Callable[[], object]:
    def call() -> object:
        return redactor(None, "info", {key: text})  # a new event each time, as in the chain

    return call


def measure(rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """Milliseconds per redaction: {size: {input: {"text": ms, "query": ms}}}."""
    redactor = Redactor()
    inputs = {**BENIGN, **ADVERSARIAL}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for size in SIZES:
        texts = {name: make(size) for name, make in inputs.items()}
        repeat = 20 if size <= 4096 else 2
        samples: dict[str, dict[str, list[float]]] = {n: {"text": [], "query": []} for n in texts}
        for text in texts.values():  # warm up: classes, caches, code paths
            redactor(None, "info", {"event": text, "query": text})
        for _ in range(rounds):
            for name, text in texts.items():
                for kind, key in (("text", "event"), ("query", "query")):
                    samples[name][kind].append(_cpu(_redacting(redactor, key, text), repeat))
        results[str(size)] = {
            name: {kind: statistics.median(values) for kind, values in by_kind.items()}
            for name, by_kind in samples.items()
        }
    return results


def table(results: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], dict[str, Any]]:
    """The results as Markdown, and the worst ratio per size (the goal's figure)."""
    lines = [
        "| input | 4 KiB text ms | x benign | 4 KiB query ms | x benign "
        "| 64 KiB text ms | x benign | 64 KiB query ms | x benign |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst: dict[str, Any] = {}
    for name in (*BENIGN, *ADVERSARIAL):
        cells = []
        for size in map(str, SIZES):
            for kind in ("text", "query"):
                value = results[size][name][kind]
                ratio = value / results[size][REFERENCE][kind]
                cells += [f"{value:.3f}", f"{ratio:.2f}"]
                if name in ADVERSARIAL and ratio > worst.get(size, ("", "", 0.0))[2]:
                    worst[size] = (name, kind, ratio)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines, worst


# -- instructions per access event (callgrind) -------------------------------------------------

FEW, MANY = 2000, 12000
_COLLECTED = re.compile(r"Collected : (\d+)")


def drive_events(count: int, kind: str) -> None:
    """``count`` events through one Redactor, the query changing every time, as real traffic."""
    redactor = Redactor()
    queries = [f"q=shoes&page={n}&sort=price" for n in range(count)]
    if kind == "access":
        for query in queries:
            redactor(None, "info", {**ACCESS_EVENT, "query": query})
    elif kind == "app":
        for n in range(count):
            redactor(None, "info", {"event": "loading_item", "item_id": n, "logger": "app"})
    elif kind == "headers":
        headers = {
            "host": "shop.example.com",
            "user-agent": ACCESS_EVENT["user_agent"],
            "accept": "application/json",
            "authorization": "Bearer abc.def.ghi",
            "referer": "https://shop.example.com/cart",
        }
        for query in queries:
            redactor(
                None,
                "info",
                {**ACCESS_EVENT, "query": query, "request_headers": {**headers, "x-q": query}},
            )


def _instructions(kind: str, count: int, other: str | None) -> int | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # ``other``: a directory holding another reqlog/; run from there (the current directory
    # comes first on sys.path), with this bench/ found through PYTHONPATH.
    env = {**os.environ, "PYTHONMALLOC": "malloc", "PYTHONPATH": root}
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.bench_redaction",
            "--drive-events",
            str(count),
            kind,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
        cwd=other or root,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        print(f"bench: callgrind failed: {done.stderr[-500:]}", file=sys.stderr)
        return None
    return int(found.group(1))


def instructions(other: str | None = None) -> dict[str, Any]:
    """Instructions per event, the difference between MANY and FEW events over the extra ones.

    ``other``: a directory with another reqlog/ in it (``git archive main reqlog`` unpacked),
    for a before/after comparison.
    """
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed (apt-get install valgrind)"}
    counts: dict[str, Any] = {}
    for kind in ("access", "app", "headers"):
        few = _instructions(kind, FEW, other)
        many = _instructions(kind, MANY, other)
        counts[kind] = None if few is None or many is None else (many - few) / (MANY - FEW)
    return counts


def run(quick: bool = False) -> dict[str, Any]:
    """For ``python -m bench``: the table's figures."""
    return measure(3 if quick else 7)


def section(results: dict[str, Any]) -> list[str]:
    """For ``python -m bench``: the section of RESULTS.md."""
    lines, worst = table(results)
    verdicts = []
    for size in map(str, SIZES):
        name, kind, ratio = worst[size]
        verdict = "met" if ratio <= GOAL else "**missed**"
        verdicts.append(
            f"- {int(size) // 1024} KiB: worst {ratio:.2f}x benign ({name}, as {kind}): {verdict}"
        )
    return [
        "## Redaction of hostile text (bench_redaction)",
        "",
        "One warmed-up default `Redactor`, each input redacted as free text (`event`) and as a "
        "query string (`query`) through the processor itself; CPU ms per redaction, median of "
        "interleaved rounds. Benign reference: log lines, a traceback, JSON, URLs and prose "
        f"of the same length. Goal: the worst adversarial input at most {GOAL:.0f}x benign.",
        "",
        *verdicts,
        "",
        *lines,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--before", default=None, help="a directory holding the reqlog/ to compare")
    parser.add_argument("--drive-events", nargs=2, metavar=("COUNT", "KIND"))
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args()
    if args.drive_events:
        drive_events(int(args.drive_events[0]), args.drive_events[1])
        return
    results = measure(args.rounds)
    if args.json:
        print(json.dumps(results, indent=1))
    print("\n".join(section(results)))
    if args.instructions:
        after = instructions()
        print("\nInstructions per event (callgrind):", json.dumps(after))
        if args.before:
            before = instructions(args.before)
            print("Before (--before):", json.dumps(before))


if __name__ == "__main__":
    main()
