"""reqlog.integrations.otel: trace context on events, and events over OTLP to a real receiver."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

import reqlog
from tests.conftest import LogOutput

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.proto")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests"), exporter
    provider.shutdown()


def _hex_ids(span: Any) -> dict[str, str]:
    ctx = span.get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def test_events_in_a_span_carry_its_ids(
    log_output: LogOutput, spans: tuple[Any, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    log_output.configure()
    log = reqlog.get_logger("orders")

    log.info("before")
    with tracer.start_as_current_span("outer") as outer:
        log.info("in_outer")
        with tracer.start_as_current_span("inner") as inner:
            logging.getLogger("thirdparty").warning("from_stdlib")
    log.info("after")

    events = log_output.events()
    assert [e["event"] for e in events] == ["before", "in_outer", "from_stdlib", "after"]
    assert "trace_id" not in events[0]
    assert "trace_id" not in events[3]
    assert {k: events[1][k] for k in ("trace_id", "span_id")} == _hex_ids(outer)
    assert {k: events[2][k] for k in ("trace_id", "span_id")} == _hex_ids(inner)
    assert events[1]["trace_id"] == events[2]["trace_id"]
    assert len(events[1]["trace_id"]) == 32
    assert len(events[1]["span_id"]) == 16
    finished = {s.name: format(s.context.span_id, "016x") for s in exporter.get_finished_spans()}
    assert finished == {"outer": events[1]["span_id"], "inner": events[2]["span_id"]}


async def test_access_event_carries_the_server_span(
    log_output: LogOutput, spans: tuple[Any, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        reqlog.get_logger("orders").info("loading_item", item_id=item_id)
        return {"id": item_id}

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        # What OpenTelemetry's ASGI instrumentation does: a server span around the app.
        with tracer.start_as_current_span("GET /items/{item_id}"):
            await app(scope, receive, send)

    transport = httpx.ASGITransport(app=traced, client=("10.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/items/3")

    [span] = exporter.get_finished_spans()
    ids = {"trace_id": format(span.context.trace_id, "032x")}
    ids["span_id"] = format(span.context.span_id, "016x")
    events = [e for e in log_output.events() if e["logger"] != "httpx"]
    assert [e["event"] for e in events] == ["loading_item", "request_completed"]
    for event in events:
        assert {k: event[k] for k in ids} == ids


def test_trace_context_can_be_turned_off(
    log_output: LogOutput, spans: tuple[Any, InMemorySpanExporter]
) -> None:
    tracer, _ = spans
    log_output.configure(trace_context=False)
    with tracer.start_as_current_span("s"):
        reqlog.get_logger("t").info("hello")
    [event] = log_output.events()
    assert "trace_id" not in event


def test_otlp_to_a_logger_provider(
    log_output: LogOutput, spans: tuple[Any, InMemorySpanExporter]
) -> None:
    tracer, _ = spans
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    log_output.configure(otlp=provider, service="orders")

    with tracer.start_as_current_span("s") as span:
        reqlog.get_logger("orders.db").warning(
            "slow_query", table="orders", rows=3, ms=12.5, cached=False, tags=["a", "b"]
        )
    reqlog.get_logger("orders").info("nested", detail={"k": [1, 2]}, nothing=None)

    first, second = (r.log_record for r in exporter.get_finished_logs())
    assert first.body == "slow_query"
    assert first.severity_text == "WARN"
    assert first.severity_number is not None
    assert first.severity_number.name == "WARN"
    assert dict(first.attributes or {}) == {
        "table": "orders",
        "rows": 3,
        "ms": 12.5,
        "cached": False,
        "tags": ("a", "b"),
        "logger": "orders.db",
        "service": "orders",
    }
    assert format(first.trace_id or 0, "032x") == _hex_ids(span)["trace_id"]
    assert format(first.span_id or 0, "016x") == _hex_ids(span)["span_id"]
    # The line on stdout has the same event, trace IDs included.
    line = log_output.events()[0]
    assert first.timestamp == _ns(line["timestamp"])
    assert line["trace_id"] == _hex_ids(span)["trace_id"]
    assert dict(second.attributes or {}) == {
        "detail": '{"k":[1,2]}',
        "logger": "orders",
        "service": "orders",
    }
    provider.shutdown()


def _ns(iso: str) -> int:
    from datetime import datetime

    dt = datetime.fromisoformat(iso)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


class _Receiver(BaseHTTPRequestHandler):
    """A tiny OTLP/HTTP logs endpoint: decodes each ExportLogsServiceRequest it is sent."""

    received: list[tuple[str, ExportLogsServiceRequest]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportLogsServiceRequest()
        request.ParseFromString(body)
        self.received.append((self.path, request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, ExportLogsServiceRequest]]]]:
    received: list[tuple[str, ExportLogsServiceRequest]] = []
    handler = type("Handler", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def _value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attrs(attributes: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in attributes if isinstance(a, KeyValue)}


def _records(received: list[tuple[str, ExportLogsServiceRequest]]) -> dict[str, dict[str, Any]]:
    """Every log record received, by body: its scope, resource and fields decoded."""
    records: dict[str, dict[str, Any]] = {}
    for path, request in received:
        assert path == "/v1/logs"
        for resource_logs in request.resource_logs:
            resource = _attrs(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    records[record.body.string_value] = {
                        "resource": resource,
                        "scope": scope_logs.scope.name,
                        "severity_text": record.severity_text,
                        "severity_number": record.severity_number,
                        "time_unix_nano": record.time_unix_nano,
                        "trace_id": record.trace_id.hex(),
                        "span_id": record.span_id.hex(),
                        "attributes": _attrs(record.attributes),
                    }
    return records


async def test_otlp_http_end_to_end(
    log_output: LogOutput,
    spans: tuple[Any, InMemorySpanExporter],
    receiver: tuple[str, list[tuple[str, ExportLogsServiceRequest]]],
) -> None:
    url, received = receiver
    tracer, _ = spans
    log_output.configure(otlp=url, service="orders")
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        with tracer.start_as_current_span("load"):
            reqlog.get_logger("orders").info("loading_item", item_id=item_id, found=True)
        return {"id": item_id}

    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/items/3?q=x", headers={"X-Request-ID": "ab" * 16})
    assert reqlog.flush()

    lines = {e["event"]: e for e in log_output.events()}
    records = _records(received)

    loading = records["loading_item"]
    assert loading == {
        "resource": loading["resource"],
        "scope": "orders",
        "severity_text": "INFO",
        "severity_number": 9,
        "time_unix_nano": _ns(lines["loading_item"]["timestamp"]),
        "trace_id": lines["loading_item"]["trace_id"],
        "span_id": lines["loading_item"]["span_id"],
        "attributes": {
            "request_id": "ab" * 16,
            "client_ip": "10.0.0.1",
            "item_id": 3,
            "found": True,
            "logger": "orders",
            "service": "orders",
        },
    }
    assert loading["resource"]["service.name"] == "orders"

    completed = records["request_completed"]
    assert completed["scope"] == "reqlog.access"
    expected = {k: v for k, v in lines["request_completed"].items() if v is not None}
    for key in ("event", "level", "timestamp"):
        expected.pop(key)
    assert completed["attributes"] == expected
    assert completed["attributes"]["route"] == "/items/{item_id}"
    assert completed["attributes"]["query"] == "q=x"


def test_otlp_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    log_output: LogOutput,
    receiver: tuple[str, list[tuple[str, ExportLogsServiceRequest]]],
) -> None:
    url, received = receiver
    monkeypatch.setenv("REQLOG_OTLP", url + "/v1/logs")
    log_output.configure()
    reqlog.get_logger("t").info("from_env")
    reqlog.flush()
    assert [path for path, _ in received] == ["/v1/logs"]

    received.clear()
    monkeypatch.setenv("REQLOG_OTLP", "false")
    log_output.configure()
    reqlog.get_logger("t").info("not_sent")
    reqlog.flush()
    assert received == []


def test_reconfiguring_shuts_the_old_pipeline_down(
    log_output: LogOutput, receiver: tuple[str, list[tuple[str, ExportLogsServiceRequest]]]
) -> None:
    url, received = receiver
    log_output.configure(otlp=url)
    reqlog.get_logger("t").info("first")
    log_output.configure()  # no otlp: the pending record is exported on the way out
    reqlog.get_logger("t").info("second")
    reqlog.flush()
    assert list(_records(received)) == ["first"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"otlp": "ftp://collector"}, "otlp: expected True, an http(s) URL or a LoggerProvider"),
        ({"otlp": 4318}, "otlp: expected True, an http(s) URL or a LoggerProvider"),
        ({"trace_context": "yes"}, "trace_context: expected True, False or None"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        reqlog.configure(**options)


def test_without_opentelemetry_installed() -> None:
    # A fresh interpreter where every opentelemetry import fails, as without the extra.
    script = textwrap.dedent(
        """
        import sys, io, importlib.abc

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(name)
                return None

        sys.meta_path.insert(0, Block())
        import reqlog
        out = io.StringIO()
        reqlog.configure(output=out, format="json")
        reqlog.get_logger("t").info("plain")
        try:
            reqlog.configure(otlp=True)
        except ValueError as exc:
            print("error:", exc)
        try:
            import reqlog.integrations.otel
        except ImportError as exc:
            print("import:", exc)
        print(out.getvalue().strip())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQLOG_")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    error, imported, line = result.stdout.strip().splitlines()
    assert error == "error: otlp: needs the OpenTelemetry SDK: pip install 'reqlog-asgi[otel]'"
    assert imported == (
        "import: reqlog.integrations.otel needs opentelemetry-api: pip install 'reqlog-asgi[otel]'"
    )
    event = orjson.loads(line)
    assert event["event"] == "plain"
    assert "trace_id" not in event
