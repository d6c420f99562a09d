"""Helpers for users' own tests: capture processed events, check a chain, reset between tests.

- :func:`capture_events`: the events your code logs, as dicts, exactly as they are about to be
  rendered (after your processors, redaction and the schema), while they are still written.
- :func:`check_pipeline`: a conformance check of your configured chain, in the spirit of Go's
  ``slogtest``: one line per event, valid JSON, the required keys, secrets redacted, and no
  exception escaping a log call.
- :func:`reset`: back to unconfigured, context cleared.
- :func:`capture_logs`: structlog's own capture (the chain replaced, nothing written).

The pytest plugin (``reqlog.pytest_plugin``, registered on install) wraps these in the
``reqlog_events`` fixture.
"""

from __future__ import annotations

import datetime
import decimal
import io
import logging
import uuid
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import structlog
from structlog.typing import EventDict

from reqlog import _configure, schemas
from reqlog._logger import get_logger
from reqlog._state import STATE
from reqlog.output import Output, StreamSink

__all__ = [
    "PipelineCheckError",
    "PipelineReport",
    "capture_events",
    "capture_logs",
    "check_pipeline",
    "reset",
]


def reset() -> None:
    """Undo configure() and clear structlog's context-local bindings."""
    _configure.reset()
    structlog.contextvars.clear_contextvars()


@contextmanager
def capture_logs() -> Generator[list[EventDict], None, None]:
    """Capture reqlog and structlog events as dicts instead of writing them.

    A thin wrapper of ``structlog.testing.capture_logs`` that makes sure reqlog's chain exists
    first, so loggers created by ``reqlog.get_logger()`` are captured too. The chain is
    replaced while it runs: events are neither redacted nor written, and the standard
    library's records are not captured. :func:`capture_events` keeps the chain.

    >>> with capture_logs() as events:
    ...     reqlog.get_logger("t").info("hello")
    >>> events[0]["event"]
    'hello'
    """
    _configure.settings()
    with structlog.testing.capture_logs() as events:
        yield events


@contextmanager
def capture_events() -> Generator[list[dict[str, Any]], None, None]:
    """Collect every processed event, from reqlog, structlog and the standard library.

    Each event is a copy of the dict handed to the renderer: request context merged, your
    processors run, secrets redacted and, with ``format="json"``, renamed by the schema.
    Events are still written to the configured output; sampled-out or filtered events are
    not collected, as they are not written either. Works across ``configure()`` calls.

    >>> with capture_events() as events:
    ...     reqlog.get_logger("t").info("login", password="hunter2")
    >>> events[0]["password"]
    '[REDACTED]'
    """
    events: list[dict[str, Any]] = []
    STATE.captures.append(events)
    try:
        yield events
    finally:
        # By identity: two captures may hold equal lists.
        for index, active in enumerate(STATE.captures):
            if active is events:
                del STATE.captures[index]
                break


# --- check_pipeline ----------------------------------------------------------------------------


@dataclass
class PipelineReport:
    """What :func:`check_pipeline` logged, what came out, and what was wrong with it."""

    format: str
    schema: str
    cases: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


class PipelineCheckError(AssertionError):
    """Raised by :func:`check_pipeline` when the chain breaks a promise; ``.report`` has all."""

    def __init__(self, report: PipelineReport) -> None:
        self.report = report
        listing = "\n".join(f"  - {p}" for p in report.problems)
        super().__init__(f"reqlog pipeline check: {len(report.problems)} problem(s)\n{listing}")


# Distinctive secret values: found anywhere in the output, they were not redacted.
_PASSWORD: Final = "pw-Zq81xKm3vT"
_TOKEN: Final = "tok-7RfWq2LpXc"
_API_KEY: Final = "key-H4nd0ff9Qa"
_COOKIE: Final = "sess-0aP9gLm2Wd"
_BASIC: Final = "dXNlcjpwYTU1LXNlY3JldA=="
_BEARER: Final = "b3Ar3r-T0k3n-Vx91LmQzR8"
_JWT: Final = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJjaGVja19waXBlbGluZSJ9"
    ".c2lnbmF0dXJlLW9mLWNoZWNrLXBpcGVsaW5l"
)
_CARD: Final = "4111 1111 1111 1111"
_SSN: Final = "078-05-1120"
_EXC_MESSAGE: Final = "check_pipeline boom"
# Sequences that must never reach a terminal or a log file raw.
_INJECTED: Final = ("\r\n", "\x1b]0;pwned\x07", "\x1b[2J")

