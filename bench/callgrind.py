"""Instruction counts of marked stretches of a Python process, with valgrind's callgrind.

The process being measured calls :func:`mark` between the stretches it wants counted. Under
``valgrind --tool=callgrind --dump-before=getppid`` every call dumps the counters collected since
the previous dump and zeroes them, so the N-th dump holds exactly what ran between the (N-1)-th
and the N-th mark, in every thread (the background writer's included): start-up, warm-up and
whatever surrounds a stretch are left out by construction, and one process measures many stretches.
``os.getppid`` is the marker because nothing in the benchmarks calls it; its own cost (a few
hundred instructions) is in the noise of any stretch worth measuring.

    segments, stdout = run(["bench.bench_breakdown", "--drive"])  # each stretch's count
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["available", "mark", "run"]

_MARKER = "getppid"
_TOTALS = re.compile(rb"^(?:totals|summary): (\d+)", re.MULTILINE)
_PART = re.compile(rb"^part: (\d+)", re.MULTILINE)


def mark() -> None:
    """End the current stretch (the dump holds what ran since the previous mark)."""
    os.getppid()


def available() -> str | None:
    """Why instructions cannot be counted here, or ``None`` when they can."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (apt-get install valgrind)"
    return None


def run(module_args: list[str], timeout: float = 1800) -> tuple[list[int], str]:
    """Run ``python -m <module_args>`` under callgrind: the instructions of each stretch, stdout.

    Element 0 is what ran before the first mark (start-up), element i what ran between mark
    i-1 and mark i; what ran after the last mark is dropped. Raises ``RuntimeError`` with
    valgrind's complaint when the run fails.
    """
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        out = Path(tmp) / "cg.out"
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--dump-before={_MARKER}",
                f"--callgrind-out-file={out}",
                "--dump-instr=no",
                "--dump-line=no",
                sys.executable,
                "-m",
                *module_args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            # A fixed hash seed: with a random one, dict and set layouts (so the counts) move
            # by about 0.2% between runs; with it, only thread scheduling moves them (reqlog's
            # writer thread: about 1k instructions per request). Python's own allocator, as
            # in production: PYTHONMALLOC=malloc is no steadier and doubles what allocating
            # an object costs.
            env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONMALLOC": "pymalloc"},
        )
        if done.returncode != 0:
            msg = f"{' '.join(module_args)} under callgrind failed: {done.stderr[-1500:]}"
            raise RuntimeError(msg)
        parts: dict[int, int] = {}
        for dump in Path(tmp).glob("cg.out.*"):
            data = dump.read_bytes()
            part, totals = _PART.search(data), _TOTALS.search(data)
            if part is not None and totals is not None:
                parts[int(part.group(1))] = int(totals.group(1))
    # Dumps are numbered from 1 in the order of the marks; the final dump (at exit) has none.
    return [parts[i] for i in sorted(parts)], done.stdout
