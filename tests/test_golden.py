"""Golden lines: what reqlog writes for a fixed corpus of requests and events, byte for byte.

Every line reqlog writes for the corpus below (benign requests, the secrets of
tests/redaction_corpus.py in every place they may come, hostile input, failures, disconnects,
cancellations, websockets, standard-library records, body and header capture, trusted
proxies, sampling, slow requests, a user processor), in every format and schema, with time
frozen, request IDs from a counter and durations from a clock the app moves, is compared with
the lines recorded in tests/golden/lines.json. The recording was made on ``main`` before the
modules were restructured and the hot path rewritten (issue 12): whatever moves inside reqlog,
the output stays the same for the same input.

One thing is normalised before the comparison, on both sides: where code sits in a traceback.
A run of frames that are not the app's in this file (reqlog's own, Starlette's, asyncio's, the
test driver's) becomes one ``<elsewhere>`` frame: where reqlog's code sits (its file, line and
function) moves with any change to it, and the other projects' with their versions. The app's
frames keep their function and source line, with the file's name for its path and 0 for the
line number (this file's own lines move when a case is added). The exception types and
messages, and everything else in every line, are compared as they are.

    REQLOG_GOLDEN_RECORD=1 pytest tests/test_golden.py   # record again (only on purpose)
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import os
import re
from collections.abc import Callable, Coroutine
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import structlog
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from freezegun import freeze_time
from opentelemetry import trace
from starlette.types import Message, Scope
from starlette.websockets import WebSocket

import reqlog
import reqlog.testing
from tests.redaction_corpus import SECRETS
from tests.test_processors import FakeClock

GOLDEN = Path(__file__).parent / "golden" / "lines.json"
RECORD = os.environ.get("REQLOG_GOLDEN_RECORD") == "1"
RID = "0123456789abcdef0123456789abcdef"
UA = b"golden/1.0"
START = datetime.datetime(2026, 3, 4, 5, 6, 7)


Clock = FakeClock  # the middleware's clock, moved by the app: durations without the machine


class Ids:
    """Request IDs from a counter: ``00000000000040008000000000000001``, then 2, 3..."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"0000000000004000800000{self.count:010d}"


def _upper_keys(logger: Any, method_name: str, event_dict: Any) -> Any:
    """A user processor: what it sees is written, so the generic chain must give it the same."""
    event_dict["seen_by_user"] = ",".join(sorted(str(k) for k in event_dict))
    return event_dict


class _Unrenderable:
    def __repr__(self) -> str:
        return "<unrenderable \r\n\x1b[2J>"


# --- the app ----------------------------------------------------------------------------------


