"""Field schemas: configure(schema="flat"|"ecs"|"otel"), checked against ecs-logging itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import ecs_logging
import httpx
import orjson
import pytest
from fastapi import FastAPI
from freezegun import freeze_time
from structlog.typing import EventDict, WrappedLogger

import reqlog
from reqlog import schemas

RID = "0123456789abcdef0123456789abcdef"
NOW = "2024-05-01T12:00:00Z"


class StepClock:
    """Each call returns the next value: the middleware reads it at start and at the end."""

    def __init__(self, *values: float) -> None:
        self.values: Iterator[float] = iter(values)

    def __call__(self) -> float:
        return next(self.values)


def get(app: FastAPI, url: str, **headers: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(
            app=app, client=("10.0.0.1", 123), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(url, headers={"x-request-id": RID, "user-agent": "ua/1", **headers})

    return asyncio.run(go())


def ecs_access(log_output: Any) -> list[dict[str, Any]]:
    return [e for e in log_output.events() if e.get("log", {}).get("logger") == "reqlog.access"]


def items_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, clock=StepClock(1.0, 1.0125))

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        reqlog.bind_user(user_id="u-7", email="ann@example.com")
        return {"id": item_id}

    return app


# -- configuration ---------------------------------------------------------------------------


def test_unknown_schema_is_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match=r"schema: expected one of flat, ecs, otel, got 'gelf'"):
        reqlog.configure(schema="gelf")


def test_schema_from_the_environment(monkeypatch: pytest.MonkeyPatch, log_output: Any) -> None:
    monkeypatch.setenv("REQLOG_SCHEMA", "OTEL")
    log_output.configure()
    reqlog.get_logger("t").info("hi", status_code=200)
    assert log_output.events()[0]["http.response.status_code"] == 200


def test_bad_schema_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQLOG_SCHEMA", "nope")
    with pytest.raises(ValueError, match=r"schema \(from REQLOG_SCHEMA\): expected one of"):
        reqlog.configure()


def test_flat_is_the_default(log_output: Any) -> None:
    log_output.configure()
    reqlog.get_logger("t").info("hi", status_code=200)
    assert {"event", "level", "timestamp", "logger", "status_code"} <= set(log_output.events()[0])


# -- ECS -------------------------------------------------------------------------------------


def test_ecs_access_event(log_output: Any) -> None:
    log_output.configure(schema="ecs", service="orders")
    app = items_app()

    with freeze_time(NOW):
        get(app, "/items/3?q=shoes")

    assert ecs_access(log_output) == [
        {
            "@timestamp": "2024-05-01T12:00:00Z",
            "log.level": "info",
            "message": "request_completed",
            "log": {"logger": "reqlog.access"},
            "service": {"name": "orders"},
            "http": {
                "request": {"id": RID, "method": "GET"},
                "response": {"status_code": 200, "body": {"bytes": 8}},
                "version": "1.1",
            },
            "url": {"path": "/items/3", "query": "q=shoes"},
            "client": {"ip": "10.0.0.1"},
            "user": {"id": "u-7", "email": "ann@example.com"},
            "user_agent": {"original": "ua/1"},
            "event": {"duration": 12_500_000},
            "route": "/items/{item_id}",
            "ecs.version": "1.6.0",
        }
    ]


@freeze_time(NOW)
def test_ecs_line_is_what_ecs_logging_writes_for_the_same_event(log_output: Any) -> None:
    log_output.configure(schema="ecs")
    reqlog.get_logger("shop").warning(
        "payment_declined",
        method="POST",
        path="/pay",
        status_code=402,
        duration_ms=3.25,
        client_ip="10.0.0.9",
        user_agent="ua/2",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        cart_id=99,
    )
    (line,) = log_output.lines()

    # The same event, named as the ECS field reference says, through ecs-logging's own
    # structlog formatter.
    expected = ecs_logging.StructlogFormatter()(
        None,
        "warning",
        {
            "event": "payment_declined",
            "@timestamp": "2024-05-01T12:00:00Z",
            "log.level": "warning",
            "log.logger": "shop",
            "http.request.method": "POST",
            "url.path": "/pay",
            "http.response.status_code": 402,
            "event.duration": 3_250_000,
            "client.ip": "10.0.0.9",
            "user_agent.original": "ua/2",
            "trace.id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span.id": "00f067aa0ba902b7",
            "cart_id": 99,
        },
    )

    assert json.loads(expected) == orjson.loads(line)
    # ECS readers expect these three first, and ecs-logging writes them first.
    assert list(orjson.loads(line))[:3] == ["@timestamp", "log.level", "message"]
    assert list(json.loads(expected))[:3] == ["@timestamp", "log.level", "message"]


def test_ecs_version_is_the_one_ecs_logging_writes() -> None:
    assert schemas.ECS_VERSION == ecs_logging.ECS_VERSION


def test_ecs_failure_has_error_fields_and_a_text_stack_trace(log_output: Any) -> None:
    log_output.configure(schema="ecs")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, clock=StepClock(1.0, 1.002))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput")

    assert get(app, "/boom").status_code == 500

    (event,) = ecs_access(log_output)
    error = event.pop("error")
    assert error["type"] == "RuntimeError"
    assert error["message"] == "kaput"
    assert error["stack_trace"].startswith("Traceback (most recent call last):")
    assert error["stack_trace"].endswith("RuntimeError: kaput")

    # ecs-logging puts a traceback in the same place.
    formatted = ecs_logging.StructlogFormatter()(
        None, "error", {"event": "x", "error.type": "RuntimeError", "exception": "tb"}
    )
    assert json.loads(formatted)["error"] == {"type": "RuntimeError", "stack_trace": "tb"}
    assert event["message"] == "request_failed"
    assert event["http"]["response"]["status_code"] == 500


def test_ecs_keeps_unmapped_fields_and_moves_clashing_ones_to_labels(log_output: Any) -> None:
    log_output.configure(schema="ecs")
    reqlog.get_logger("t").info(
        "hi",
        user="alice",  # would clash with user.id
        user_id="u-1",
        order={"id": 5},
        **{"cloud.region": "eu-west-1", "message": "not the event"},
    )
    event = log_output.events()[0]
    assert event["user"] == {"id": "u-1"}
    assert event["labels"] == {"user": "alice", "message": "not the event"}
    assert event["message"] == "hi"
    assert event["order"] == {"id": 5}
    assert event["cloud"] == {"region": "eu-west-1"}


def test_ecs_does_not_touch_the_callers_objects(log_output: Any) -> None:
    log_output.configure(schema="ecs")
    headers = {"accept": "text/html"}
    fields: dict[str, Any] = {"request_headers": headers, "status_code": 200}
    reqlog.get_logger("t").info("hi", **fields)
    assert fields == {"request_headers": {"accept": "text/html"}, "status_code": 200}
    assert log_output.events()[0]["request_headers"] == {"accept": "text/html"}


def test_user_processors_see_flat_names_whatever_the_schema(log_output: Any) -> None:
    seen: list[set[str]] = []

    def spy(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        seen.append(set(event_dict))
        return event_dict

    log_output.configure(schema="ecs", processors=[spy])
    reqlog.get_logger("t").info("hi", status_code=200, duration_ms=1.5)
    assert {"event", "level", "timestamp", "logger", "status_code", "duration_ms"} <= seen[0]


# -- OpenTelemetry ---------------------------------------------------------------------------


def test_otel_access_event(log_output: Any) -> None:
    log_output.configure(schema="otel", service="orders")
    app = items_app()

    with freeze_time(NOW):
        get(app, "/items/3?q=shoes")

    assert log_output.access() == [
        {
            "event": "request_completed",
            "level": "info",
            "timestamp": "2024-05-01T12:00:00Z",
            "logger": "reqlog.access",
            "service.name": "orders",
            "request_id": RID,
            "http.request.method": "GET",
            "http.route": "/items/{item_id}",
            "url.path": "/items/3",
            "url.query": "q=shoes",
            "http.response.status_code": 200,
            "duration_ms": 12.5,
            "client.address": "10.0.0.1",
            "user_agent.original": "ua/1",
            "network.protocol.version": "1.1",
            "http.response.body.size": 8,
            "user.id": "u-7",
            "user.email": "ann@example.com",
        }
    ]


def test_otel_exception_fields(log_output: Any) -> None:
    log_output.configure(schema="otel")
    try:
        raise KeyError("k")
    except KeyError:
        reqlog.get_logger("t").exception("failed", error_type="KeyError", error_message="'k'")
    event = log_output.events()[0]
    assert event["exception.type"] == "KeyError"
    assert event["exception.message"] == "'k'"
    assert event["exception.stacktrace"].startswith("Traceback (most recent call last):")
    assert "exception" not in event


def test_otel_does_not_overwrite_a_name_the_user_set(log_output: Any) -> None:
    log_output.configure(schema="otel")
    reqlog.get_logger("t").info("hi", path="/a", **{"url.path": "/b"})
    event = log_output.events()[0]
    assert (event["url.path"], event["path"]) == ("/b", "/a")


# -- formats ---------------------------------------------------------------------------------


def test_text_formats_keep_flat_names(log_output: Any) -> None:
    log_output.configure(schema="ecs", format="logfmt")
    reqlog.get_logger("t").info("hi", status_code=200)
    (line,) = log_output.lines()
    assert b"status_code=200" in line
    assert b"ecs.version" not in line


# -- the processors on their own ---------------------------------------------------------------


def test_ecs_processor_falls_back_to_the_method_name_for_the_level() -> None:
    out = schemas.ECSSchema()(None, "debug", {"event": "x"})
    assert out == {"log.level": "debug", "message": "x", "ecs.version": "1.6.0"}


def test_ecs_processor_keeps_non_numeric_durations() -> None:
    out = schemas.ECSSchema()(None, "info", {"event": "x", "duration_ms": "n/a"})
    assert out["event"] == {"duration": "n/a"}


def test_required_keys() -> None:
    assert schemas.required_keys("flat") == ("event", "level", "timestamp", "logger")
    assert schemas.required_keys("otel") == ("event", "level", "timestamp", "logger")
    assert schemas.required_keys("ecs") == ("message", "log.level", "@timestamp", "log.logger")
