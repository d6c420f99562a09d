"""Benchmark the ``reqlog`` command line tool on a generated log (a benchmark, not a test).

Targets from issue 7: ``reqlog stats`` over 1,000,000 lines in under 3 s on a 2-core machine,
and ``reqlog view`` keeping up with 50,000 lines/s. Every figure is the wall time of the whole
command (interpreter start included), best of ``--repeat`` runs, output sent to /dev/null.

    python bench/bench_cli.py                # generates bench/out/cli-1m.jsonl on first use
    python bench/bench_cli.py --lines 200000 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent


def _timed(args: list[str], repeat: int) -> tuple[float, float]:
    """Best wall time of *repeat* runs, and the CPU time (user + sys) of that run."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "reqlog", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, (wall, cpu))
    return best


def _some_request_id(path: Path) -> str:
    with path.open("rb") as fh:
        for line in fh:
            if b'"request_failed"' in line:
                request_id: str = orjson.loads(line)["request_id"]
                return request_id
    msg = "no request_failed event in the generated log"
    raise SystemExit(msg)


def main(argv: list[str] | None = None) -> int:
    """Generate the log if needed, run each command, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--log", type=Path, help="use this log instead of generating one")
    args = parser.parse_args(argv)

    log = args.log or HERE / "out" / f"cli-{args.lines}.jsonl"
    if not log.exists():
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {log} ...", file=sys.stderr)
        gen = [sys.executable, str(HERE / "gen_logs.py"), "-n", str(args.lines), "-o", str(log)]
        subprocess.run(gen, check=True)
    with log.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    size_mb = log.stat().st_size / 1e6
    request_id = _some_request_id(log)[:12]
    cases = [
        ("stats (default: parallel)", ["stats", str(log)], False),
        ("stats --jobs 1", ["stats", str(log), "--jobs", "1"], False),
        ("stats --by user --json", ["stats", str(log), "--by", "user", "--json"], False),
        ("view (plain)", ["view", str(log), "--color", "never"], True),
        ("view --color always", ["view", str(log), "--color", "always"], True),
        ("view --status 5xx", ["view", str(log), "--status", "5xx"], True),
        ("trace ID", ["trace", request_id, str(log)], False),
        ("report -o /dev/null", ["report", str(log), "-o", os.devnull], False),
    ]
    print(f"log: {log} ({lines:,} lines, {size_mb:,.0f} MB), {os.cpu_count()} CPU(s)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, best of {args.repeat}, load average {load}\n")
    print("| command | wall time | CPU time (all processes) | lines/s (wall) |")
    print("|---|---:|---:|---:|")
    for label, command, rate in cases:
        wall, cpu = _timed(command, args.repeat)
        speed = f"{lines / wall:,.0f}" if rate else ""
        print(f"| `reqlog {label}` | {wall:.2f} s | {cpu:.2f} s | {speed} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