def build_app(clock: Clock) -> FastAPI:
    app = FastAPI()
    log = reqlog.get_logger("golden.app")

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, request: Request) -> dict[str, Any]:
        clock.advance(12.25)
        log.info("loading_item", item_id=item_id)
        return {"id": item_id, "name": "widget"}

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        body = await request.body()
        clock.advance(3.5)
        return PlainTextResponse(body, media_type=request.headers.get("content-type"))

    @app.get("/events")
    async def events(request: Request) -> dict[str, str]:
        clock.advance(1.0)
        for kind, value in request.query_params.multi_items():
            _log_case(log, kind, value)
        return {"ok": "yes"}

    @app.get("/boom")
    async def boom() -> None:
        clock.advance(2.0)
        raise RuntimeError("boom: password=hunter2 and Bearer abc.def-ghi")

    @app.get("/midstream")
    async def midstream() -> StreamingResponse:
        async def chunks() -> Any:
            yield b"first"
            clock.advance(4.0)
            raise ValueError("cut in the middle")

        return StreamingResponse(chunks())

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(_failing_task, "payload")
        return {"queued": "yes"}

    @app.get("/bound")
    async def bound() -> dict[str, str]:
        reqlog.bind(order_id=7, tenant="acme", api_key="k-abcdef123")
        reqlog.bind_user(user_id=42, email="ada@example.com", plan="pro")
        log.info("bound_fields")
        return {}

    @app.get("/structlog-bound")
    async def structlog_bound() -> dict[str, str]:
        # One key: the order of several follows the order structlog's context variables happen
        # to have in the process (set by whatever bound them first), not reqlog's.
        structlog.contextvars.bind_contextvars(secret_token="tok-9f8e7d")
        log.info("with_contextvars", step=1)
        structlog.get_logger("golden.structlog").warning("via_structlog", n=3)
        return {}

    @app.get("/sync")
    def sync_endpoint() -> dict[str, str]:
        reqlog.bind(from_thread=True)
        log.info("in_threadpool")
        return {}

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        clock.advance(250.0)
        return {}

    @app.get("/disconnect")
    async def disconnect(request: Request) -> dict[str, str]:
        await request.body()
        message = await request.receive()
        assert message["type"] == "http.disconnect"
        clock.advance(5.0)
        return {}

    @app.get("/hang")
    async def hang() -> None:
        clock.advance(7.0)
        await asyncio.Event().wait()

    @app.get("/stdlib")
    async def stdlib() -> dict[str, str]:
        std = logging.getLogger("golden.stdlib")
        std.warning("user %s paid %d", "ada", 3, extra={"password": "pw-123", "note": "x\r\ny"})
        std.info("bad args %d", "not-a-number")
        try:
            raise KeyError("stdlib failure")
        except KeyError:
            std.exception("caught by stdlib")
        return {}

    @app.websocket("/ws/{room}")
    async def ws(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        log.info("ws_message", room=room, size=len(text))
        clock.advance(40.0)
        if text == "fail":
            raise RuntimeError("websocket handler failed")
        await websocket.close(code=4001)

    return app


def _failing_task(payload: str) -> None:
    raise OSError(f"background task could not send {payload}")


def _log_case(log: Any, kind: str, value: str) -> None:
    """App events of every kind: one per ``kind=value`` query parameter of ``/events``."""
    if kind == "plain":
        log.info("plain_event", value=value, count=3, ratio=0.5, flag=True, nothing=None)
    elif kind == "secret_kw":
        log.info("secret_kw", password=value, nested={"token": value, "ok": [1, value]})
    elif kind == "secret_text":
        log.warning(f"calling upstream with {value}", detail=f"sent {value}")
    elif kind == "secret_error":
        try:
            raise ValueError(f"upstream said {value}")
        except ValueError:
            log.exception("upstream_failed", target="billing")
    elif kind == "hostile":
        log.info(
            value,
            path=value,
            lone=value + "\ud800 \udfff",
            keys={1: "int key", (2, 3): "tuple key", "sp ace=": value},
            raw=value.encode("utf-8", "surrogatepass"),
            big=2**70,
            nan=float("nan"),
            inf=float("-inf"),
            odd=_Unrenderable(),
        )
    elif kind == "levels":
        log.debug("debug_event", value=value)
        log.info("info_event", value=value)
        log.warning("warning_event", value=value)
        log.error("error_event", value=value)
        log.critical("critical_event", value=value)
        log.log(logging.WARNING, "log_method_event", value=value)
    elif kind == "positional":
        log.info("hello %s and %d", value, 42)
    elif kind == "bound_logger":
        log.bind(component="cart", password="bound-secret").info("from_bound", value=value)
    elif kind == "explicit_wins":
        log.info("explicit", request_id="explicit-id", client_ip="192.0.2.1", value=value)
    elif kind == "stack":
        log.info("with_stack", stack_info=True)
    elif kind == "long":
        log.info("long_value", text=value * 50, message=("password=x " * 400))
    elif kind == "span":
        context = trace.SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
            is_remote=False,
            trace_flags=trace.TraceFlags(1),
        )
        with trace.use_span(trace.NonRecordingSpan(context)):
            log.info("inside_span", value=value)


# --- driving it ---------------------------------------------------------------------------------