_Run = Callable[[Any, logging.Logger, int], None]


def _plain(log: Any, std: logging.Logger, level: int) -> None:
    log.log(level, "check_plain", item_id=42, ok=True, ratio=0.5, nothing=None)


def _secret_keys(log: Any, std: logging.Logger, level: int) -> None:
    log.log(
        level,
        "check_secret_keys",
        password=_PASSWORD,
        apiKey=_API_KEY,
        Authorization=f"Basic {_BASIC}",
        user={"name": "alice", "session_id": _COOKIE},
        items=[{"sku": "A1", "card_number": _CARD}, {"ssn": _SSN}],
    )


def _secret_query(log: Any, std: logging.Logger, level: int) -> None:
    log.log(level, "check_secret_query", query=f"q=shoes&access_token={_TOKEN}&page=2")


def _secret_headers(log: Any, std: logging.Logger, level: int) -> None:
    log.log(
        level,
        "check_secret_headers",
        request_headers={
            "authorization": f"Bearer {_BEARER}",
            "cookie": f"session={_COOKIE}",
            "x-api-key": _API_KEY,
            "accept": "application/json",
        },
    )


def _secret_text(log: Any, std: logging.Logger, level: int) -> None:
    # Free text: the event itself and an error message, where a redactor looks for patterns.
    log.log(
        level,
        f"check_secret_text calling upstream with Bearer {_BEARER} for card {_CARD}",
        error_message=f"upstream rejected token {_JWT}",
    )


def _control_chars(log: Any, std: logging.Logger, level: int) -> None:
    log.log(
        level,
        'check_control\r\n{"event": "forged", "level": "critical"}',
        path='/items/1\r\n{"event": "forged"}\n',
        agent='curl/8 \x1b]0;pwned\x07 "quoted" \\ back\x1b[2J',
        tab="a\tb",
    )


def _exception(log: Any, std: logging.Logger, level: int) -> None:
    try:
        raise ValueError(_EXC_MESSAGE)
    except ValueError:
        log.log(max(level, logging.ERROR), "check_exception", exc_info=True)


class _BadRepr:
    def __repr__(self) -> str:
        msg = "no repr for you"
        raise RuntimeError(msg)


def _odd_objects(log: Any, std: logging.Logger, level: int) -> None:
    cycle: list[Any] = [1]
    cycle.append(cycle)
    log.log(
        level,
        "check_odd_objects",
        a_set={3, 1, 2},
        raw=b"\xff\x00bytes",
        when=datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC),
        amount=decimal.Decimal("12.30"),
        uid=uuid.UUID(int=1),
        big=2**70,
        nan=float("nan"),
        cycle=cycle,
        obj=object(),
        bad=_BadRepr(),
        int_keys={1: "one", (2, 3): "tuple"},
    )


def _unicode(log: Any, std: logging.Logger, level: int) -> None:
    log.log(level, "check_unicode", name="Zoë 日本 🎉", rtl="\u202eevil", nul="a\x00b")


def _stdlib_args(log: Any, std: logging.Logger, level: int) -> None:
    std.log(
        level,
        "check_stdlib user %s paid %d with %s",
        "alice",
        3,
        f"Bearer {_BEARER}",
        extra={"password": _PASSWORD},
    )


def _stdlib_bad_args(log: Any, std: logging.Logger, level: int) -> None:
    # A format string and arguments that do not match: the standard library would print a
    # "--- Logging error ---" report; the event must still come out as one line.
    std.log(level, "check_stdlib_bad_args %d items", "not-a-number")


