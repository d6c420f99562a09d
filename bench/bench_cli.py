"""Benchmark the ``reqlog`` command against a hand-written DuckDB query (a benchmark, not a test).

Goals (issue 14): ``reqlog stats`` over 1,000,000 lines at most as slow as a hand-written
DuckDB query giving the same figures (ratio <= 1.0), ``report`` at most 1.5x ``stats``, and
``reqlog top`` keeping up with 5,000 lines/s on a small share of one core.

Each figure is the wall time of a whole process (interpreter start included), output sent to
/dev/null. The compared commands run interleaved, round after round, and the medians are
reported, because the machine is shared; the load average is read at every round. reqlog's
modules are byte-compiled first, as pip does when it installs a wheel (without that, an
editable install under ``PYTHONDONTWRITEBYTECODE`` compiles them again in every process).

    python bench/bench_cli.py                  # generates bench/out/cli-1000000.jsonl first
    python bench/bench_cli.py --rounds 3 --lines 200000
    python bench/bench_cli.py --rounds 5 --top-seconds 0   # without the 20 s of ``top``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent

#: What a user who knows DuckDB writes for the same question: per-route counts and weighted
#: nearest-rank p50/p95/p99 (each sampled event stands for 1/sample_rate requests).
HAND_SQL = """
WITH a AS (
  SELECT method, route, duration_ms AS d,
         CASE WHEN sample_rate > 0 AND sample_rate < 1 THEN 1 / sample_rate ELSE 1 END AS w
  FROM read_json_auto(?, format = 'newline_delimited', ignore_errors = true)
  WHERE event IN ('request_completed', 'request_failed') AND logger = 'reqlog.access'
), r AS (
  SELECT *, sum(w) OVER (PARTITION BY method, route ORDER BY d) AS cum,
            sum(w) OVER (PARTITION BY method, route) AS tot
  FROM a
)
SELECT method, route, sum(w) AS requests,
       min(d) FILTER (WHERE cum >= 0.50 * tot) AS p50,
       min(d) FILTER (WHERE cum >= 0.95 * tot) AS p95,
       min(d) FILTER (WHERE cum >= 0.99 * tot) AS p99
FROM r GROUP BY method, route ORDER BY requests DESC
"""

#: The same, for every figure of the ``stats`` table: 4xx and 5xx rates (failures count as
#: 5xx), slow requests, total and max duration, requests per second over the log's span.
HAND_FULL_SQL = """
WITH a AS (
  SELECT method, route, duration_ms AS d, status_code AS s, slow, event,
         CAST("timestamp" AS TIMESTAMPTZ) AS ts,
         CASE WHEN sample_rate > 0 AND sample_rate < 1 THEN 1 / sample_rate ELSE 1 END AS w
  FROM read_json_auto(?, format = 'newline_delimited', ignore_errors = true)
  WHERE event IN ('request_completed', 'request_failed') AND logger = 'reqlog.access'
), r AS (
  SELECT *, sum(w) OVER (PARTITION BY method, route ORDER BY d) AS cum,
            sum(w) OVER (PARTITION BY method, route) AS tot,
            max(ts) OVER () AS last, min(ts) OVER () AS first
  FROM a
)
SELECT method, route, sum(w) AS requests,
       sum(w) / greatest(epoch(any_value(last)) - epoch(any_value(first)), 1) AS rps,
       coalesce(sum(w) FILTER (WHERE s BETWEEN 400 AND 499), 0) / sum(w) AS rate_4xx,
       coalesce(sum(w) FILTER (WHERE s >= 500 OR event = 'request_failed'), 0) / sum(w)
         AS rate_5xx,
       min(d) FILTER (WHERE cum >= 0.50 * tot) AS p50,
       min(d) FILTER (WHERE cum >= 0.95 * tot) AS p95,
       min(d) FILTER (WHERE cum >= 0.99 * tot) AS p99,
       max(d) AS max, coalesce(sum(w) FILTER (WHERE slow), 0) AS slow, sum(w * d) AS total
FROM r GROUP BY method, route ORDER BY requests DESC
"""

HAND_SCRIPT = """
import sys, duckdb, json
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
json.dump(con.execute(sys.argv[2], [sys.argv[1]]).fetchall(), sys.stdout)
"""


def _timed(args: list[str], stdout: Any = subprocess.DEVNULL) -> tuple[float, float, bytes]:
    """Wall and CPU time (user + sys, all threads) of one process, and its output if asked."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, stdout=stdout, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout or b""


def _reqlog(*args: str) -> list[str]:
    return [sys.executable, "-m", "reqlog", *args]