def _scope(
    method: str,
    path: str,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] = ("10.0.0.1", 123),
    kind: str = "http",
) -> Scope:
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver"), (b"user-agent", UA), *(headers or [])],
        "client": client,
        "server": ("testserver", 80),
    }
    if kind == "http":
        scope["method"] = method
    return scope


async def call(
    app: Any,
    method: str,
    path: str,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: list[bytes] | None = None,
    then: str = "wait",
    fail_send: bool = False,
    client: tuple[str, int] = ("10.0.0.1", 123),
) -> list[Message]:
    """One request through the ASGI interface. After the body, ``then`` says what the server's
    ``receive()`` answers: ``wait`` (nothing until the response is done), ``disconnect``."""
    chunks = list(body or [b""])
    sent: list[Message] = []
    done = asyncio.Event()

    async def receive() -> Message:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        if then == "disconnect":
            return {"type": "http.disconnect"}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if fail_send and message["type"] == "http.response.body":
            raise OSError("connection reset by peer")
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    # What the server does with an exception that escapes the app is not under test.
    with suppress(Exception):
        await app(_scope(method, path, query, headers, client), receive, send)
    return sent


async def cancel_hanging(app: Any) -> None:
    """A request the server cancels (a graceful-shutdown timeout)."""
    task = asyncio.ensure_future(call(app, "GET", "/hang"))
    for _ in range(50):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def websocket(app: Any, room: str, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": text},
    ]

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        pass

    with suppress(RuntimeError):
        await app(_scope("GET", f"/ws/{room}", headers=headers, kind="websocket"), receive, send)


def _query(**params: str) -> bytes:
    return "&".join(f"{k}={quote_plus(v)}" for k, v in params.items()).encode()


HOSTILE = 'line\r\nbreak \x1b[31mred\x1b[0m \x00nul \x85nel \u2028ls \u2029ps \ud800lone "q" \\'


