"""No event lost or split by what it contains: lone surrogates, line separators, odd keys."""

from __future__ import annotations

import io
import logging
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

import reqlog
from reqlog import _escape

FORMATS = ("json", "console", "logfmt")
#: Every character str.splitlines() splits on, besides CR and LF.
LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def configure(fmt: Any, **options: Any) -> io.BytesIO:
    stream = io.BytesIO()
    reqlog.configure(output=stream, format=fmt, **options)
    return stream


def text_of(stream: io.BytesIO) -> str:
    # Strict: a lone surrogate or any invalid UTF-8 in the output fails here.
    return stream.getvalue().decode("utf-8")


def event_starts(fmt: str, text: str) -> list[str]:
    """The lines that begin an event: all of them, but console's indented continuations."""
    lines = text.splitlines()
    if fmt == "console":
        return [line for line in lines if line and not line[0].isspace()]
    return lines


class Odd:
    """An object whose repr() is a forged second event, with a terminal escape."""

    def __repr__(self) -> str:
        return 'odd\n{"event": "forged"}\x1b[2J\u2028'

    __str__ = __repr__


class NoRepr:
    def __repr__(self) -> str:
        msg = "no repr for you"
        raise RuntimeError(msg)


# --- lone surrogates -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_lone_surrogates_are_written_escaped_in_values_keys_and_at_depth(
    fmt: str, capfd: pytest.CaptureFixture[str]
) -> None:
    stream = configure(fmt)
    log = reqlog.get_logger("t")
    log.info("value", username="a\ud800b")
    log.info("key", **{"k\udfff": 1})
    log.info("nested", user={"names": ["a\ud800b", ("x", {"y\udc00": {1, 2}})]})
    log.info("event \ud83d")  # half of an emoji
    logging.getLogger("lib").warning("stdlib %s", "a\ud800b")

    text = text_of(stream)
    starts = event_starts(fmt, text)
    assert len(starts) == 5
    assert "\\ud800" in text
    assert "\\udfff" in text
    assert "\\ud83d" in text
    assert "could not log" not in capfd.readouterr().err
    if fmt == "json":
        events = [orjson.loads(line) for line in starts]
        assert events[0]["username"] == "a\\ud800b"
        assert events[1]["k\\udfff"] == 1
        # The structure is kept, only what JSON cannot hold is changed.
        assert events[2]["user"] == {"names": ["a\\ud800b", ["x", {"y\\udc00": [1, 2]}]]}
        assert events[3]["event"] == "event \\ud83d"
        assert events[4]["event"] == "stdlib a\\ud800b"


# Schemas apply to JSON only.
@pytest.mark.parametrize(
    ("fmt", "schema"), [*((fmt, "flat") for fmt in FORMATS), ("json", "ecs"), ("json", "otel")]
)
async def test_a_bound_lone_surrogate_never_makes_the_request_vanish(fmt: str, schema: str) -> None:
    stream = configure(fmt, schema=schema)
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.post("/login")
    async def login(body: dict[str, str]) -> dict[str, bool]:
        # json.loads turns the client's "\ud800" into a lone surrogate.
        reqlog.bind(username=body["username"])
        reqlog.get_logger("app").info("login_attempt", username=body["username"])
        return {"ok": True}

    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post(
            "/login",
            content=b'{"username": "eve\\ud800"}',
            headers={"content-type": "application/json"},
        )

    assert response.status_code == 200
    text = text_of(stream)
    assert len(event_starts(fmt, text)) == 2
    if fmt == "json":
        events = [orjson.loads(line) for line in text.splitlines()]
        assert [e.get("username") for e in events] == ["eve\\ud800"] * 2
        assert "request_completed" in text
    else:
        assert text.count("eve\\ud800") == 2
        assert "request_completed" in text


# --- line separators -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_line_break_of_splitlines_is_escaped(fmt: str) -> None:
    stream = configure(fmt)
    log = reqlog.get_logger("t")
    c1 = "".join(chr(c) for c in range(0x80, 0xA0))
    log.info(f"in{LINE_BREAKS}event", path=f"/a{LINE_BREAKS}b", c1=c1, deep={"v": [LINE_BREAKS]})
    log.info(f"key{LINE_BREAKS}", **{f"k{LINE_BREAKS}\x7f": "v"})
    log.info("odd", obj=Odd())
    try:
        raise ValueError(f"message{LINE_BREAKS}end")
    except ValueError:
        log.exception("failed")

    text = text_of(stream)
    assert len(event_starts(fmt, text)) == 4
    for char in [*LINE_BREAKS, "\x7f", "\x1b", *c1]:
        assert char not in text, hex(ord(char))
    if fmt == "json":
        events = [orjson.loads(line) for line in text.splitlines()]
        # JSON escapes, so the values read back exactly as logged.
        assert events[0]["event"] == f"in{LINE_BREAKS}event"
        assert events[0]["c1"] == c1
        assert events[0]["deep"] == {"v": [LINE_BREAKS]}
        assert f"k{LINE_BREAKS}\x7f" in events[1]
        assert events[2]["obj"] == repr(Odd())
    else:
        assert "\\u2028" in text
        assert "\\x85" in text
        assert "\\x1c" in text