def same_figures(log: Path) -> tuple[bool, bool, int]:
    """Do ``stats --json`` and the hand-written queries give identical per-route figures?

    Rounded as ``stats --json`` rounds them; percentiles and maxima are durations from the
    log, compared exactly.
    """
    _, _, ours = _timed(_reqlog("stats", str(log), "--json"), subprocess.PIPE)
    groups = orjson.loads(ours)["groups"]
    _, _, hand = _timed([sys.executable, "-c", HAND_SCRIPT, str(log), HAND_SQL], subprocess.PIPE)
    expected = {
        f"{m or '-'} {r or '(no route)'}": (round(c, 1), p50, p95, p99)
        for m, r, c, p50, p95, p99 in orjson.loads(hand)
    }
    got = {g["key"]: (g["count"], g["p50_ms"], g["p95_ms"], g["p99_ms"]) for g in groups}
    _, _, full = _timed(
        [sys.executable, "-c", HAND_SCRIPT, str(log), HAND_FULL_SQL], subprocess.PIPE
    )
    expected_full = {
        f"{m or '-'} {r or '(no route)'}": (
            round(c, 1), round(rps, 3), round(r4, 4), round(r5, 4), p50, p95, p99, mx,
            round(slow, 1), round(total, 3),
        )
        for m, r, c, rps, r4, r5, p50, p95, p99, mx, slow, total in orjson.loads(full)
    }  # fmt: skip
    got_full = {
        g["key"]: (
            g["count"], g["requests_per_s"], g["rate_4xx"], g["rate_5xx"], g["p50_ms"],
            g["p95_ms"], g["p99_ms"], g["max_ms"], g["slow"], g["total_ms"],
        )
        for g in groups
    }  # fmt: skip
    return expected == got, expected_full == got_full, len(got)


def compare(log: Path, rounds: int) -> list[str]:
    """Interleaved rounds of the hand-written queries, ``stats`` and ``report``; medians."""
    cases = {
        "hand-written query: counts, p50/p95/p99": [
            sys.executable, "-c", HAND_SCRIPT, str(log), HAND_SQL,
        ],
        "hand-written query: the whole stats table": [
            sys.executable, "-c", HAND_SCRIPT, str(log), HAND_FULL_SQL,
        ],
        "reqlog stats": _reqlog("stats", str(log)),
        "reqlog report -o /dev/null": _reqlog("report", str(log), "-o", os.devnull),
    }  # fmt: skip
    walls: dict[str, list[float]] = {k: [] for k in cases}
    cpus: dict[str, list[float]] = {k: [] for k in cases}
    loads = []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        for name, args in cases.items():
            wall, cpu, _ = _timed(args)
            walls[name].append(wall)
            cpus[name].append(cpu)
    med = {k: statistics.median(v) for k, v in walls.items()}
    names = list(cases)
    out = [
        "| command | median wall | min-max wall | median CPU |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        out.append(
            f"| `{name}` | {med[name]:.2f} s | {min(walls[name]):.2f}-{max(walls[name]):.2f} s"
            f" | {statistics.median(cpus[name]):.2f} s |"
        )
    out.append("")
    for label, a, b in (
        ("`stats` / hand-written query (counts, p50/p95/p99)", 2, 0),
        ("`stats` / hand-written query (the whole table)", 2, 1),
        ("`report` / `stats`", 3, 2),
    ):
        ratios = [x / y for x, y in zip(walls[names[a]], walls[names[b]], strict=True)]
        cpu = statistics.median(cpus[names[a]]) / statistics.median(cpus[names[b]])
        out.append(
            f"- {label}: median of per-round wall ratios **{statistics.median(ratios):.2f}**"
            f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)}); CPU ratio {cpu:.2f}"
        )
    out.append(
        f"- load average (1 min) at the start of each round: {min(loads):.2f} to"
        f" {max(loads):.2f} (median {statistics.median(loads):.2f})"
    )
    return out


def others(log: Path) -> list[str]:
    """One run of each other command."""
    request_id = _some_request_id(log)[:12]
    middle = _middle_time(log)
    cases = [
        ("view --color never", _reqlog("view", str(log), "--color", "never")),
        ("errors", _reqlog("errors", str(log))),
        ("trace ID", _reqlog("trace", request_id, str(log))),
        ("diff --at (middle of the log)", _reqlog("diff", str(log), "--at", middle)),
        (
            "sql (count per status)",
            _reqlog("sql", "SELECT status_code, count(*) FROM requests GROUP BY 1", str(log)),
        ),
        ("stats --since (last quarter)", _reqlog("stats", str(log), "--since", _quarter(log))),
    ]
    out = ["| command | wall | CPU |", "|---|---:|---:|"]
    for label, args in cases:
        wall, cpu, _ = _timed(args)
        out.append(f"| `reqlog {label}` | {wall:.2f} s | {cpu:.2f} s |")
    return out