def cases(app: Any, clock: Clock) -> list[tuple[str, Callable[[], Coroutine[Any, Any, Any]]]]:
    """(name, the requests and events of the case), in the order they run."""
    secrets = [text for _, text in SECRETS]
    out: list[tuple[str, Callable[[], Coroutine[Any, Any, Any]]]] = [
        ("benign", lambda: call(app, "GET", "/items/42", b"q=shoes&page=2")),
        (
            "inbound_id",
            lambda: call(app, "GET", "/items/7", headers=[(b"x-request-id", RID.encode())]),
        ),
        (
            "rejected_id",
            lambda: call(app, "GET", "/items/7", headers=[(b"x-request-id", b"../../etc/passwd")]),
        ),
        (
            "duplicate_ids",
            lambda: call(
                app,
                "GET",
                "/items/7",
                headers=[(b"x-request-id", b"bad id"), (b"x-request-id", RID.encode())],
            ),
        ),
        ("not_found", lambda: call(app, "GET", "/nowhere", b"page=2")),
        ("validation_error", lambda: call(app, "GET", "/items/not-a-number")),
        (
            "hostile_request",
            lambda: call(
                app,
                "GET",
                "/items/1\r\n\x1b[2J\u2028",
                b"q=%0d%0a%1b%5b2J&x=\xff\xfe",
                headers=[
                    (b"user-agent", b"evil\r\n\x1b]0;pwned\x07 \xc2\x85"),
                    (b"referer", b"\x00"),
                ],
            ),
        ),
        (
            "secret_query_names",
            lambda: call(app, "GET", "/items/3", _query(access_token="abc", api_key="k1", q="ok")),
        ),
        (
            "echo_json",
            lambda: call(
                app,
                "POST",
                "/echo",
                headers=[(b"content-type", b"application/json")],
                body=[b'{"password": "pw", "items": [1, 2]}'],
            ),
        ),
        (
            "echo_form",
            lambda: call(
                app,
                "POST",
                "/echo",
                headers=[(b"content-type", b"application/x-www-form-urlencoded")],
                body=[b"user=ada&password=pw&card=4111111111111111"],
            ),
        ),
        (
            "echo_chunks",
            lambda: call(
                app,
                "POST",
                "/echo",
                headers=[(b"content-type", b"text/plain; charset=utf-8")],
                body=[b"Bearer abcdefghijklmnop ", b"and more"],
            ),
        ),
        (
            "headers_with_secrets",
            lambda: call(
                app,
                "GET",
                "/items/5",
                headers=[
                    (b"authorization", b"Bearer zxcvbnmasdfghjkl"),
                    (b"cookie", b"session=abc123; theme=dark"),
                    (b"x-api-key", b"ak-5d4c3b2a1f0e"),
                    (b"accept", b"application/json"),
                ],
            ),
        ),
        (
            "app_events",
            lambda: call(
                app,
                "GET",
                "/events",
                _query(
                    plain="value",
                    levels="L",
                    positional="world",
                    bound_logger="b",
                    explicit_wins="e",
                    span="s",
                ),
            ),
        ),
        (
            "app_event_secrets",
            lambda: call(
                app,
                "GET",
                "/events",
                b"&".join(_query(secret_kw=s, secret_text=s) for s in secrets),
            ),
        ),
        (
            "app_event_exceptions",
            lambda: call(
                app, "GET", "/events", b"&".join(_query(secret_error=s) for s in secrets[:6])
            ),
        ),
        (
            "app_event_hostile",
            lambda: call(app, "GET", "/events", _query(hostile=HOSTILE.replace("\ud800", ""))),
        ),
        ("app_event_stack", lambda: call(app, "GET", "/events", _query(stack="s"))),
        ("app_event_long", lambda: call(app, "GET", "/events", _query(long="0123456789"))),
        (
            "query_secrets",
            lambda: _each(
                app, [_query(q=s) for s in secrets] + [_query(token=s) for s in secrets[:4]]
            ),
        ),
        ("failure", lambda: call(app, "GET", "/boom")),
        ("failure_midstream", lambda: call(app, "GET", "/midstream")),
        ("background_failure", lambda: call(app, "GET", "/background")),
        ("bound_context", lambda: call(app, "GET", "/bound")),
        ("structlog_contextvars", lambda: call(app, "GET", "/structlog-bound")),
        ("threadpool", lambda: call(app, "GET", "/sync")),
        ("slow", lambda: call(app, "GET", "/slow")),
        ("client_disconnected", lambda: call(app, "GET", "/disconnect", then="disconnect")),
        ("send_failed", lambda: call(app, "GET", "/items/9", fail_send=True)),
        ("server_cancelled", lambda: cancel_hanging(app)),
        ("stdlib", lambda: call(app, "GET", "/stdlib")),
        ("websocket", lambda: websocket(app, "lobby", "hello", [(b"x-request-id", RID.encode())])),
        ("websocket_failed", lambda: websocket(app, "lobby", "fail", [])),
        (
            "proxied",
            lambda: call(
                app,
                "GET",
                "/items/11",
                headers=[
                    (b"x-forwarded-for", b"203.0.113.9, 10.0.0.2"),
                    (b"forwarded", b"for=198.51.100.7;proto=https;host=shop.example"),
                ],
                client=("10.0.0.2", 40000),
            ),
        ),
        ("outside_request", lambda: _outside()),
    ]
    return out


async def _each(app: Any, queries: list[bytes]) -> None:
    for query in queries:
        await call(app, "GET", "/items/8", query)


async def _outside() -> None:
    log = reqlog.get_logger("golden.outside")
    log.info("no_request", password="outside-secret", n=1)
    structlog.get_logger("golden.structlog").info("plain_structlog", k="v")
    logging.getLogger("golden.stdlib").warning("stdlib outside %s", "a request")


# --- the configurations -------------------------------------------------------------------------

