"""The fused path (reqlog/_fused.py) writes what the generic chain writes, byte for byte.

Hypothesis draws access events (the middleware's fields, with values of any kind, secrets from
the redaction corpus, odd keys), app events (bound values, keywords, positional arguments),
the request's context, structlog's context variables and the clock, and both paths must write
the same line. The fused path is installed only for reqlog's default JSON chain: with a user
processor, a schema, another format, sampling, a slow-request output or OTLP, events go the
generic way, and a user processor sees the event it always saw.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

import reqlog
from reqlog import _emit, context
from reqlog._access import REQUEST_FIELDS
from reqlog._foreign import STRUCTLOG_CONTEXT_VARS
from reqlog._render import JSONRenderer
from reqlog._state import STATE
from reqlog.processors import IsoTimeStamper, Redactor
from tests.redaction_corpus import SECRETS

ACCESS_KEYS = REQUEST_FIELDS  # in the order the middleware hands them over

texts = st.one_of(
    st.sampled_from(["GET", "/items/42", "q=shoes", "", "curl/8", "1.1", "x" * 300]),
    st.sampled_from([text for _, text in SECRETS]),
    st.sampled_from(["a=1&password=hunter2", "token=abc&q=1", "\r\n\x1b[2J\u2028", "\ud800"]),
    st.text(max_size=40),
)
scalars = st.one_of(
    texts,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    # under _record, a standard-library record names the logger
    st.just(logging.LogRecord("from.record", logging.INFO, "f.py", 1, "m", None, None)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(texts, st.integers()), inner, max_size=3),
        st.binary(max_size=8),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=6,
)
keys = st.one_of(
    st.sampled_from(["password", "api_key", "error_message", "token", "body", "q", "exc_info"]),
    # (not stack_info: the stack it renders is the caller's, which differs between the two)
    st.sampled_from(["_record", "service", "event", "level", "logger", "trace_id"]),
    st.text(min_size=1, max_size=12),
)
extras = st.dictionaries(keys, values, max_size=4)
# Keys that are not strings (orjson then needs its OPT_NON_STR_KEYS, the Redactor walks them).
odd_extras = st.dictionaries(
    st.one_of(keys, st.integers(), st.tuples(st.integers()), st.none()), values, max_size=3
)
levels = st.sampled_from(
    [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL, 25]
)
# Wall-clock readings: around now, at whole seconds and half microseconds, before 1970.
clocks = st.one_of(
    st.floats(min_value=1.6e9, max_value=2.1e9),
    st.integers(min_value=1_600_000_000, max_value=2_100_000_000).map(float),
    st.integers(min_value=1_600_000_000_000_000, max_value=2_100_000_000_000_000).map(
        lambda micros: (micros + 0.5) / 1_000_000
    ),
    st.floats(min_value=-1e6, max_value=2.0),
)
contexts = st.one_of(
    st.none(),
    st.fixed_dictionaries({"request_id": texts, "client_ip": st.one_of(st.none(), texts)}),
    st.fixed_dictionaries(
        {"request_id": texts, "client_ip": st.one_of(st.none(), texts)}, optional={"x": values}
    ).flatmap(lambda base: extras.map(lambda more: {**base, **more})),
)
structlog_vars: st.SearchStrategy[dict[Any, Any]] = st.one_of(
    st.just({}), st.dictionaries(keys, scalars, max_size=2)
)

SPAN = trace.SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=False,
    trace_flags=trace.TraceFlags(1),
)

CONFIGS = [
    {"service": "orders"},
    {"service": None, "trace_context": False},
    {"service": "orders", "redact": False},
    {"service": "orders", "redact": Redactor(extra_keys=["*agent*"], censor="***")},
    {"service": "orders", "level": "WARNING"},
]


class Lines:
    def __init__(self) -> None:
        self.stream = io.BytesIO()

    def configure(self, **options: Any) -> None:
        reqlog.configure(output=self.stream, format="json", stdlib=False, **options)

    def take(self) -> bytes:
        data = self.stream.getvalue()
        self.stream.seek(0)
        self.stream.truncate()
        return data


@pytest.fixture
def lines() -> Lines:
    return Lines()


class _Frozen:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Frozen:
    frozen = _Frozen()
    monkeypatch.setattr(time, "time", frozen)
    return frozen


@pytest.fixture(autouse=True)
def _no_structlog_bindings() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()


def _within(ctx_fields: dict[str, Any] | None, bound: dict[str, Any]) -> Any:
    token = context.CURRENT.set(
        None if ctx_fields is None else context.RequestContext(dict(ctx_fields), None)
    )
    structlog.contextvars.clear_contextvars()
    tokens = structlog.contextvars.bind_contextvars(**{str(k): v for k, v in bound.items()})
    return token, tokens


def _without(token: Any, tokens: Any) -> None:
    structlog.contextvars.reset_contextvars(**tokens)
    context.CURRENT.reset(token)


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    extra=st.one_of(extras, odd_extras),
    values_=st.lists(values, min_size=len(ACCESS_KEYS), max_size=len(ACCESS_KEYS)),
    in_span=st.booleans(),
    flat=st.booleans(),
    ctx_fields=contexts,
    bound=structlog_vars,
    level=levels,
    event=st.sampled_from(["request_completed", "request_failed", "websocket_closed"]),
    now=clocks,
)
def test_access_events_are_the_generic_chains_lines(
    lines: Lines,
    clock: _Frozen,
    config: dict[str, Any],
    extra: dict[Any, Any],
    values_: list[Any],
    flat: bool,
    ctx_fields: dict[str, Any] | None,
    bound: dict[str, Any],
    level: int,
    event: str,
    now: float,
    in_span: bool,
) -> None:
    lines.configure(**config)
    access = STATE.access
    assert access is not None
    assert access.emit is not _emit.emit_access  # the fused path is what runs
    standard = ["GET", "/items/42", "/items/{id}", "q=shoes", 200, 1.25, "ua", "1.1", 42]
    fields = dict(zip(ACCESS_KEYS, standard if flat else values_, strict=True))
    fields.update(extra)
    clock.now = now
    token, tokens = _within(ctx_fields, bound)
    span = trace.NonRecordingSpan(SPAN) if in_span else trace.INVALID_SPAN
    try:
        with trace.use_span(span):
            access.emit(level, event, dict(fields))
            fused = lines.take()
            _emit.emit_access(level, event, dict(fields))
            generic = lines.take()
    finally:
        _without(token, tokens)
    assert fused == generic


# The common request's values as the middleware makes them, and values of any other kind in the
# places the one-call path checks (it must hand those over to the generic one).
request_ids = st.one_of(texts, values)
strings_or_none = st.one_of(st.none(), texts)
# What reqlog.bodies.Capture.fields hands over (headers, bodies, sizes), with any values.
captures = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(
            [
                *("request_headers", "response_headers", "request_bytes", "request_body"),
                *("request_body_truncated", "response_body", "response_body_truncated"),
            ]
        ),
        values,
        max_size=5,
    ),
)


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # As the middleware makes them (most draws), or any value where the one-call path checks.
    checked=st.one_of(
        st.tuples(
            texts,
            texts,
            st.sampled_from([200, 204, 301, 404, 500, 599, 799]),
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from(["1.1", "2", None]),
        ),
        st.tuples(values, values, values, values, values),
    ),
    route=strings_or_none,
    query=texts,
    user_agent=strings_or_none,
    sent=st.integers(min_value=0, max_value=2**40),
    in_span=st.booleans(),
    ctx_fields=st.one_of(
        st.fixed_dictionaries({"request_id": texts, "client_ip": strings_or_none}),
        contexts,
        st.fixed_dictionaries({"request_id": request_ids, "client_ip": strings_or_none}),
        # reqlog's two keys in another order, or another key
        st.fixed_dictionaries({"client_ip": strings_or_none, "request_id": texts}),
        st.fixed_dictionaries({"request_id": texts, "user": texts}),
    ),
    bound=st.one_of(st.just({}), structlog_vars),
    now=clocks,
    captured=captures,
)
def test_the_common_request_in_one_call_is_the_generic_chains_line(
    lines: Lines,
    clock: _Frozen,
    config: dict[str, Any],
    checked: tuple[Any, Any, Any, Any, Any],
    route: str | None,
    query: str,
    user_agent: str | None,
    sent: int,
    in_span: bool,
    ctx_fields: dict[str, Any] | None,
    bound: dict[str, Any],
    now: float,
    captured: dict[str, Any] | None,
) -> None:
    # What the middleware hands over for a request with nothing to add but what it captured
    # (AccessLog.request) is the line the generic chain writes for the same fields at the
    # table's level.
    lines.configure(**config)
    access = STATE.access
    assert access is not None
    assert access.fused is not None  # the one-call path is what runs
    method, path, status, duration, http_version = checked
    values_ = [method, path, route, query, status, duration, user_agent, http_version, sent]
    levels = reqlog.processors.StatusLevels()
    try:
        level = levels(status)
    except TypeError:  # an unhashable status: the table lookup fails the same way in both
        return
    clock.now = now
    token, tokens = _within(ctx_fields, bound)
    try:
        fused, generic = _one_call_and_generic(lines, level, values_, captured, in_span)
    finally:
        _without(token, tokens)
    assert fused == generic


def _one_call_and_generic(
    lines: Lines, level: int, values_: Any, captured: dict[str, Any] | None, in_span: bool
) -> tuple[bytes, bytes]:
    """The line of the one-call request (AccessLog.request) and the generic chain's line for
    the same fields (the nine values, then what was captured)."""
    access = STATE.access
    assert access is not None
    fields = dict(zip(ACCESS_KEYS, values_, strict=True))
    fields.update(captured or {})
    span = trace.NonRecordingSpan(SPAN) if in_span else trace.INVALID_SPAN
    with trace.use_span(span):
        one_call: Any = access.request
        one_call(*values_, captured)
        fused = lines.take()
        _emit.emit_access(level, "request_completed", fields)
        generic = lines.take()
    return fused, generic


@pytest.fixture
def no_structlog_variables() -> Iterator[None]:
    """structlog's registry of context variables emptied: once a key was bound anywhere in
    the process, reqlog hands every event to structlog's merge, never to the one-call path."""
    saved = dict(STRUCTLOG_CONTEXT_VARS)
    STRUCTLOG_CONTEXT_VARS.clear()
    try:
        yield
    finally:
        STRUCTLOG_CONTEXT_VARS.update(saved)


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values_=st.tuples(
        texts,
        texts,
        texts,
        texts,
        st.sampled_from([200, 404, 500]),
        st.floats(allow_nan=False, allow_infinity=False),
        strings_or_none,
        st.sampled_from(["1.1", "2", None]),
        st.integers(min_value=0, max_value=2**40),
    ),
    captured=captures.filter(lambda captured: captured is not None),
    ctx_fields=st.fixed_dictionaries({"request_id": texts, "client_ip": strings_or_none}),
    in_span=st.booleans(),
)
def test_a_captured_request_in_one_call_is_the_generic_chains_line(
    lines: Lines,
    clock: _Frozen,
    no_structlog_variables: None,
    config: dict[str, Any],
    values_: tuple[Any, ...],
    captured: dict[str, Any],
    ctx_fields: dict[str, Any],
    in_span: bool,
) -> None:
    # Headers and bodies captured (their keys in any order, any values, secrets among them)
    # take the one-call path; the line is the generic chain's for the same fields.
    lines.configure(**config)
    access = STATE.access
    assert access is not None
    assert access.fused is not None  # the one-call path is what runs
    level = reqlog.processors.StatusLevels()(values_[4])
    token = context.CURRENT.set(context.RequestContext(dict(ctx_fields), None))
    try:
        fused, generic = _one_call_and_generic(lines, level, values_, captured, in_span)
    finally:
        context.CURRENT.reset(token)
    assert fused == generic