def top_cpu(rate: int, seconds: float) -> list[str]:
    """CPU used by ``reqlog top`` in a tmux terminal while a file grows by *rate* lines/s."""
    if shutil.which("tmux") is None:
        return ["tmux is not installed: `reqlog top` was not measured"]
    sys.path.insert(0, str(HERE))
    from gen_logs import events  # type: ignore[import-not-found]

    lines = [
        (e.encode() if isinstance(e, str) else orjson.dumps(e)) + b"\n"
        for e in events(int(rate * seconds) + 10, seed=11)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "live.log"
        log.write_bytes(b"")
        socket = str(Path(tmp) / "tmux.sock")
        command = f"{sys.executable} -m reqlog top {log}"
        subprocess.run(
            ["tmux", "-S", socket, "new-session", "-d", "-x", "140", "-y", "40", command],
            check=True,
        )
        try:
            pid = int(
                subprocess.run(
                    ["tmux", "-S", socket, "display-message", "-p", "#{pane_pid}"],
                    capture_output=True,
                    check=True,
                    text=True,
                ).stdout
            )
            time.sleep(1.5)  # started and drawing
            cpu_before = _cpu_of(pid)
            start = time.perf_counter()
            written = 0
            with log.open("ab") as fh:
                while (elapsed := time.perf_counter() - start) < seconds:
                    due = min(int(elapsed * rate), len(lines))
                    if due > written:
                        fh.write(b"".join(lines[written:due]))
                        fh.flush()
                        written = due
                    time.sleep(0.01)
            time.sleep(1.0)  # let it catch up
            used = _cpu_of(pid) - cpu_before
            wall = time.perf_counter() - start
            screen = subprocess.run(
                ["tmux", "-S", socket, "capture-pane", "-p"],
                capture_output=True,
                check=True,
                text=True,
            ).stdout
        finally:
            subprocess.run(["tmux", "-S", socket, "kill-server"], check=False)
    read = next((line for line in screen.splitlines() if "lines," in line), "").strip()
    return [
        f"- wrote {written:,} lines at {rate:,} lines/s for {seconds:.0f} s;"
        f" `reqlog top` used **{used:.2f} s of CPU over {wall:.1f} s"
        f" ({used / wall:.0%} of one core)**",
        f"- its screen afterwards: `{read}`",
    ]


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _some_request_id(path: Path) -> str:
    with path.open("rb") as fh:
        for line in fh:
            if b'"request_failed"' in line:
                request_id: str = orjson.loads(line)["request_id"]
                return request_id
    msg = "no request_failed event in the generated log"
    raise SystemExit(msg)


def _times(path: Path) -> tuple[str, str]:
    with path.open("rb") as fh:
        first = next(orjson.loads(line)["timestamp"] for line in fh if line.startswith(b"{"))
        fh.seek(max(path.stat().st_size - 100_000, 0))
        last = [orjson.loads(line)["timestamp"] for line in fh.readlines()[1:]][-1]
    return first, last


def _at(path: Path, share: float) -> str:
    import datetime as dt

    first, last = (dt.datetime.fromisoformat(t) for t in _times(path))
    return (first + (last - first) * share).strftime("%Y-%m-%dT%H:%M:%S")


def _middle_time(path: Path) -> str:
    return _at(path, 0.5)


def _quarter(path: Path) -> str:
    return _at(path, 0.75)


def main(argv: list[str] | None = None) -> int:
    """Generate the log if needed, run everything, print Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log", type=Path, help="use this log instead of generating one")
    parser.add_argument("--top-rate", type=int, default=5000)
    parser.add_argument(
        "--top-seconds", type=float, default=20.0, help="0: do not measure `reqlog top`"
    )
    args = parser.parse_args(argv)

    log = args.log or HERE / "out" / f"cli-{args.lines}.jsonl"
    if not log.exists():
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {log} ...", file=sys.stderr)
        gen = [sys.executable, str(HERE / "gen_logs.py"), "-n", str(args.lines), "-o", str(log)]
        subprocess.run(gen, check=True)
    with log.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    import duckdb

    import reqlog

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(reqlog.__file__).parent)], check=True
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"log: {log.name} ({lines:,} lines, {log.stat().st_size / 1e6:,.0f} MB),"
        f" {os.cpu_count()} CPU(s), python {sys.version.split()[0]}, duckdb"
        f" {duckdb.__version__}, load average before: {load}\n"
    )
    same, same_full, routes = same_figures(log)
    print(
        f"Identical per-route figures from `reqlog stats --json` and the hand-written queries"
        f" ({routes} routes): requests and p50/p95/p99 **{'yes' if same else 'NO'}**;"
        f" every figure of the table **{'yes' if same_full else 'NO'}**\n"
    )
    print(f"### stats vs the hand-written query, {args.rounds} interleaved rounds\n")
    print("\n".join(compare(log, args.rounds)) + "\n", flush=True)
    print("### the other commands (one run each)\n")
    print("\n".join(others(log)) + "\n", flush=True)
    if args.top_seconds > 0:
        print(f"### reqlog top at {args.top_rate:,} lines/s\n")
        print("\n".join(top_cpu(args.top_rate, args.top_seconds)))
    else:
        print("`reqlog top` not measured in this run (--top-seconds 0)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average after: {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
