"""The ``reqlog`` command line tool: ``view``, ``stats``, ``trace`` and ``report`` for JSON logs.

Files may be plain or gzip-compressed (detected by content, not name); with no file, or ``-``,
standard input is read. Exit status: 0 on success, 1 when nothing could be read (or ``trace``
found no such request), 2 for a usage error.
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
examples:
  reqlog view app.log --status 5xx
  reqlog view -f app.log --level warning
  reqlog stats app.log app.log.1.gz --by route
  reqlog trace 3f2a9c0e app.log
  reqlog report app.log -o report.html
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"must be at least 1: {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from . import _stats

    parser = argparse.ArgumentParser(
        prog="reqlog",
        description="Read reqlog's JSON request logs: view, stats, trace, report.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    view = commands.add_parser(
        "view", help="pretty-print events, filtered, optionally following a file"
    )
    view.add_argument("files", nargs="*", metavar="FILE", help="log files (default: stdin)")
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
    view.add_argument("--since", metavar="T", help="ISO 8601 time (UTC) or an age: 15m, 2h, 1d")
    view.add_argument("--until", metavar="T", help="same forms as --since (exclusive)")
    view.add_argument("--json", action="store_true", help="print matching lines as they are")
    view.add_argument(
        "-v", "--verbose", action="store_true", help="every field, full timestamps and IDs"
    )
    _colour_option(view)

    stats = commands.add_parser("stats", help="per-route latency, rates and errors")
    stats.add_argument("files", nargs="*", metavar="FILE", help="log files (default: stdin)")
    stats.add_argument("--by", choices=_stats.GROUPINGS, default="route", help="group by")
    stats.add_argument(
        "--sort", choices=_stats.SORT_KEYS, default="total", help="order (default: total time)"
    )
    stats.add_argument("--top", type=_positive_int, metavar="N", help="only the first N groups")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=min(os.cpu_count() or 1, 4),
        help="processes for big plain files (default: CPUs, at most 4)",
    )

    trace = commands.add_parser("trace", help="every event of one request, with offsets")
    trace.add_argument("request_id", metavar="ID", help="request ID (a unique prefix is enough)")
    trace.add_argument("files", nargs="*", metavar="FILE", help="log files (default: stdin)")
    trace.add_argument("--json", action="store_true", help="JSON lines with offset_ms added")
    _colour_option(trace)

    report = commands.add_parser("report", help="one self-contained HTML report")
    report.add_argument("files", nargs="*", metavar="FILE", help="log files (default: stdin)")
    report.add_argument(
        "-o", "--output", default="report.html", help="HTML file to write ('-' for stdout)"
    )
    report.add_argument("--title", help="page title (default: reqlog report)")
    return parser


def _colour_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--color",
        "--colour",
        dest="color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour output (auto: when writing to a terminal; NO_COLOR is honoured)",
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reqlog`` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        return _dispatch(parser, args)
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
    out, err = sys.stdout, sys.stderr
    if args.command == "view":
        from . import _view
        from ._events import (
            LEVELS,
            EventFilter,
            normalise_request_id,
            parse_status_spec,
            parse_time_arg,
        )

        event_filter = EventFilter()
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
            if args.since:
                event_filter.since = parse_time_arg(args.since)
            if args.until:
                event_filter.until = parse_time_arg(args.until)
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
    if args.command == "stats":
        from . import _stats

        return _stats.run(
            args.files,
            by=args.by,
            sort=args.sort,
            top=args.top,
            as_json=args.json,
            jobs=args.jobs,
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
            out=out,
            err=err,
        )
    from . import _report

    return _report.run(args.files, output=args.output, title=args.title, out=out, err=err)


def _in_main_thread() -> bool:
    """Signal handlers can only be installed from the main thread (tests call main() too)."""
    import threading

    return threading.current_thread() is threading.main_thread()