def test_no_one_call_request_with_slowness_or_a_level_callable() -> None:
    reqlog.configure(output=io.BytesIO(), format="json", slow_request_ms=100)
    assert STATE.access is not None
    assert STATE.access.fused is None
    reqlog.configure(output=io.BytesIO(), format="json", status_levels=lambda code, slow: "INFO")
    assert STATE.access is not None
    assert STATE.access.fused is None
    reqlog.configure(output=io.BytesIO(), format="json", processors=[_recording([])])
    assert STATE.access is not None
    assert STATE.access.fused is None


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["debug", "info", "warning", "warn", "error", "critical", "msg"]),
    event=st.one_of(texts, st.just("user %s paid %d"), st.none()),
    initial=extras,
    # (not stack_info: the stack it renders is the caller's, which differs between the two)
    kw=extras.map(lambda d: {str(k): v for k, v in d.items() if k not in ("event", "stack_info")}),
    ctx_fields=contexts,
    bound=structlog_vars,
    now=clocks,
    in_span=st.booleans(),
)
def test_app_events_are_the_generic_chains_lines(
    lines: Lines,
    clock: _Frozen,
    config: dict[str, Any],
    method: str,
    event: Any,
    initial: dict[Any, Any],
    kw: dict[str, Any],
    ctx_fields: dict[str, Any] | None,
    bound: dict[str, Any],
    now: float,
    in_span: bool,
) -> None:
    lines.configure(**config)
    # (not stack_info here either: see kw)
    log = reqlog.get_logger("app", **{str(k): v for k, v in initial.items() if k != "stack_info"})
    fused_method = getattr(_emit.BoundLogger, method)
    clock.now = now
    token, tokens = _within(ctx_fields, bound)
    span = trace.NonRecordingSpan(SPAN) if in_span else trace.INVALID_SPAN
    try:
        with trace.use_span(span):
            if event == "user %s paid %d":
                getattr(log, method)(event, "ada", 3, **kw)
                fused = lines.take()
                event = "user ada paid 3"
            else:
                getattr(log, method)(event, **kw)
                fused = lines.take()
            name = {"warn": "warning", "msg": "info"}.get(method, method)
            if fused_method.__module__ == "reqlog._fused":
                log._proxy_to_logger(name, event, **kw)  # type: ignore[attr-defined]
                assert lines.take() == fused
            else:  # below the level: structlog's no-op, in both
                assert fused == b""
    finally:
        _without(token, tokens)


