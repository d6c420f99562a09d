"""``python -m bench`` (``make bench``): run every benchmark, write bench/RESULTS.md.

python -m bench                 # the full suite, about 5 minutes on 2 cores
python -m bench --quick         # a smoke run: every contender once, few iterations
python -m bench --only libs     # requests, instructions, libs, events, stall, redaction
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import bench_instructions, bench_libs, bench_redaction, bench_requests, bench_stall
from bench.apps import CONTENDERS

HERE = Path(__file__).parent
PACKAGES = (
    "reqlog",
    "fastapi",
    "starlette",
    "uvicorn",
    "structlog",
    "orjson",
    "asgi-correlation-id",
    "python-json-logger",
    "loguru",
)


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    wrk = shutil.which("wrk")
    wrk_version = "not installed"
    if wrk:
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (done.stdout or done.stderr).strip().splitlines()[0]
    return [
        f"- {cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- {', '.join(versions)}",
        f"- wrk: {wrk_version}",
        f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(the machine is shared; see the method notes)",
    ]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def requests_section(results: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    inproc, uvi = results["inprocess"], results["uvicorn"]
    bare_us = inproc.get("bare", {}).get("us")
    bare_rps = uvi.get("bare", {}).get("rps")
    lines = [
        "## Per request",
        "",
        "In-process: the ASGI app called directly by a do-nothing server loop, "
        f"`GET /items/42?q=shoes`, CPU time per request, median of {bench_requests.ROUNDS} "
        "interleaved rounds of 2000 requests (each contender in its own process). Under "
        f"uvicorn: one worker, `wrk -t1 -c{bench_requests.WRK_CONNECTIONS} "
        f"-d{bench_requests.WRK_SECONDS}s`, median of 2 interleaved rounds. Every contender "
        "logs to os.devnull; uvicorn's own access log is off for all (`--no-access-log`).",
        "",
        "| contender | in-process us/request | overhead us | x bare | uvicorn req/s | x bare |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary: dict[str, Any] = {}
    for name, (_, label) in CONTENDERS.items():
        row = inproc.get(name, {})
        us = row.get("us")
        rps = uvi.get(name, {}).get("rps")
        skipped = row.get("skipped") or uvi.get(name, {}).get("skipped")
        if us is None and rps is None:
            lines.append(f"| {label} | skipped: {skipped} | | | | |")
            continue
        overhead = None if us is None or bare_us is None else us - bare_us
        ratio = None if us is None or not bare_us else us / bare_us
        rps_ratio = None if rps is None or not bare_rps else rps / bare_rps
        summary[name] = {"us": us, "overhead": overhead, "ratio": ratio, "rps_ratio": rps_ratio}
        lines.append(
            f"| {label} | {_fmt(us)} | {_fmt(overhead)} | {_fmt(ratio, 2)} | {_fmt(rps, 0)} "
            f"| {_fmt(rps_ratio, 2)} |"
        )
    return lines, summary


def libs_section(results: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    base = results.get("reqlog", {}).get("us")
    lines = [
        "## Per event",
        "",
        "One access-log-sized event (8 fields) through each library to os.devnull, written "
        "before the call returns (reqlog: `background=False`, except the background row, "
        "where the writer thread's CPU counts too), CPU time per event, median of 3 "
        "interleaved rounds of 5x20000 events, each library in its own process.",
        "",
        "| library | us/event | x reqlog |",
        "|---|---:|---:|",
    ]
    for name, (_, label) in bench_libs.LIBS.items():
        row = results.get(name, {})
        us = row.get("us")
        if us is None:
            lines.append(f"| {label} | skipped: {row.get('skipped')} | |")
            continue
        lines.append(f"| {label} | {_fmt(us, 2)} | {_fmt(us / base if base else None, 2)} |")
    return lines, {"reqlog_us": base}


def stall_section(results: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    lines = [
        "## A stalled sink",
        "",
        'reqlog under uvicorn with `output="stdout"`, stdout an os.pipe: read by another '
        "process (normal) or full and never read (stalled). Sequential requests from one "
        "keep-alive client; wall-clock latency as the client sees it.",
        "",
        "| stdout | completed | timeouts (2 s) | median ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "normal": "read (background writer)",
        "stalled": "never read (background writer)",
        "stalled_sync": "never read, `background=False`",
    }
    for key, label in labels.items():
        row = results.get(key, {})
        if "skipped" in row:
            lines.append(f"| {label} | skipped: {row['skipped']} | | | |")
            continue
        lines.append(
            f"| {label} | {row.get('completed', 0)} | {row.get('timeouts', 0)} "
            f"| {_fmt(row.get('median_ms'), 3)} | {_fmt(row.get('p99_ms'), 3)} |"
        )
    normal = results.get("normal", {}).get("median_ms")
    stalled = results.get("stalled", {}).get("median_ms")
    ratio = stalled / normal if normal and stalled else None
    return lines, {"stall_ratio": ratio}


def instructions_section(results: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    lines = [
        "## Per request, in instructions (callgrind)",
        "",
        "The in-process driver above under valgrind's callgrind: instructions executed per "
        "request, the difference between 1200 and 200 requests over 1000. The same count on "
        "every run whatever the machine is doing, so these ratios are the stable ones; time "
        "on this CPU tracks them loosely (cache and branch effects are not counted).",
        "",
    ]
    if "skipped" in results:
        return [*lines, f"Skipped: {results['skipped']}."], {}
    bare = results.get("bare", {}).get("instructions")
    lines += ["| contender | instructions/request | overhead | x bare |", "|---|---:|---:|---:|"]
    summary: dict[str, Any] = {}
    for name, (_, label) in CONTENDERS.items():
        count = results.get(name, {}).get("instructions")
        if count is None:
            continue
        overhead = None if bare is None else count - bare
        ratio = None if not bare else count / bare
        summary[name] = {"overhead": overhead, "ratio": ratio}
        lines.append(
            f"| {label} | {count / 1000:.0f}k | "
            f"{'n/a' if overhead is None else f'{overhead / 1000:+.0f}k'} | {_fmt(ratio, 2)} |"
        )
    return lines, summary


def events_section() -> list[str]:
    if not (HERE / "bench_events.py").exists():
        return []
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_events"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    body = done.stdout.strip() or done.stderr.strip()[-2000:]
    return ["## The default chain, processor by processor (bench_events)", "", body]


def goals(
    req: dict[str, Any], libs: dict[str, Any], stall: dict[str, Any], instr: dict[str, Any]
) -> list[str]:
    reqlog = req.get("reqlog", {})
    recipe = req.get("recipe", {})
    half = (
        None
        if reqlog.get("overhead") is None or recipe.get("overhead") is None
        else reqlog["overhead"] <= recipe["overhead"] / 2
    )
    ratio = reqlog.get("ratio")
    rps = reqlog.get("rps_ratio")
    event = libs.get("reqlog_us")
    stall_ratio = stall.get("stall_ratio")
    stall_ok = None if stall_ratio is None else stall_ratio <= 1.15
    return [
        "## Goals",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
        f"| in-process overhead at most half the recipe's | reqlog +{_fmt(reqlog.get('overhead'))}"
        f" us, recipe +{_fmt(recipe.get('overhead'))} us | {_verdict(half)} |",
        f"| in-process at most 1.30x bare | {_fmt(ratio, 2)}x "
        f"| {_verdict(None if ratio is None else ratio <= 1.30)} |",
        f"| uvicorn req/s at least 0.85x bare | {_fmt(rps, 2)}x "
        f"| {_verdict(None if rps is None else rps >= 0.85)} |",
        f"| default chain at most 8 us/event | {_fmt(event, 2)} us "
        f"| {_verdict(None if event is None else event <= 8.0)} |",
        f"| a stalled sink adds no request latency | median stalled/normal "
        f"{_fmt(stall_ratio, 2)}x | {_verdict(stall_ok)} |",
        *_instruction_goals(instr),
    ]


def _instruction_goals(instr: dict[str, Any]) -> list[str]:
    reqlog, recipe = instr.get("reqlog"), instr.get("recipe")
    if not reqlog or not recipe:
        return []
    half = reqlog["overhead"] <= recipe["overhead"] / 2
    return [
        f"| the same two in-process goals, in instructions | reqlog {reqlog['ratio']:.2f}x bare, "
        f"overhead {reqlog['overhead'] / recipe['overhead']:.2f}x the recipe's "
        f"| {_verdict(reqlog['ratio'] <= 1.30)} (1.30x), {_verdict(half)} (half) |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run, not for RESULTS.md")
    parser.add_argument("--only", default="requests,instructions,libs,events,stall,redaction")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/RESULTS.md")
    args = parser.parse_args()
    only = set(args.only.split(","))
    started = time.monotonic()
    header = [
        "# reqlog benchmarks",
        "",
        f"Written by `python -m bench` ({'quick smoke run' if args.quick else 'full run'}) on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
    ]
    raw: dict[str, Any] = {}
    body: list[str] = []
    req_summary: dict[str, Any] = {}
    libs_summary: dict[str, Any] = {}
    stall_summary: dict[str, Any] = {}
    instr_summary: dict[str, Any] = {}
    if "requests" in only:
        print("bench: requests (in-process, then uvicorn + wrk)...", file=sys.stderr)
        raw["requests"] = bench_requests.run(args.quick)
        section, req_summary = requests_section(raw["requests"])
        body += [*section, ""]
    if "instructions" in only:
        print("bench: instructions per request under callgrind...", file=sys.stderr)
        raw["instructions"] = bench_instructions.run(args.quick)
        section, instr_summary = instructions_section(raw["instructions"])
        body += [*section, ""]
    if "libs" in only:
        print("bench: per-event cost of each library...", file=sys.stderr)
        raw["libs"] = bench_libs.run(args.quick)
        section, libs_summary = libs_section(raw["libs"])
        body += [*section, ""]
    if "events" in only:
        section = events_section()
        if section:
            print("bench: bench_events ran", file=sys.stderr)
            body += [*section, ""]
    if "stall" in only:
        print("bench: a stalled sink...", file=sys.stderr)
        raw["stall"] = bench_stall.run(args.quick)
        section, stall_summary = stall_section(raw["stall"])
        body += [*section, ""]
    if "redaction" in only:
        print("bench: redaction of hostile text against benign text...", file=sys.stderr)
        raw["redaction"] = bench_redaction.run(args.quick)
        body += [*bench_redaction.section(raw["redaction"]), ""]
    notes = (HERE / "NOTES.md").read_text() if (HERE / "NOTES.md").exists() else ""
    text = "\n".join(
        [
            *header,
            *goals(req_summary, libs_summary, stall_summary, instr_summary),
            "",
            *body,
            notes,
            "## Raw figures",
            "",
            "```json",
            json.dumps(raw, indent=1),
            "```",
            "",
            f"Suite time: {time.monotonic() - started:.0f} s.",
            "",
        ]
    )
    out = args.out or (HERE / ("RESULTS.quick.md" if args.quick else "RESULTS.md"))
    out.write_text(text)
    print(text)
    print(f"bench: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