def _stdlib_exception(log: Any, std: logging.Logger, level: int) -> None:
    try:
        raise KeyError(_EXC_MESSAGE)
    except KeyError:
        std.log(max(level, logging.ERROR), "check_stdlib_exception", exc_info=True)


@dataclass(frozen=True)
class _Case:
    name: str
    run: _Run
    secrets: tuple[str, ...] = ()
    exception: bool = False  # its line must carry the exception's message
    stdlib: bool = False  # logged through the standard library


_CASES: Final = (
    _Case("plain", _plain),
    _Case("secret_keys", _secret_keys, (_PASSWORD, _API_KEY, _BASIC, _COOKIE, _CARD, _SSN)),
    _Case("secret_query", _secret_query, (_TOKEN,)),
    _Case("secret_headers", _secret_headers, (_BEARER, _COOKIE, _API_KEY)),
    _Case("secret_text", _secret_text, (_BEARER, _JWT, _CARD)),
    _Case("control_chars", _control_chars),
    _Case("exception", _exception, exception=True),
    _Case("odd_objects", _odd_objects),
    _Case("unicode", _unicode),
    _Case("stdlib_args", _stdlib_args, (_BEARER, _PASSWORD), stdlib=True),
    _Case("stdlib_bad_args", _stdlib_bad_args, stdlib=True),
    _Case("stdlib_exception", _stdlib_exception, exception=True, stdlib=True),
)

_LEVELS: Final = frozenset({"debug", "info", "warning", "error", "critical"})


class _RecordingOutput(Output):
    """An in-memory output that also keeps the failures reqlog would report on stderr."""

    def __init__(self, buffer: io.BytesIO) -> None:
        super().__init__([StreamSink(buffer, name="check_pipeline")])
        self.reports: list[str] = []

    def report(self, key: str, what: str) -> None:
        self.reports.append(what)


def check_pipeline(**options: Any) -> PipelineReport:
    """Check that a configured reqlog chain keeps reqlog's promises; raise if it does not.

    With no arguments it checks the current configuration (configuring defaults if there is
    none); with ``configure()`` options it configures reqlog with them first, and leaves it
    reset afterwards. Either way the lines go to memory, not to your output.

    It logs a battery of events through reqlog's logger and the standard library (plain
    values; secrets in keys, nested values, query strings, headers and free text; CR, LF, ESC
    and quotes; an exception; unserialisable objects; ``%`` arguments; unicode) and checks:

    - exactly one line per event (the console format may print a traceback below it);
    - with ``format="json"``, a JSON object with the required keys (``event``, ``level``,
      ``timestamp``, ``logger``, or the schema's names) and a UTC ISO 8601 timestamp;
    - no secret in clear, no control sequence written raw, tracebacks kept;
    - no exception escaping a log call, and no failure reported by reqlog.

    Returns a :class:`PipelineReport`; raises :class:`PipelineCheckError` (an
    ``AssertionError``, so a failing check reads well in pytest) listing every problem.

    >>> def my_processor(logger, method_name, event_dict):
    ...     event_dict["region"] = "eu-west-1"
    ...     return event_dict
    >>> reqlog.configure(processors=[my_processor], output="app.log")
    >>> reqlog.testing.check_pipeline().ok
    True
    """
    configured_here = bool(options)
    if configured_here:
        _configure.configure(**{**options, "output": io.BytesIO()})
    settings = _configure.settings()
    buffer = io.BytesIO()
    output = _RecordingOutput(buffer)
    report = PipelineReport(format=settings.format, schema=settings.schema)
    stdlib_routed = STATE.handler is not None
    if not stdlib_routed:
        report.notes.append("stdlib=False: standard-library records were not checked")
    level = max(settings.level, logging.INFO)
    log = get_logger("check_pipeline")
    std = logging.getLogger("check_pipeline.stdlib")

    # Only reqlog's handler sees the battery's records: other handlers (pytest's log capture,
    # which fails a test on a bad %-format) are not what is checked, and get no fake secrets.
    handler = STATE.handler
    std.handlers = [handler] if handler is not None else []
    std.propagate = False
    std.setLevel(logging.NOTSET)
    with STATE.lock:
        previous = STATE.output
        STATE.output = output
    try:
        for case in _CASES:
            if case.stdlib and not stdlib_routed:
                continue
            name = case.name
            report.cases.append(name)
            start = buffer.tell()
            reports_before = len(output.reports)
            try:
                case.run(log, std, level)
            except Exception as exc:  # noqa: BLE001 - that is the finding
                report.problems.append(f"{name}: the log call raised {exc!r}")
            for what in output.reports[reports_before:]:
                report.problems.append(f"{name}: reqlog reported a failure: {what}")
            written = buffer.getvalue()[start:]
            _check_case(report, case, written)
    finally:
        with STATE.lock:
            STATE.output = previous
        std.handlers = []
        std.propagate = True
        if configured_here:
            reset()
    if report.problems:
        raise PipelineCheckError(report)
    return report