def test_app_event_with_an_exception_takes_the_rest_of_the_chain(
    lines: Lines, clock: _Frozen
) -> None:
    lines.configure(service="orders")
    log = reqlog.get_logger("app")
    try:
        raise ValueError("token=abc123 expired")
    except ValueError:
        log.exception("failed", password="pw")
        fused = lines.take()
        log._proxy_to_logger("error", "failed", password="pw", exc_info=True)  # type: ignore[attr-defined]
        generic = lines.take()
    assert fused == generic
    event = orjson.loads(fused)
    assert event["password"] == "[REDACTED]"
    assert event["exception"][0]["exc_value"] == "token=[REDACTED] expired"


# --- where the fused path runs, and where it does not --------------------------------------------


def _recording(seen: list[dict[str, Any]]) -> Any:
    def record(logger: Any, method_name: str, event_dict: Any) -> Any:
        seen.append(dict(event_dict))
        return event_dict

    return record


def _module(method: str) -> str:
    return str(getattr(_emit.BoundLogger, method).__module__)


@pytest.mark.parametrize(
    "options",
    [
        {"processors": [_recording([])]},
        {"schema": "ecs"},
        {"schema": "otel"},
        {"format": "console"},
        {"format": "logfmt"},
        {"sample_rate": 0.5},
        {"slow_output": io.BytesIO(), "slow_request_ms": 100},
    ],
    ids=["user processor", "ecs", "otel", "console", "logfmt", "sampling", "slow output"],
)
def test_no_fused_path_unless_the_default_json_chain(options: dict[str, Any]) -> None:
    reqlog.configure(**{"output": io.BytesIO(), "format": "json", **options})
    assert STATE.access is not None
    assert STATE.access.emit is _emit.emit_access
    assert _module("info") == "structlog._native"