#: name -> (configure() options, middleware options)
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "json": ({"format": "json"}, {}),
    "json-ecs": ({"format": "json", "schema": "ecs"}, {}),
    "json-otel": ({"format": "json", "schema": "otel"}, {}),
    "console": ({"format": "console"}, {}),
    "logfmt": ({"format": "logfmt"}, {}),
    "json-options": (
        {
            "format": "json",
            "level": "DEBUG",
            "processors": [_upper_keys],
            "slow_request_ms": 100,
            "sample_rate": 0.5,
            "status_levels": {404: "info", "5xx": "critical"},
        },
        {"exclude_paths": ["/items/7"], "trusted_proxies": ["10.0.0.0/8"]},
    ),
    "json-capture": (
        {"format": "json"},
        {
            "log_request_body": True,
            "log_response_body": True,
            "log_headers": True,
            "body_max_bytes": 64,
        },
    ),
    "json-capture-processors": (
        {"format": "json", "processors": [_upper_keys]},
        {
            "log_request_body": True,
            "log_response_body": True,
            "log_headers": True,
            "body_max_bytes": 64,
        },
    ),
    "json-proxies": (
        {"format": "json", "redact": False},
        {"trusted_proxies": ["10.0.0.0/8"], "forwarded_header": "Forwarded"},
    ),
    "console-slow-output": ({"format": "console", "slow_request_ms": 100}, {}),
}


def record_config(name: str) -> dict[str, list[str]]:
    """Run every case under configuration ``name``: the lines each case wrote."""
    options, middleware = CONFIGS[name]
    stream = io.BytesIO()
    slow = io.BytesIO()
    if "slow_request_ms" in options:
        options = {**options, "slow_output": slow}
    reqlog.configure(output=stream, service="golden", **options)
    # asyncio's debug line names the platform's selector: not reqlog's to keep the same.
    logging.getLogger("asyncio").setLevel(logging.INFO)
    clock = Clock()
    app = build_app(clock)
    app.add_middleware(
        reqlog.RequestLoggingMiddleware, clock=clock, request_id_generator=Ids(), **middleware
    )
    lines: dict[str, list[str]] = {}
    # pytest's log capture raises on a record whose %-format fails; reqlog writes it.
    root = logging.getLogger()
    pytest_handlers = [h for h in root.handlers if type(h).__module__.startswith("_pytest")]
    for handler in pytest_handlers:
        root.removeHandler(handler)
    try:
        _run_cases(app, clock, stream, slow, lines)
    finally:
        for handler in pytest_handlers:
            root.addHandler(handler)
    reqlog.testing.reset()
    logging.getLogger("asyncio").setLevel(logging.NOTSET)
    return lines


def _run_cases(
    app: Any, clock: Clock, stream: io.BytesIO, slow: io.BytesIO, lines: dict[str, list[str]]
) -> None:
    with freeze_time(START) as frozen:
        for index, (case, run) in enumerate(cases(app, clock)):
            # A whole second now and then: the timestamp has no fraction then.
            micros = 0 if index % 5 == 0 else 1000 * index + 7
            frozen.move_to(START + datetime.timedelta(seconds=index, microseconds=micros))
            start, slow_start = stream.tell(), slow.tell()
            asyncio.run(run())
            structlog.contextvars.clear_contextvars()
            reqlog.flush()
            lines[case] = _normalised(stream.getvalue()[start:]) + [
                f"[slow_output] {line}" for line in _normalised(slow.getvalue()[slow_start:])
            ]


# --- normalising traceback frames that are not this file's -------------------------------------

_HERE = Path(__file__).name
# 'File "path", line N, in name', its quotes escaped (\\") inside a logfmt value.
_TEXT_FRAME = re.compile(r'File (\\?)"(.*?)\1", line (\d+), in ([^\n\\"]*)')
#: Functions of this file that drive the run: their place in a stack is not the app's.
_DRIVERS = frozenset(
    {"record_config", "_record_all", "recorded", "test_lines_are_the_recorded_ones"}
    | {"<lambda>", "<dictcomp>", "call", "_each", "websocket", "cancel_hanging"}
)


def _own(filename: str, name: str) -> bool:
    return filename.endswith(_HERE) and name not in _DRIVERS