def _check_case(report: PipelineReport, case: _Case, written: bytes) -> None:
    problems = report.problems
    name = case.name
    text = written.decode("utf-8", "replace")
    lines = text.splitlines(keepends=True)
    report.lines.extend(line.rstrip("\n") for line in lines)
    if not lines:
        problems.append(f"{name}: expected one line, got none")
        return
    # The console format is for people: a traceback is printed below its event, on purpose.
    multiline_ok = case.exception and report.format == "console"
    if len(lines) != 1 and not multiline_ok:
        problems.append(f"{name}: expected exactly one line, got {len(lines)}: {text[:300]!r}")
    line = lines[0]
    if not line.endswith("\n"):
        problems.append(f"{name}: the line does not end with a newline")
    body = line[:-1] if line.endswith("\n") else line
    if "\r" in body:
        problems.append(f"{name}: a raw carriage return in the line")
    for sequence in _INJECTED[1:]:
        if sequence in body:
            problems.append(f"{name}: the control sequence {sequence!r} was written raw")
    for secret in case.secrets:
        if secret in text or secret.replace(" ", "") in text:
            problems.append(f"{name}: the secret {secret!r} was written in clear")
    if case.exception and _EXC_MESSAGE not in text:
        problems.append(f"{name}: the exception (message {_EXC_MESSAGE!r}) is missing")
    if report.format == "json":
        _check_json(report, name, body)


def _check_json(report: PipelineReport, name: str, body: str) -> None:
    problems = report.problems
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problems.append(f"{name}: not valid JSON ({exc}): {body[:300]!r}")
        return
    if not isinstance(event, dict):
        problems.append(f"{name}: the line is JSON but not an object: {body[:300]!r}")
        return
    event_key, level_key, timestamp_key, logger_key = schemas.required_keys(report.schema)
    values = {}
    for key in (event_key, level_key, timestamp_key, logger_key):
        value = _lookup(event, key)
        if value is None:
            problems.append(f"{name}: required key {key!r} missing")
        values[key] = value
    level = values[level_key]
    if level is not None and level not in _LEVELS:
        problems.append(f"{name}: {level_key!r} is {level!r}, expected a lower-case level name")
    stamp = values[timestamp_key]
    if stamp is not None:
        try:
            parsed = datetime.datetime.fromisoformat(str(stamp))
        except ValueError:
            problems.append(f"{name}: {timestamp_key!r} is {stamp!r}, not ISO 8601")
        else:
            if parsed.utcoffset() != datetime.timedelta(0):
                problems.append(f"{name}: {timestamp_key!r} is {stamp!r}, not UTC")
    message = values[event_key]
    if message is not None and (not isinstance(message, str) or not message):
        problems.append(f"{name}: {event_key!r} is {message!r}, expected a non-empty string")


def _lookup(event: dict[str, Any], dotted: str) -> Any:
    """``event[dotted]``, or the nested value at that path (ECS nests its objects)."""
    if dotted in event:
        return event[dotted]
    node: Any = event
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