def test_the_default_chain_takes_the_fused_path() -> None:
    reqlog.configure(output=io.BytesIO(), format="json")
    assert STATE.access is not None
    assert STATE.access.emit.__qualname__ == "FusedChain.access"
    assert _module("info") == "reqlog._fused"
    assert _module("debug") == "structlog._native"  # below INFO: a no-op


TAIL = ("timestamp", "service")


def test_a_user_processor_sees_what_it_always_saw(lines: Lines, clock: _Frozen) -> None:
    seen: list[dict[str, Any]] = []
    lines.configure(service="orders", processors=[_recording(seen)])
    clock.now = 1_714_564_800.25
    token, tokens = _within({"request_id": "rid", "client_ip": "10.0.0.1"}, {})
    try:
        standard = ["GET", "/i", "/i", "a=1", 200, 1.5, "ua", "1.1", 3]
        fields = dict(zip(ACCESS_KEYS, standard, strict=True))
        assert STATE.access is not None
        STATE.access.completed(fields)
        reqlog.get_logger("app").info("loading_item", item_id=42, password="pw")
    finally:
        _without(token, tokens)
    common = {
        "request_id": "rid",
        "client_ip": "10.0.0.1",
        "timestamp": "2024-05-01T12:00:00.250000Z",
        "service": "orders",
    }
    assert seen == [
        {
            **common,
            **fields,
            "event": "request_completed",
            "logger": "reqlog.access",
            "level": "info",
        },
        {
            **common,
            "item_id": 42,
            "password": "pw",  # redaction comes after the user's processors
            "event": "loading_item",
            "logger": "app",
            "level": "info",
        },
    ]
    assert [list(event) for event in seen] == [
        ["request_id", "client_ip", *ACCESS_KEYS, *("event", "logger", "level"), *TAIL],
        ["request_id", "client_ip", "item_id", "password", "event", "logger", "level", *TAIL],
    ]


