"""The ``reqlog`` command line tool: questions about JSON request logs, answered.

``view`` and ``top`` read lines as they come (a followed file, a pipe); ``stats``, ``report``,
``trace``, ``errors``, ``diff`` and ``sql`` run on DuckDB (the ``cli`` extra). Files may be
plain or gzip-compressed (detected by content); with no file, or ``-``, standard input is read.
Exit status: 0 on success, 1 when nothing could be read (or ``trace`` found no such request),
2 for a usage error, 3 when the ``cli`` extra is missing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

__all__ = ["main"]

_EPILOG = """\
questions and the commands that answer them:
  what is happening right now?        reqlog top app.log   (or: uvicorn app:app | reqlog top)
  which routes are slow or failing?   reqlog stats app.log --since 1h
  what changed after the deploy?      reqlog diff app.log --at 14:05 --window 30m
  what are the errors?                reqlog errors app.log
  what happened to request X?         reqlog trace 3f2a9c0e app.log
  show me the lines                   reqlog view -f app.log --status 5xx
  a page to share                     reqlog report app.log -o report.html
  anything else                       reqlog sql "SELECT count(*) FROM requests" app.log
"""

EXIT_MISSING_EXTRA = 3


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"must be at least 1: {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _time(text: str) -> float:
    from ._events import parse_time_arg

    try:
        return parse_time_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="log files, plain or gzip; a quoted glob works ('logs/*.jsonl.gz'); default: stdin",
    )


def _window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        metavar="T",
        type=_time,
        help="only events at or after T: ISO 8601 (UTC unless an offset is given), a time of"
        " day (14:05, UTC) or an age such as 30s, 15m, 2h, 1d",
    )
    parser.add_argument("--until", metavar="T", type=_time, help="only events before T")


def _colour_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--color",
        "--colour",
        dest="color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour output (auto: when writing to a terminal; NO_COLOR is honoured)",
    )


def _threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        help="threads DuckDB may use (default: one per CPU)",
    )


class _Intermixed(argparse.ArgumentParser):
    """A subcommand's parser that takes options between its positionals.

    ``reqlog trace ID --json app.log``: plain argparse ends ``FILE...`` at the first option
    and refuses the file after it; the standard library's intermixed parsing accepts it.
    """

    _inside = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from ._stats import GROUPINGS, SORT_KEYS

    parser = argparse.ArgumentParser(
        prog="reqlog",
        description="Answers about reqlog's JSON request logs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Intermixed
    )

    view = commands.add_parser(
        "view", help="pretty-print events, filtered, optionally following a file"
    )
    _files(view)
    view.add_argument(
        "-f", "--follow", action="store_true", help="keep reading as the files grow (tail -F)"
    )
    view.add_argument("--request-id", metavar="ID", help="only this request (a prefix is enough)")
    view.add_argument(
        "--level", metavar="L", help="minimum level: debug, info, warning, error, critical"
    )
    view.add_argument("--slow", action="store_true", help="only slow access events")
    view.add_argument(
        "--status", metavar="S", help="status codes: 5xx, 404, 500-504, >=400, or a list: 4xx,5xx"
    )
    view.add_argument("--route", metavar="R", help="route template or path, a glob works too")
    _window(view)
    view.add_argument("--json", action="store_true", help="print matching lines as they are")
    view.add_argument(
        "-v", "--verbose", action="store_true", help="every field, full timestamps and IDs"
    )
    _colour_option(view)

    top = commands.add_parser(
        "top", help="live view of a followed file or of stdin: rates, errors, latency by route"
    )
    _files(top)
    top.add_argument(
        "--window",
        metavar="T",
        default="60s",
        help="sliding window the rates and percentiles cover (default: 60s)",
    )
    top.add_argument(
        "--refresh", type=float, default=1.0, metavar="S", help="seconds between redraws"
    )
    top.add_argument(
        "--from-start",
        action="store_true",
        help="read a file from its start instead of its end (a pipe is always read whole)",
    )
    top.add_argument("--rows", type=_positive_int, default=15, metavar="N", help="routes shown")
    _window(top)

    stats = commands.add_parser("stats", help="per-route latency, rates and errors")
    _files(stats)
    stats.add_argument("--by", choices=GROUPINGS, default="route", help="group by")
    stats.add_argument(
        "--sort", choices=SORT_KEYS, default="total", help="order (default: total time)"
    )
    stats.add_argument("--top", type=_positive_int, metavar="N", help="only the first N groups")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    _window(stats)
    _threads(stats)

    diff = commands.add_parser(
        "diff", help="what changed between two logs or two time windows, per route"
    )
    diff.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="BEFORE AFTER (two files or quoted globs), or one log with --at",
    )
    diff.add_argument(
        "--at",
        metavar="T",
        type=_time,
        help="compare the time before T with the time from T on (one log; a deploy time)",
    )
    diff.add_argument(
        "--window",
        metavar="D",
        help="with --at: how much time on each side (default: all of it), e.g. 30m",
    )
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    diff.add_argument("--all", action="store_true", help="show unchanged routes too")
    _window(diff)
    _threads(diff)

    errors = commands.add_parser(
        "errors", help="failures grouped by error type and innermost application frame"
    )
    _files(errors)
    errors.add_argument("--top", type=_positive_int, default=20, metavar="N", help="groups shown")
    errors.add_argument("--json", action="store_true", help="machine-readable output")
    _window(errors)
    _threads(errors)

    trace = commands.add_parser("trace", help="every event of one request, with offsets")
    trace.add_argument("request_id", metavar="ID", help="request ID (a unique prefix is enough)")
    _files(trace)
    trace.add_argument("--json", action="store_true", help="JSON lines with offset_ms added")
    _window(trace)
    _colour_option(trace)
    _threads(trace)

    report = commands.add_parser("report", help="one self-contained HTML report")
    _files(report)
    report.add_argument(
        "-o", "--output", default="report.html", help="HTML file to write ('-' for stdout)"
    )
    report.add_argument("--title", help="page title (default: reqlog report)")
    _window(report)
    _threads(report)

    sql = commands.add_parser(
        "sql", help="any SQL over the logs: views 'requests' (access events) and 'events'"
    )
    sql.add_argument("query", metavar="SQL", help='e.g. "SELECT route, count(*) FROM requests"')
    _files(sql)
    sql.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default: table)",
    )
    _window(sql)
    _threads(sql)
    return parser


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reqlog`` command line and return its exit status."""
    from ._engine import MissingExtra

    parser = build_parser()
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        return _dispatch(parser, args)
    except MissingExtra as exc:
        print(f"reqlog {args.command}: {exc}", file=err)
        return EXIT_MISSING_EXTRA
    except BrokenPipeError:
        # The reader went away (``reqlog view | head``): stop quietly, like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return 0
    except KeyboardInterrupt:
        print(file=err)
        return 130
    finally:
        err.flush()


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "view":
        return _run_view(parser, args)
    if args.command == "top":
        if _in_main_thread():
            signal.signal(signal.SIGTERM, _on_sigterm)  # leave the terminal as it was
        return _run_engine(parser, args)
    from ._engine import require_duckdb
    from ._safe import escape

    duckdb = require_duckdb()
    try:
        return _run_engine(parser, args)
    except duckdb.Error as exc:
        # A glob matching no file, a file DuckDB cannot read: said once, as DuckDB says it.
        print(f"reqlog {args.command}: {escape(str(exc))}", file=sys.stderr)
        return 1


