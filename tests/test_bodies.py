"""Body and header capture: what the access event carries; the app and client see no change."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import re
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Message, Receive, Scope, Send

import reqlog
from reqlog.bodies import describe_body
from reqlog.processors import drop_cut_token
from tests.conftest import listening_socket

if TYPE_CHECKING:
    from tests.conftest import LogOutput

UA = f"python-httpx/{httpx.__version__}"
MB = 1024 * 1024


def request(app: FastAPI, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def access(log_output: LogOutput) -> dict[str, Any]:
    """The one access event, without the values that change from run to run."""
    [event] = log_output.access()
    for key in ("timestamp", "duration_ms", "request_id"):
        event.pop(key)
    return event


def base_event(path: str, **fields: Any) -> dict[str, Any]:
    event = {
        "event": "request_completed",
        "level": "info",
        "logger": "reqlog.access",
        "client_ip": "10.0.0.1",
        "method": "POST",
        "path": path,
        "route": path,
        "query": "",
        "status_code": 200,
        "user_agent": UA,
        "http_version": "1.1",
    }
    event.update(fields)
    return event


def echo_app(**options: Any) -> FastAPI:
    """An app whose endpoint returns the body it received, as JSON, with its hash and size."""
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, **options)

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, media_type=request.headers.get("content-type"))

    return app


# --- options ----------------------------------------------------------------------------------


def test_off_by_default_adds_nothing(log_output: LogOutput) -> None:
    log_output.configure()
    app = echo_app()
    middleware = reqlog.RequestLoggingMiddleware(app)
    assert middleware._capture is None  # no capture object, no wrapper layers

    request(app, "POST", "/echo", json={"password": "hunter2"})

    assert access(log_output) == base_event("/echo", response_bytes=22)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"body_max_bytes": 0}, "body_max_bytes: expected a positive number of bytes, got 0"),
        ({"body_max_bytes": -1}, "body_max_bytes"),
        ({"body_max_bytes": True}, "body_max_bytes"),
        ({"body_max_bytes": "4096"}, "body_max_bytes"),
        ({"body_max_bytes": 1.5}, "body_max_bytes"),
        ({"log_request_body": "yes"}, "log_request_body: expected True or False, got 'yes'"),
        ({"log_response_body": 1}, "log_response_body"),
        ({"log_headers": None}, "log_headers"),
        ({"capture_paths": ["api/*"]}, "capture_paths: paths start with '/', got 'api/*'"),
        (
            {"capture_paths": ["/a/{x:nope}"]},
            "capture_paths: '/a/{x:nope}' is not a valid route template",
        ),
    ],
)
def test_bad_options_raise_naming_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        reqlog.RequestLoggingMiddleware(FastAPI(), **options)


def test_capture_paths_limits_capture_to_matching_paths(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(
        reqlog.RequestLoggingMiddleware,
        log_request_body=True,
        log_response_body=True,
        log_headers=True,
        capture_paths=["/api/*", "/login", "/users/{user_id:int}/orders"],
    )

    @app.post("/api/items")
    @app.post("/login")
    @app.post("/other")
    @app.post("/users/{user_id}/orders")
    async def endpoint(request: Request) -> dict[str, Any]:
        return dict(await request.json())

    captured = ("/api/items", "/login", "/users/42/orders")
    for path in (*captured, "/other", "/users/ann/orders"):
        request(app, "POST", path, json={"a": 1})

    events = {e["path"]: e for e in log_output.access()}
    for path in captured:
        assert events[path]["request_body"] == {"a": 1}
        assert events[path]["response_body"] == {"a": 1}
        assert "request_headers" in events[path]
    for path in ("/other", "/users/ann/orders"):
        assert events[path]["status_code"] == 200
        assert not {"request_body", "response_body", "request_headers", "request_bytes"} & set(
            events[path]
        )


# --- JSON, forms, text ------------------------------------------------------------------------


def test_json_bodies_are_parsed_objects(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(
        reqlog.RequestLoggingMiddleware, log_request_body=True, log_response_body=True
    )

    @app.post("/orders")
    async def create(order: dict[str, Any]) -> dict[str, Any]:
        return {"id": 7, "items": order["items"]}

    response = request(app, "POST", "/orders", json={"items": [1, 2], "note": "ring twice"})

    assert response.json() == {"id": 7, "items": [1, 2]}
    assert access(log_output) == base_event(
        "/orders",
        response_bytes=len(response.content),
        request_bytes=len(b'{"items":[1,2],"note":"ring twice"}'),
        request_body={"items": [1, 2], "note": "ring twice"},
        response_body={"id": 7, "items": [1, 2]},
    )


def test_json_body_secrets_are_redacted(log_output: LogOutput) -> None:
    log_output.configure()
    app = echo_app(log_request_body=True, log_response_body=True)

    request(
        app,
        "POST",
        "/echo",
        json={"user": "ann", "password": "hunter2", "deep": [{"token": "t0k"}]},
    )

    event = access(log_output)
    redacted = {"user": "ann", "password": "[REDACTED]", "deep": [{"token": "[REDACTED]"}]}
    assert event["request_body"] == redacted
    assert event["response_body"] == redacted
    assert b"hunter2" not in b"".join(log_output.lines())


def test_form_bodies_are_mappings_with_repeated_fields_as_lists(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, log_request_body=True)

    @app.post("/signup")
    async def signup(
        user: Annotated[str, Form()], tag: Annotated[list[str], Form()]
    ) -> dict[str, Any]:
        return {"user": user, "tags": tag}

    body = "user=ann+lee&tag=a&tag=b%26c&empty="
    response = request(
        app,
        "POST",
        "/signup",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert response.json() == {"user": "ann lee", "tags": ["a", "b&c"]}
    event = access(log_output)
    assert event["request_body"] == {"user": "ann lee", "tag": ["a", "b&c"], "empty": ""}
    assert event["request_bytes"] == len(body)
    assert "response_body" not in event


def test_form_body_secrets_are_redacted(log_output: LogOutput) -> None:
    log_output.configure()
    app = echo_app(log_request_body=True)

    request(
        app,
        "POST",
        "/echo",
        content="user=ann&password=hunter2",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert access(log_output)["request_body"] == {"user": "ann", "password": "[REDACTED]"}
    assert b"hunter2" not in b"".join(log_output.lines())


def test_text_is_decoded_with_its_charset_and_cut_at_the_cap(log_output: LogOutput) -> None:
    log_output.configure()
    app = echo_app(log_request_body=True, log_response_body=True, body_max_bytes=8)

    text = "héllo wörld"
    request(
        app,
        "POST",
        "/echo",
        content=text.encode("latin-1"),
        headers={"content-type": "text/plain; charset=latin-1"},
    )

    event = access(log_output)
    assert event["request_body"] == "héllo"  # "wö", what the cap left of a word, goes too
    assert event["request_body_truncated"] is True
    assert event["request_bytes"] == 11
    assert event["response_body"] == "héllo"
    assert event["response_body_truncated"] is True


def test_a_character_cut_by_the_cap_is_left_out(log_output: LogOutput) -> None:
    log_output.configure()
    app = echo_app(log_request_body=True, body_max_bytes=4)

    request(app, "POST", "/echo", content="abc é".encode(), headers={"content-type": "text/plain"})

    event = access(log_output)
    assert event["request_body"] == "abc"  # not "abc \ufffd"
    assert event["request_body_truncated"] is True


@pytest.mark.parametrize(
    ("text", "front"),
    [
        ("paid with card 4111 1111 1111 1111 today", "4111 1111 1111"),  # 12 of 16 digits
        ("paid with card 4111111111111111 today", "411111111111"),
        ("Authorization: Bearer " + "mF_9.B5f-4.1JqMxyz" * 4 + " ok", "mF_9.B5f-4.1JqM"),
        ("token=" + "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghij" + " ok", "eyJhbGci"),
        ("login password=" + "correct-horse-battery" + " ok", "correct-horse"),
    ],
)
def test_a_body_cut_by_the_cap_never_keeps_the_front_of_a_secret(
    log_output: LogOutput, text: str, front: str
) -> None:
    # The cap falls inside the secret: what is left of it matches no pattern (12 digits are no
    # card number, half a JWT no JWT), so the cut text must not end with it.
    log_output.configure()
    cap = text.index(front) + len(front)
    app = echo_app(log_request_body=True, log_response_body=True, body_max_bytes=cap)

    request(app, "POST", "/echo", content=text.encode(), headers={"content-type": "text/plain"})

    event = access(log_output)
    assert event["request_body_truncated"] is True
    written = b"".join(log_output.lines()).decode()
    assert front not in written
    assert front[:8] not in event["request_body"]
    assert event["request_body"] == event["response_body"]


def test_truncated_json_is_summarised_never_raw(log_output: LogOutput) -> None:
    log_output.configure()
    app = echo_app(log_request_body=True, log_response_body=True, body_max_bytes=16)

    body = orjson.dumps({"note": "x" * 40, "password": "hunter2"})
    response = request(
        app, "POST", "/echo", content=body, headers={"content-type": "application/json"}
    )

    assert response.content == body  # the app got, and sent, every byte
    event = access(log_output)
    assert event["request_body"] == f"<{len(body)} bytes application/json, truncated>"
    assert event["request_body_truncated"] is True
    assert event["response_body"] == f"<{len(body)} bytes application/json, truncated>"
    assert event["response_body_truncated"] is True
    assert b"xxxx" not in b"".join(log_output.lines())


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"password": "hunter2"'),
        ("application/json", b"password=hunter2"),
        ("application/x-www-form-urlencoded", b'{"password": "hunter2"}'),
        ("application/json; charset=no-such-charset", b'{"password": "hunter2"}'),
        ("multipart/form-data; boundary=xyz", b"password=hunter2"),
        ("multipart/form-data", b"password=hunter2"),
    ],
)
def test_a_body_that_does_not_parse_as_its_type_is_summarised(
    log_output: LogOutput, content_type: str, body: bytes
) -> None:
    log_output.configure()
    app = echo_app(log_request_body=True)

    request(app, "POST", "/echo", content=body, headers={"content-type": content_type})

    mime = content_type.partition(";")[0]
    assert access(log_output)["request_body"] == f"<{len(body)} bytes {mime}, invalid>"
    assert b"hunter2" not in b"".join(log_output.lines())


def test_ndjson_is_a_list_of_parsed_lines(log_output: LogOutput) -> None:
    log_output.configure()
    app = echo_app(log_request_body=True, body_max_bytes=20)

    body = b'{"a": 1}\n{"b": 2}\n{"c": 3}\n'
    request(app, "POST", "/echo", content=body, headers={"content-type": "application/x-ndjson"})

    event = access(log_output)
    assert event["request_body"] == [{"a": 1}, {"b": 2}]
    assert event["request_body_truncated"] is True


# --- binary, compressed, multipart ------------------------------------------------------------


def test_binary_bodies_are_summarised_and_not_buffered(log_output: LogOutput) -> None:
    log_output.configure()
    app = echo_app(log_request_body=True, log_response_body=True)

    body = bytes(range(256)) * 4096  # 1 MiB
    response = request(
        app, "POST", "/echo", content=body, headers={"content-type": "application/octet-stream"}
    )

    assert response.content == body
    assert access(log_output) == base_event(
        "/echo",
        response_bytes=len(body),
        request_bytes=len(body),
        request_body=f"<{len(body)} bytes application/octet-stream>",
        response_body=f"<{len(body)} bytes application/octet-stream>",
    )


def test_a_body_without_content_type_is_summarised(log_output: LogOutput) -> None:
    log_output.configure()
    app = echo_app(log_request_body=True)

    request(app, "POST", "/echo", content=b"password=hunter2")

    assert access(log_output)["request_body"] == "<16 bytes>"


def test_compressed_bodies_are_summarised(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        await request.body()
        return PlainTextResponse("word " * 1000)

    # Added last, reqlog is outermost: it sees the body GZipMiddleware compressed.
    app.add_middleware(GZipMiddleware)
    app.add_middleware(
        reqlog.RequestLoggingMiddleware, log_request_body=True, log_response_body=True
    )

    body = gzip.compress(b'{"password": "hunter2"}')
    response = request(
        app,
        "POST",
        "/echo",
        content=body,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )

    assert response.text == "word " * 1000  # httpx decompressed it
    event = access(log_output)
    assert event["request_body"] == f"<{len(body)} bytes application/json, gzip>"
    assert event["response_body"] == (
        f"<{event['response_bytes']} bytes text/plain, gzip>"  # charset is not part of the type
    )
    assert "request_body_truncated" not in event


def test_multipart_fields_are_logged_and_file_parts_summarised(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, log_request_body=True)

    @app.post("/upload")
    async def upload(
        description: Annotated[str, Form()], file: Annotated[UploadFile, File()]
    ) -> dict[str, Any]:
        data = await file.read()
        return {"description": description, "sha256": hashlib.sha256(data).hexdigest()}

    image = b"\x89PNG\r\n" + bytes(range(256)) * 4
    response = request(
        app,
        "POST",
        "/upload",
        data={"description": "a cat"},
        files={"file": ("cat.png", image, "image/png")},
    )

    assert response.json() == {"description": "a cat", "sha256": hashlib.sha256(image).hexdigest()}
    event = access(log_output)
    assert event["request_body"] == {
        "description": "a cat",
        "file": f"<{len(image)} bytes image/png, filename=cat.png>",
    }
    assert "request_body_truncated" not in event


def test_a_multipart_upload_past_the_cap_keeps_earlier_fields(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, log_request_body=True)

    @app.post("/upload")
    async def upload(
        description: Annotated[str, Form()], file: Annotated[UploadFile, File()]
    ) -> dict[str, Any]:
        data = await file.read()
        return {"sha256": hashlib.sha256(data).hexdigest()}

    image = bytes(range(256)) * 1024  # 256 KiB
    response = request(
        app,
        "POST",
        "/upload",
        data={"description": "a big cat"},
        files={"file": ("big.png", image, "image/png")},
    )

    assert response.json() == {"sha256": hashlib.sha256(image).hexdigest()}
    event = access(log_output)
    assert event["request_body"] == {
        "description": "a big cat",
        "file": "<image/png, truncated, filename=big.png>",
    }
    assert event["request_body_truncated"] is True
    assert event["request_bytes"] > len(image)


# --- streaming, chunks, memory ----------------------------------------------------------------


def test_the_app_receives_every_chunk_unchanged(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, log_request_body=True, body_max_bytes=10)
    seen: list[bytes] = []

    @app.post("/chunks")
    async def chunks(request: Request) -> dict[str, int]:
        async for part in request.stream():
            seen.append(part)
        return {"n": len(seen)}

    sent = [b"a" * 7, b" ", b"c " + b"c" * 28, b"d" * 5]

    async def body() -> AsyncIterator[bytes]:
        for part in sent:
            yield part

    request(app, "POST", "/chunks", content=body(), headers={"content-type": "text/plain"})

    assert seen == [*sent, b""]  # the same chunks, then the end of the body
    event = access(log_output)
    assert event["request_body"] == "aaaaaaa c"  # the first 10 bytes, from three chunks
    assert event["request_body_truncated"] is True
    assert event["request_bytes"] == 43


def test_ten_megabytes_chunked_upload_arrives_whole(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, log_request_body=True)

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        digest = hashlib.sha256()
        async for part in request.stream():
            digest.update(part)
        return {"sha256": digest.hexdigest()}

    chunk = bytes(range(256)) * 256  # 64 KiB
    expected = hashlib.sha256(chunk * 160).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(160):
            yield chunk

    response = request(app, "POST", "/upload", content=body(), headers={"content-type": "text/csv"})

    assert response.json() == {"sha256": expected}
    event = access(log_output)
    assert event["request_bytes"] == 10 * MB
    # the first 4096 bytes, decoded, less the last token the cap may have cut
    assert event["request_body"] == drop_cut_token(chunk[:4096].decode("utf-8", "replace"))
    assert len(event["request_body"]) > 3900
    assert event["request_body_truncated"] is True


def test_an_app_that_never_reads_its_body_does_not_hang(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(
        reqlog.RequestLoggingMiddleware, log_request_body=True, log_response_body=True
    )

    @app.post("/ignore")
    async def ignore() -> dict[str, bool]:
        return {"ok": True}

    response = request(
        app, "POST", "/ignore", content=b"x" * MB, headers={"content-type": "text/plain"}
    )

    assert response.json() == {"ok": True}
    event = access(log_output)
    assert event["request_bytes"] == 0
    assert "request_body" not in event
    assert event["response_body"] == {"ok": True}


def _memory_app(capture: bool) -> FastAPI:
    app = FastAPI()
    app.add_middleware(
        reqlog.RequestLoggingMiddleware,
        log_request_body=capture,
        log_response_body=capture,
        log_headers=capture,
    )
    chunk = b"xxxxxxx " * (8 * 1024)  # 64 KiB of words

    @app.post("/big")
    async def big(request: Request) -> StreamingResponse:
        chunks = 0
        async for part in request.stream():
            chunks += bool(part)

        async def out() -> AsyncIterator[bytes]:
            for _ in range(chunks):  # as much out as came in
                yield chunk

        return StreamingResponse(out(), media_type="text/plain")

    return app


async def _drive(app: FastAPI, chunks: int) -> int:
    """Serve one request of ``chunks`` x 64 KiB in, as a server would, keeping nothing."""
    chunk = b"y" * (64 * 1024)  # one object, sent again and again: no body is allocated
    remaining = chunks
    received = 0

    async def receive() -> Message:
        nonlocal remaining
        if remaining:
            remaining -= 1
            return {"type": "http.request", "body": chunk, "more_body": remaining > 0}
        await asyncio.Event().wait()  # disconnect is never reached in this test
        raise AssertionError

    async def send(message: Message) -> None:
        nonlocal received
        if message["type"] == "http.response.body":
            received += len(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/big",
        "raw_path": b"/big",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"text/plain")],
        "client": ("10.0.0.1", 123),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return received


def _peak(app: FastAPI, chunks: int) -> int:
    """Peak memory allocated while serving one request (after a first one warmed up)."""
    asyncio.run(_drive(app, chunks))  # imports, caches, first-use allocations
    tracemalloc.start()
    try:
        assert asyncio.run(_drive(app, chunks)) == chunks * 64 * 1024
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_held_by_capture_is_bounded_by_the_cap(log_output: LogOutput) -> None:
    # Output to /dev/null: an in-memory log that grows between runs would blur the peaks.
    # Written in the request, not by the background writer: tracemalloc counts every thread,
    # and a writer that a loaded machine schedules late joins the previous run's lines into a
    # batch in the middle of this one's measurement (25 KB, one run in ten).
    reqlog.configure(output=os.devnull, format="json", background=False)
    app = _memory_app(capture=True)
    one_mb = _peak(app, 16)
    ten_mb = _peak(app, 160)
    without = _peak(_memory_app(capture=False), 160)

    # Ten times the body, in and out, costs nothing more: capture holds at most the cap.
    assert ten_mb - one_mb < 16 * 1024, (one_mb, ten_mb)
    # Against no capture at all: two copies of at most 4096 bytes, and an event that carries
    # them (built, rendered and written once), not megabytes.
    assert ten_mb - without < 32 * 4096, (without, ten_mb)


def test_capture_of_a_big_stream_is_cut_at_the_cap(log_output: LogOutput) -> None:
    log_output.configure()
    asyncio.run(_drive(_memory_app(capture=True), 160))
    events = log_output.access()
    assert events[-1]["request_bytes"] == 10 * MB
    assert events[-1]["response_body_truncated"] is True
    # 4096 bytes, less the last word the cap may have cut (and the space before it)
    assert 4096 - 9 <= len(events[-1]["response_body"]) <= 4096


# --- headers ----------------------------------------------------------------------------------


def test_headers_are_mappings_with_repeated_headers_as_lists(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, log_headers=True)

    @app.get("/me")
    async def me(request: Request) -> Response:
        response = PlainTextResponse(request.headers["authorization"])
        response.set_cookie("session", "s3cr3t")
        response.set_cookie("theme", "dark")
        return response

    response = request(
        app,
        "GET",
        "/me",
        headers=[("Authorization", "Basic dXNlcjpwYXNz"), ("X-Tag", "a"), ("X-Tag", "b")],
    )

    assert response.text == "Basic dXNlcjpwYXNz"  # the app got the real header
    event = access(log_output)
    assert event["request_headers"]["x-tag"] == ["a", "b"]
    assert event["request_headers"]["host"] == "testserver"
    assert len(event["response_headers"]["set-cookie"]) == 2
    assert event["response_headers"]["content-type"] == "text/plain; charset=utf-8"
    assert event["response_headers"]["x-request-id"] == response.headers["x-request-id"]
    assert not {"request_body", "response_body", "request_bytes"} & set(event)


def test_secret_headers_are_redacted_whatever_their_case(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, log_headers=True)

    @app.get("/me")
    async def me(request: Request) -> Response:
        response = PlainTextResponse(request.headers["x-api-key"])
        response.set_cookie("session", "cookie-secret-1")
        response.set_cookie("refresh", "cookie-secret-2")
        return response

    response = request(
        app,
        "GET",
        "/me",
        headers={
            "AUTHORIZATION": "Bearer header-secret-1",
            "proxy-Authorization": "Basic header-secret-2",
            "Cookie": "sid=header-secret-3",
            "X-Api-Key": "header-secret-4",
        },
    )

    assert response.text == "header-secret-4"
    event = access(log_output)
    for name in ("authorization", "proxy-authorization", "cookie", "x-api-key"):
        assert event["request_headers"][name] == "[REDACTED]"
    assert event["response_headers"]["set-cookie"] in ("[REDACTED]", ["[REDACTED]"] * 2)
    line = b"".join(log_output.lines())
    assert b"secret" not in line


# --- failures ---------------------------------------------------------------------------------


def test_a_failed_request_carries_its_request_body(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, log_request_body=True)

    @app.post("/boom")
    async def boom(request: Request) -> None:
        await request.body()
        raise RuntimeError("boom")

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(
            app=app, client=("10.0.0.1", 123), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/boom", json={"id": 3})

    assert asyncio.run(go()).status_code == 500
    [event] = log_output.access()
    assert event["event"] == "request_failed"
    assert event["request_body"] == {"id": 3}


def test_headers_that_are_not_bytes_do_not_break_the_response(
    log_output: LogOutput, capfd: pytest.CaptureFixture[str]
) -> None:
    log_output.configure()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [("content-type", "text/plain")]  # str, not bytes: a buggy app
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"fine"})

    middleware = reqlog.RequestLoggingMiddleware(app, log_response_body=True, log_headers=True)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    asyncio.run(middleware(scope, receive, send))

    assert sent[-1] == {"type": "http.response.body", "body": b"fine"}
    [event] = log_output.access()
    assert event["status_code"] == 200
    assert event["response_body"] == "<4 bytes>"
    assert event["response_headers"] is None
    assert "reqlog: could not log the headers" in capfd.readouterr().err


# --- describe_body, directly ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((b"", 0, "application/json", {}), ("<0 bytes application/json, invalid>", False)),
        ((b"[1, 2]", 6, "application/vnd.api+json", {}), ([1, 2], False)),
        (
            (b'"s"', 3, "application/json", {"charset": "utf-16"}),
            ("<3 bytes application/json, invalid>", False),
        ),
        (
            ('{"a": "é"}'.encode("latin-1"), 10, "application/json", {"charset": "latin-1"}),
            ({"a": "é"}, False),
        ),
        (
            (b"a=1&b=2&pass", 20, "application/x-www-form-urlencoded", {}),
            ({"a": "1", "b": "2"}, True),
        ),
        (
            (b"[" * 65 + b"]" * 65, 130, "application/json", {}),
            ("<130 bytes application/json, invalid>", False),
        ),
        (
            (b"[" * 64 + b"]" * 64, 128, "application/json", {}),
            (orjson.loads(b"[" * 64 + b"]" * 64), False),
        ),
        ((b"<a>1</a>", 8, "application/xml", {}), ("<a>1</a>", False)),
        ((b"x", 1, "image/svg+xml", {}), ("x", False)),
        ((b"", 5, "text/plain", {}, "br"), ("<5 bytes text/plain, br>", False)),
        ((b"", 5, "text/plain", {}, "identity"), ("", True)),
    ],
)
def test_describe_body(args: tuple[Any, ...], expected: tuple[Any, bool]) -> None:
    assert describe_body(*args) == expected


# --- end to end, through a real server --------------------------------------------------------

SERVER = """
import asyncio, hashlib, pathlib, socket, sys, time
import uvicorn, reqlog
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

