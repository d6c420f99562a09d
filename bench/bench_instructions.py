"""Instructions per request under callgrind: the per-request ratios, free of machine noise.

Wall and CPU times on a shared 2-core VM move by 30-50% between identical runs, which hides a
difference of a few microseconds. valgrind's callgrind counts the instructions the process
executes instead: the same count on every run, whatever the neighbours do. Each contender
runs twice, with 200 and with 1200 requests through the same in-process driver as
bench_requests; the difference over 1000 is its instructions per request, start-up cancelled.

python -m bench.bench_instructions                # all contenders, printed as JSON
python -m bench.bench_instructions --drive NAME N # one run, what valgrind executes (internal)
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.apps import build
from bench.bench_requests import _drive

CONTENDERS = ("bare", "recipe", "reqlog", "reqlog_full", "article")
FEW, MANY = 200, 1200
_COLLECTED = re.compile(r"Collected : (\d+)")


def _count(name: str, requests: int) -> int | None:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.bench_instructions",
            "--drive",
            name,
            str(requests),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        # The system allocator: pymalloc's arenas make counts depend on address layout.
        env={**os.environ, "PYTHONMALLOC": "malloc"},
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        print(f"bench: {name} under callgrind failed: {done.stderr[-500:]}", file=sys.stderr)
        return None
    return int(found.group(1))


def per_request(name: str) -> float | None:
    few, many = _count(name, FEW), _count(name, MANY)
    if few is None or many is None:
        return None
    return (many - few) / (MANY - FEW)


def run(quick: bool = False) -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed (apt-get install valgrind)"}
    names = CONTENDERS[:3] if quick else CONTENDERS
    # Two at a time: the counts do not depend on what else runs, so use both cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(names, pool.map(per_request, names), strict=True))
    return {name: {"instructions": value} for name, value in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drive", nargs=2, metavar=("NAME", "REQUESTS"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.drive:
        name, requests = args.drive[0], int(args.drive[1])
        asyncio.run(_drive(build(name), requests))
        return
    print(json.dumps(run(args.quick), indent=1))


if __name__ == "__main__":
    main()