def _normalised(data: bytes) -> list[str]:
    """The lines of ``data``, with the traceback frames that are not the app's collapsed."""
    frames = _TextFrames()
    out = []
    for line in data.decode("utf-8").split("\n")[:-1]:
        if line.startswith("{"):
            event = json.loads(line)
            if _normalise_json(event):
                line = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
            out.append(line)
        else:  # console and logfmt: a traceback over several lines, or escaped in one
            parts = [frames.feed(part) for part in line.split("\\n")]
            kept = [part for part in parts if part is not None]
            if kept:
                out.append("\\n".join(kept))
    return out


def _normalise_json(node: Any) -> bool:
    changed = False
    if isinstance(node, dict):
        frames = node.get("frames")
        if isinstance(frames, list):
            node["frames"] = _collapse(frames)
            changed = True
        for key, value in node.items():
            if isinstance(value, str) and "File " in value:
                text_frames = _TextFrames()
                parts = [text_frames.feed(part) for part in value.split("\n")]
                node[key] = "\n".join(part for part in parts if part is not None)
                changed = True
            elif isinstance(value, dict | list):
                changed = _normalise_json(value) or changed
    elif isinstance(node, list):
        for item in node:
            changed = _normalise_json(item) or changed
    return changed


_ELSEWHERE_FRAME = {"filename": "<elsewhere>", "lineno": 0, "name": "<elsewhere>"}


def _collapse(frames: list[Any]) -> list[Any]:
    out: list[Any] = []
    for frame in frames:
        if isinstance(frame, dict) and _own(str(frame.get("filename")), str(frame.get("name"))):
            out.append({**frame, "filename": _HERE, "lineno": 0})
        elif not out or out[-1] != _ELSEWHERE_FRAME:
            out.append(dict(_ELSEWHERE_FRAME))
    return out


class _TextFrames:
    """A text traceback, fed a line at a time: each run of foreign frames (a frame line and
    the source and caret lines indented below it) becomes one ``<elsewhere>`` frame line."""

    def __init__(self) -> None:
        self.foreign_indent: int | None = None  # inside a foreign frame: its line's indent
        self.last = ""

    def feed(self, part: str) -> str | None:
        """The part as it is written in the golden lines, or ``None`` when it is left out."""
        match = _TEXT_FRAME.search(part)
        if match is not None:
            quote, path, _, name = match.groups()
            if _own(path, name):
                self.foreign_indent = None
                self.last = part[: match.start(2)] + _HERE + part[match.end(2) : match.start(3)]
                self.last += "0" + part[match.end(3) :]
                return self.last
            placeholder = (
                part[: match.start()] + f'File {quote}"<elsewhere>{quote}", line 0, in <elsewhere>'
            )
            indent = _indent(part)
            if self.foreign_indent is not None and self.last == placeholder:
                self.foreign_indent = indent
                return None
            self.foreign_indent = indent
            self.last = placeholder
            return placeholder
        if self.foreign_indent is not None and part.strip() and _indent(part) > self.foreign_indent:
            return None  # the source line (and carets) of a foreign frame
        self.foreign_indent = None
        self.last = part
        return part


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


# --- the test -----------------------------------------------------------------------------------


def _record_all() -> dict[str, dict[str, list[str]]]:
    return {name: record_config(name) for name in CONFIGS}


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, list[str]]]:
    if RECORD:
        lines = _record_all()
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(lines, indent=1, ensure_ascii=True) + "\n")
    result: dict[str, dict[str, list[str]]] = json.loads(GOLDEN.read_text())
    return result


@pytest.mark.parametrize("config", list(CONFIGS))
def test_lines_are_the_recorded_ones(
    config: str, recorded: dict[str, dict[str, list[str]]]
) -> None:
    reqlog.testing.reset()
    actual = record_config(config)
    expected = recorded[config]
    assert list(actual) == list(expected)
    for case, lines in expected.items():
        assert actual[case] == lines, f"{config}/{case}"