def test_json_escaping_leaves_other_text_alone() -> None:
    stream = configure("json")
    # Lead bytes C2 and E2 80 that are not line breaks: £ (C2 A3), — (E2 80 94), NBSP.
    text = "café £5 — naïve\u00a0日本 \U0001f600"
    reqlog.get_logger("t").info("plain", text=text)
    line = stream.getvalue()
    assert text.encode() in line
    assert orjson.loads(line)["text"] == text


def test_json_escape_check_spots_exactly_the_line_breaks() -> None:
    for code in (0x7F, *range(0x80, 0xA0), 0x2028, 0x2029):
        data = orjson.dumps({"v": f"a{chr(code)}b"})
        assert _escape.needs_json_escape(data)
        assert orjson.loads(_escape.escape_json(data)) == {"v": f"a{chr(code)}b"}
        assert _escape.escape_json(data).isascii()
    assert not _escape.needs_json_escape(b'{"v":"plain ascii"}')
    assert _escape.escape_json("£ — \u00a0".encode()) == "£ — \u00a0".encode()


# --- keys and values in console and logfmt ---------------------------------------------------


@pytest.mark.parametrize("fmt", ["console", "logfmt"])
def test_keys_are_escaped_like_values_and_never_cost_the_event(
    fmt: str, capfd: pytest.CaptureFixture[str]
) -> None:
    def int_key(logger: Any, method_name: str, event_dict: Any) -> Any:
        event_dict[7] = "int key"
        return event_dict

    stream = configure(fmt, processors=[int_key])
    keys = {
        "a b": 1,
        "c\r\nd": 2,
        "e\x1b[31m": 3,
        'q"uote': 4,
        "x=y": 5,
        "back\\slash": 6,
        "": "empty",
    }
    reqlog.get_logger("t").info("keys", **keys)

    text = text_of(stream)
    assert len(text.splitlines()) == 1
    assert "\x1b" not in text
    for escaped in (
        "a\\x20b",
        "c\\x0d\\x0ad",
        "e\\x1b[31m",
        "q\\x22uote",
        "x\\x3dy",
        "back\\x5cslash",
    ):
        assert escaped in text, escaped
    assert "7=" in text
    assert "could not log" not in capfd.readouterr().err


def test_logfmt_pairs_split_on_spaces_and_equals_signs() -> None:
    stream = configure("logfmt")
    reqlog.get_logger("t").info("pairs", **{"a b=c": "d e=f", "g": 'h"i'})
    text = text_of(stream).rstrip("\n")
    assert 'a\\x20b\\x3dc="d e=f"' in text
    assert 'g="h\\"i"' in text


@pytest.mark.parametrize("fmt", ["console", "logfmt"])
def test_objects_are_shown_escaped_and_a_failing_repr_costs_only_its_field(fmt: str) -> None:
    stream = configure(fmt)
    reqlog.get_logger("t").info("objects", odd=Odd(), bad=NoRepr(), items={"k": "v"})
    text = text_of(stream)
    assert len(text.splitlines()) == 1
    # logfmt's renderer writes a line feed as \n itself; the rest is escaped as \xNN.
    assert {"console": "odd\\x0a", "logfmt": "odd\\n"}[fmt] in text
    assert "\\x1b[2J\\u2028" in text
    assert "<unrepresentable NoRepr>" in text
    assert "\x1b" not in text


def test_console_continuation_lines_are_indented_so_no_event_can_be_forged() -> None:
    stream = configure("console")
    log = reqlog.get_logger("t")
    forged = "2026-01-01T00:00:00.000000Z [info     ] request_completed [reqlog.access] status=200"
    try:
        raise ValueError(f"boom\n{forged}")
    except ValueError:
        log.exception("failed", note=f"x\n{forged}")
    log.info("after", stack_info=True)
    log.info("last")

    lines = text_of(stream).splitlines()
    starts = [line for line in lines if not line[:1].isspace()]
    assert [line.split("] ", 1)[1].split()[0] for line in starts] == ["failed", "after", "last"]
    # The traceback is all there, two spaces in.
    assert "  Traceback (most recent call last):" in lines
    assert f"  {forged}" in lines
    assert "  ValueError: boom" in lines
    # A field's line feed is escaped, not a continuation line.
    assert "note=" in starts[0]


def test_logfmt_keeps_a_traceback_on_its_one_line() -> None:
    stream = configure("logfmt")
    try:
        raise ValueError("boom\nlevel=critical event=forged")
    except ValueError:
        reqlog.get_logger("t").exception("failed")
    text = text_of(stream)
    assert len(text.splitlines()) == 1
    # The renderer's own escape for a line feed in a quoted value.
    assert "ValueError: boom\\nlevel=critical event=forged" in text


def test_default_processors_return_text_that_encodes() -> None:
    chain = reqlog.default_processors(format="logfmt")
    event: Any = {"event": "e", "user": "a\ud800", "odd key": Odd()}
    for processor in chain:
        event = processor(None, "info", event)
    assert isinstance(event, str)
    event.encode("utf-8")
    assert "\n" not in event


@pytest.mark.parametrize("fmt", FORMATS)
def test_fields_named_like_structlogs_internals_are_just_fields(fmt: str) -> None:
    stream = configure(fmt)
    reqlog.get_logger("t").info("internals", _record=[], _from_structlog="yes")
    text = text_of(stream)
    assert len(event_starts(fmt, text)) == 1
    assert "_record" in text