def test_captures_and_capture_logs_see_every_event(lines: Lines) -> None:
    lines.configure()
    log = reqlog.get_logger("app")
    with reqlog.testing.capture_events() as events:
        log.info("captured", n=1)
        assert STATE.access is not None
        STATE.access.completed(
            dict(zip(ACCESS_KEYS, ["GET", "/", None, "", 200, 1.0, None, "1.1", 0], strict=True))
        )
    assert [e["event"] for e in events] == ["captured", "request_completed"]
    with reqlog.testing.capture_logs() as logs:
        log.info("structlog_captured", n=2)
    assert logs == [{"n": 2, "event": "structlog_captured", "log_level": "info"}]


# --- the cheaper steps are the same steps --------------------------------------------------------


@settings(max_examples=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(now=clocks)
def test_the_time_stamp_is_the_divided_one(clock: _Frozen, now: float) -> None:
    clock.now = now
    second, micro = divmod(round(now * 1_000_000), 1_000_000)
    prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    expected = f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"
    assert IsoTimeStamper().stamp() == expected


json_values = st.recursive(
    st.one_of(st.text(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=500)
@given(event=st.dictionaries(st.text(), json_values, max_size=6))
def test_json_without_the_non_string_keys_option_is_the_same(event: dict[str, Any]) -> None:
    # JSONRenderer tries orjson without OPT_NON_STR_KEYS first: for string keys it must make
    # no difference.
    option = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE
    try:
        without = orjson.dumps(event, option=option)
    except TypeError:
        return  # a lone surrogate: the renderer takes its slow way, with the option
    assert without == orjson.dumps(event, option=option | orjson.OPT_NON_STR_KEYS)
    assert JSONRenderer()._str_keys_option == option