reqlog.configure(output=sys.argv[2], format="json")
flag = pathlib.Path(sys.argv[3])
app = FastAPI()
app.add_middleware(reqlog.RequestLoggingMiddleware, log_request_body=True, log_response_body=True)

@app.post("/upload")
async def upload(request: Request):
    digest, chunks = hashlib.sha256(), 0
    async for part in request.stream():
        digest.update(part)
        chunks += 1
    return {"sha256": digest.hexdigest(), "chunks": chunks}

@app.get("/events")
async def events():
    async def stream():
        yield "data: one\\n\\n"
        # The client creates the flag once it has the first event; the deadline is generous
        # (a loaded machine), it only bounds the test when that event never arrives.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if flag.exists():
                yield "data: two\\n\\n"
                return
            await asyncio.sleep(0.01)
        yield "data: timeout\\n\\n"
    return StreamingResponse(stream(), media_type="text/event-stream")

sock = socket.socket(fileno=int(sys.argv[1]))
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


class Server:
    def __init__(self, url: str, log: Path, flag: Path) -> None:
        self.url, self.log, self.flag = url, log, flag

    def access(self, path: str) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.log.exists():
                for line in self.log.read_bytes().splitlines():
                    event = orjson.loads(line)
                    if event.get("event") == "request_completed" and event["path"] == path:
                        return dict(event)
            time.sleep(0.05)
        raise AssertionError(f"no access event for {path}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real uvicorn for this module's end-to-end tests (a start per test costs seconds)."""
    tmp = tmp_path_factory.mktemp("bodies_server")
    script = tmp / "app.py"
    script.write_text(textwrap.dedent(SERVER))
    sock = listening_socket()  # connections wait in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(sock.fileno()),
            str(tmp / "log.jsonl"),
            str(tmp / "flag"),
        ],
        pass_fds=[sock.fileno()],
    )
    sock.close()
    try:
        yield Server(f"http://127.0.0.1:{port}", tmp / "log.jsonl", tmp / "flag")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_server_chunked_upload_of_ten_megabytes(server: Server) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB

    def body() -> Iterator[bytes]:
        for _ in range(160):
            yield chunk

    # A generator body has no length: httpx sends it with chunked transfer encoding.
    response = httpx.post(
        f"{server.url}/upload",
        content=body(),
        headers={"content-type": "application/octet-stream"},
        timeout=30,
    )

    assert response.json()["sha256"] == hashlib.sha256(chunk * 160).hexdigest()
    assert response.json()["chunks"] > 1
    event = server.access("/upload")
    assert event["request_bytes"] == 10 * MB
    assert event["request_body"] == f"<{10 * MB} bytes application/octet-stream>"


@pytest.mark.slow
def test_server_streams_events_without_delay(server: Server) -> None:
    received = []
    with httpx.stream("GET", f"{server.url}/events", timeout=90) as response:
        for chunk in response.iter_raw():
            received.append(chunk)
            if len(received) == 1:
                # Only now may the endpoint send its second event: had reqlog held the first
                # one back, the endpoint would time out and send "timeout" instead.
                server.flag.touch()

    assert b"".join(received) == b"data: one\n\ndata: two\n\n"
    event = server.access("/events")
    assert event["response_body"] == "data: one\n\ndata: two\n\n"
    assert event["response_bytes"] == 22
    assert event["request_bytes"] == 0