def _run_engine(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ._engine import Window

    out, err = sys.stdout, sys.stderr
    window = Window(args.since, args.until)
    if args.command == "top":
        from . import _top

        return _top.run(
            args.files,
            window_s=_duration(parser, args.window),
            refresh=args.refresh,
            rows=args.rows,
            from_start=args.from_start,
            time_window=window,
            out=out,
            err=err,
        )
    threads = getattr(args, "jobs", None)
    if args.command == "stats":
        from . import _stats

        return _stats.run(
            args.files,
            by=args.by,
            sort=args.sort,
            top=args.top,
            as_json=args.json,
            window=window,
            threads=threads,
            out=out,
            err=err,
        )
    if args.command == "diff":
        from . import _diff

        try:
            sides = _diff.sides(args.logs, at=args.at, window=args.window, bounds=window)
        except ValueError as exc:
            parser.error(str(exc))
        return _diff.run(
            sides, as_json=args.json, show_all=args.all, threads=threads, out=out, err=err
        )
    if args.command == "errors":
        from . import _errors

        return _errors.run(
            args.files,
            top=args.top,
            as_json=args.json,
            window=window,
            threads=threads,
            out=out,
            err=err,
        )
    if args.command == "trace":
        from . import _trace, _view

        return _trace.run(
            args.request_id,
            args.files,
            colour=_view.use_colour(args.color, out),
            as_json=args.json,
            window=window,
            threads=threads,
            out=out,
            err=err,
        )
    if args.command == "sql":
        from . import _sql

        return _sql.run(
            args.query,
            args.files,
            fmt=args.format,
            window=window,
            threads=threads,
            out=out,
            err=err,
        )
    from . import _report

    return _report.run(
        args.files,
        output=args.output,
        title=args.title,
        window=window,
        threads=threads,
        out=out,
        err=err,
    )


def _duration(parser: argparse.ArgumentParser, text: str) -> float:
    from ._events import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        parser.error(str(exc))


def _run_view(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from . import _view
    from ._events import (
        LEVELS,
        EventFilter,
        normalise_request_id,
        parse_status_spec,
    )

    out, err = sys.stdout, sys.stderr
    event_filter = EventFilter(since=args.since, until=args.until)
    try:
        if args.request_id:
            event_filter.request_id = normalise_request_id(args.request_id)
        if args.level:
            if args.level.lower() not in LEVELS:
                parser.error(f"unknown level: {args.level}")
            event_filter.min_level = LEVELS[args.level.lower()]
        event_filter.slow = args.slow
        if args.status:
            event_filter.status = parse_status_spec(args.status)
        event_filter.route = args.route
    except ValueError as exc:
        parser.error(str(exc))
    if args.follow and _in_main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    return _view.run(
        args.files,
        event_filter=event_filter,
        follow=args.follow,
        colour=_view.use_colour(args.color, out),
        verbose=args.verbose,
        raw=args.json,
        out=out,
        err=err,
    )


def _in_main_thread() -> bool:
    """Signal handlers can only be installed from the main thread (tests call main() too)."""
    import threading

    return threading.current_thread() is threading.main_thread()
