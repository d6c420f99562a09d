"""Property-based: whatever a client sends and an app logs, in every format, the response is
the app's own, every event is written whole on its own line, and no secret gets through.

Hypothesis draws raw ASGI requests (method, path, query string, headers and body of
arbitrary bytes and code points, lone surrogates and line separators favoured) and log
values (any code point in keys and values, nested, bytes, big integers) and drives them
through a real FastAPI app, once bare and once behind RequestLoggingMiddleware.

Secrets come from tests/redaction_corpus.py, each placed where the default Redactor promises
to search (the message, the query string, a header value). The runs are derandomized and
use no example database, so that CI sees the same examples every time;
``REQLOG_HYPOTHESIS_EXAMPLES`` raises their number for a longer local hunt.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message

import reqlog
from reqlog import _escape
from tests.redaction_corpus import SECRETS, leaked

EXAMPLES = int(os.environ.get("REQLOG_HYPOTHESIS_EXAMPLES", "60"))
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: (format, schema): every format, JSON with each schema.
OUTPUTS = [
    ("json", "flat"),
    ("json", "ecs"),
    ("json", "otel"),
    ("console", "flat"),
    ("logfmt", "flat"),
]

#: Where a secret of the corpus goes: each a place the default Redactor promises to search.
PLACES = ("message", "query string", "header value")

#: Characters that break lines, terminals or encoders: drawn far more often than chance.
NASTY = "\r\n\t\x00\x0b\x0c\x1b\x1c\x7f\x85\x9b\u2028\u2029\ufeff\ud800\udbff\udc00\udfff =\"'\\"
chars = st.one_of(st.sampled_from(NASTY), st.characters(exclude_categories=()))
texts = st.text(chars, max_size=30)
#: Names reqlog writes itself: an app that logs them replaces reqlog's (by design), which
#: would make "the event is there" unobservable, not wrong.
RESERVED = frozenset(
    {"event", "message", "level", "logger", "timestamp", "request_id", "exc_info", "stack_info"}
)
#: And ``self``: a keyword argument that collides with the logger method's own parameter
#: (structlog's ``meth(self, event, **kw)``), a TypeError in any structlog logger before reqlog
#: sees the event. One full run of the suite drew it (the examples differed from run to run).
keys = texts.filter(lambda key: key not in RESERVED and key != "self")
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    texts,
    st.binary(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(texts, inner, max_size=3),
    ),
    max_leaves=8,
)
header_names = st.one_of(
    st.sampled_from([b"x-request-id", b"user-agent", b"x-forwarded-for", b"content-type"]),
    st.binary(min_size=1, max_size=12),
)
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        "path": texts.map(lambda path: "/" + path),
        "query": st.binary(max_size=40),
        "headers": st.lists(st.tuples(header_names, st.binary(max_size=40)), max_size=5),
        "body": st.binary(max_size=100),
    }
)
logged = st.fixed_dictionaries(
    {
        "message": texts,
        "fields": st.dictionaries(keys, values, max_size=4),
        "bound": st.dictionaries(keys, values, max_size=3),
    }
)


# --- the app, bare and behind the middleware --------------------------------------------------


def make_app(log_call: Callable[[], None]) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def echo(request: Request) -> PlainTextResponse:
        log_call()
        body = await request.body()
        # Everything the app saw of the request, but the request ID, which the middleware
        # validates and may replace.
        seen = [
            request.method.encode(),
            request.scope["path"].encode("utf-8", "surrogatepass"),
            request.scope["query_string"],
            body,
            *(b"%s=%s" % pair for pair in request.scope["headers"] if pair[0] != b"x-request-id"),
        ]
        digest = hashlib.sha256(b"\0".join(seen)).hexdigest()
        return PlainTextResponse(digest, headers={"x-seen": digest})

    return app


async def call(
    app: ASGIApp, request: dict[str, Any]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": request["path"],
        "raw_path": request["path"].encode("utf-8", "surrogatepass"),
        "query_string": request["query"],
        "root_path": "",
        "headers": request["headers"],
        "client": ("10.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    messages = [{"type": "http.request", "body": request["body"], "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = [(k, v) for k, v in start.get("headers", []) if k != b"x-request-id"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body


def check_lines(fmt: str, data: bytes, expected: int) -> list[str]:
    """One valid event per line (console: per unindented line); returns the event lines."""
    text = data.decode("utf-8")  # strict: no lone surrogate, no invalid byte
    for char in text:
        code = ord(char)
        assert code >= 0x20 or char in "\t\n", hex(code)
        assert not 0x7F <= code <= 0x9F, hex(code)
        assert char not in "\u2028\u2029", hex(code)
    lines = text.splitlines()
    # console: an event's further lines (a traceback) are indented.
    starts = [line for line in lines if not line[:1].isspace()] if fmt == "console" else lines
    assert len(starts) == expected, text
    if fmt == "json":
        for line in lines:
            assert isinstance(orjson.loads(line), dict)
    return starts


def event_names(fmt: str, schema: str, lines: list[str]) -> list[Any]:
    if fmt != "json":
        return []
    name = "message" if schema == "ecs" else "event"
    return [orjson.loads(line).get(name) for line in lines]


# --- the properties ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "schema"), OUTPUTS)
@PROFILE
@given(
    request=requests,
    logs=logged,
    secret=st.sampled_from(SECRETS),
    place=st.sampled_from(PLACES),
)
def test_any_request_any_log_value_one_whole_event_per_line_and_no_secret(
    fmt: Any,
    schema: str,
    request: dict[str, Any],
    logs: dict[str, Any],
    secret: tuple[str, str],
    place: str,
) -> None:
    text = secret[1]
    message = logs["message"]
    fields = logs["fields"]
    # A secret of the corpus (tests/redaction_corpus.py) next to hostile text.
    if place == "header value" and "\n" not in text:
        request = {**request, "headers": [*request["headers"], (b"x-upstream", text.encode())]}
    elif place == "query string":
        query = request["query"] + b"&q=" + quote_plus(text).encode() + b"&page=2"
        request = {**request, "query": query}
    else:
        message = f"{message}\n{text}\n{message}"

    calls: list[None] = []

    def log_call() -> None:
        calls.append(None)
        reqlog.bind(**logs["bound"])
        reqlog.get_logger("app").info(message, **fields)

    expected = asyncio.run(call(make_app(lambda: None), request))
    stream = io.BytesIO()
    reqlog.configure(output=stream, format=fmt, schema=schema)
    app = make_app(log_call)
    # Headers and bodies in the access event too: hostile bytes there as well.
    app.add_middleware(reqlog.RequestLoggingMiddleware, log_headers=True, log_request_body=True)

    assert asyncio.run(call(app, request)) == expected
    # The app's event, unless its router refused the request (a 404 for a path with a line
    # feed, a 405), and the access event.
    lines = check_lines(fmt, stream.getvalue(), len(calls) + 1)
    names = event_names(fmt, schema, lines)
    if names:
        assert names[-1] == "request_completed"
        if calls and message == logs["message"]:
            assert names[0] == _escape.jsonable(message, repr, 0)
        elif calls:
            assert "[REDACTED]" in names[0]
    else:
        assert "request_completed" in lines[-1]
    assert not leaked(text, stream.getvalue().decode()), secret[0]


@pytest.mark.parametrize(("fmt", "schema"), OUTPUTS)
@PROFILE
@given(message=texts, fields=st.dictionaries(keys, values, max_size=6))
def test_any_event_is_written_whole_whatever_it_holds(
    fmt: Any, schema: str, message: str, fields: dict[str, Any]
) -> None:
    stream = io.BytesIO()
    reqlog.configure(output=stream, format=fmt, schema=schema)
    log = reqlog.get_logger("app")
    log.info(message, **fields)
    try:
        raise ValueError(message)
    except ValueError:
        log.exception(message, **fields)
    lines = check_lines(fmt, stream.getvalue(), 2)
    names = event_names(fmt, schema, lines)
    if names:
        assert names == [_escape.jsonable(message, repr, 0)] * 2


@PROFILE
@given(text=st.text(chars, max_size=60))
def test_escaping_keeps_every_character_but_the_line_breakers(text: str) -> None:
    escaped = _escape.escape_text(text)
    assert escaped.splitlines() == [escaped] or escaped == ""
    assert all(not (0xD800 <= ord(c) < 0xE000) for c in escaped)
    if text.isprintable():
        assert escaped == text
    key = _escape.escape_key(text)
    assert key.isprintable()
    assert not set(key) & set(' ="')
    # JSON: orjson's line, escaped, still reads back as the text.
    clean = _escape.jsonable(text, repr, 0)
    line = orjson.dumps(clean)
    assert orjson.loads(_escape.escape_json(line)) == clean
    assert len(_escape.escape_json(line).decode().splitlines()) == 1
