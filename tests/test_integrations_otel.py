"""reqlog.integrations.otel: trace context on events, and events over OTLP to a real receiver."""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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


#: The receivers running, by URL: a test may stop one (a collector going down).
_SERVERS: dict[str, tuple[ThreadingHTTPServer, int]] = {}


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, ExportLogsServiceRequest]]]]:
    received: list[tuple[str, ExportLogsServiceRequest]] = []
    handler = type("Handler", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}"
    _SERVERS[url] = (server, port)
    yield url, received
    reqlog._configure.reset()  # the pipeline lets go of the receiver before it stops
    del _SERVERS[url]
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


# -- a collector that is down: bounded waits, every line written, every loss counted ---------------


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A real port on which nothing listens: bound here, never listening, so every connection
    is refused and no other process can take the port while the test runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def quick_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    # The exporter's own bound on one export, retries included (default 10 s): a dead
    # collector then fails a batch within about a second instead of after 7.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "1")


def _await(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _otlp_stats() -> dict[str, int]:
    stats: Any = reqlog.output_stats()
    return dict(stats["otlp"])


@pytest.mark.slow
def test_dead_collector_flush_is_bounded_and_says_false(
    tmp_path: Path, refusing_url: str, quick_exporter: None
) -> None:
    log = tmp_path / "app.log"
    reqlog.configure(output=str(log), format="json", otlp=refusing_url, otlp_timeout=0.3)
    for i in range(10):
        reqlog.get_logger("t").info("tick", i=i)

    started = time.monotonic()
    flushed = reqlog.flush()
    took = time.monotonic() - started

    # Bounded by otlp_timeout (the exporter retries for a second), not by the exporter.
    assert flushed is False
    assert took < 0.3 + 3.0
    # Every line is in the file: the collector never held the output up.
    ticks = [e for e in map(orjson.loads, log.read_bytes().splitlines()) if e["event"] == "tick"]
    assert [e["i"] for e in ticks] == list(range(10))

    # Once the exporter gives up, the records are counted as dropped, like any other loss.
    _await(lambda: _otlp_stats()["dropped"] == 10, "the exporter never gave up")
    assert _otlp_stats() == {"accepted": 10, "written": 0, "dropped": 10, "errors": 1}
    stats: Any = reqlog.output_stats()
    assert stats["dropped"] == stats["otlp"]["dropped"]  # counted in the total; the file lost none
    # The loss makes one flush say so (the first, if the exporter gave up within its wait,
    # else this one); after that nothing is pending and nothing new is lost.
    reqlog.flush()
    assert reqlog.flush() is True


@pytest.mark.slow
def test_a_collector_that_stops_then_comes_back(
    receiver: tuple[str, list[tuple[str, ExportLogsServiceRequest]]], quick_exporter: None
) -> None:
    url, received = receiver
    out = io.BytesIO()
    reqlog.configure(output=out, format="json", otlp=url, otlp_timeout=5)
    log = reqlog.get_logger("t")
    log.info("before")
    assert reqlog.flush() is True
    assert list(_records(received)) == ["before"]

    server, port = _SERVERS[url]
    server.shutdown()
    server.server_close()  # connections to the port are refused from now on
    for i in range(3):
        log.info("while_down", i=i)
    assert reqlog.flush() is False  # the exporter gave up within otlp_timeout
    assert _otlp_stats() == {"accepted": 4, "written": 1, "dropped": 3, "errors": 1}

    # The collector is back on the same port: the next batch goes through, and the output
    # says what OTLP lost, once.
    again = ThreadingHTTPServer(("127.0.0.1", port), server.RequestHandlerClass)
    threading.Thread(target=again.serve_forever, args=(0.05,), daemon=True).start()
    try:
        log.info("after")
        assert reqlog.flush() is True
    finally:
        again.shutdown()
        again.server_close()
    assert list(_records(received)) == ["before", "after"]
    events = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events if e["logger"] != "t" and e["logger"] == "reqlog"] == [
        "logs_dropped"
    ]
    [notice] = [e for e in events if e["event"] == "logs_dropped"]
    assert (notice["count"], notice["reason"], notice["level"]) == (3, "otlp", "warning")
    assert [e["event"] for e in events if e["logger"] == "t"] == [
        "before",
        "while_down",
        "while_down",
        "while_down",
        "after",
    ]
    assert _otlp_stats() == {"accepted": 5, "written": 2, "dropped": 3, "errors": 1}


@pytest.mark.slow
def test_a_dead_collector_never_costs_the_output_a_line_and_exit_is_bounded(
    tmp_path: Path, refusing_url: str
) -> None:
    # The case, in a fresh interpreter: events a tenth of a second apart, so that the
    # output's writer takes them one by one, then exit. The exporter keeps its default
    # 10 s bound, retrying all along; the exit waits otlp_timeout for it, then stops it.
    log = tmp_path / "app.log"
    script = textwrap.dedent(
        f"""
        import atexit, sys, time
        marks = {{}}
        # Registered before reqlog's own exit flush, so it runs after it.
        atexit.register(lambda: print(round(time.monotonic() - marks["end"], 3)))
        import reqlog
        reqlog.configure(output={str(log)!r}, format="json", otlp={refusing_url!r},
                         otlp_timeout=0.5)
        for i in range(10):
            reqlog.get_logger("t").info("tick", i=i)
            time.sleep(0.1)
        marks["end"] = time.monotonic()
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REQLOG_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    exit_took = float(result.stdout)
    assert exit_took < 0.5 + 3.0  # it was over 5 s: the output's exit flush timed out
    events = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [e["i"] for e in events if e["event"] == "tick"] == list(range(10))
    [notice] = [e for e in events if e["event"] == "logs_dropped"]
    assert (notice["count"], notice["reason"]) == (10, "otlp")
    # Reported once on stderr, with the endpoint.
    assert result.stderr.count("reqlog: OTLP to ") == 1, result.stderr
    assert "could not export" in result.stderr


@pytest.mark.slow
def test_your_own_provider_is_flushed_within_the_bound(refusing_url: str) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    # The exporter's default bound (10 s): its retries outlast the flush's wait by far.
    exporter = OTLPLogExporter(endpoint=refusing_url + "/v1/logs")
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    reqlog.configure(output=io.BytesIO(), format="json", otlp=provider, otlp_timeout=0.2)
    reqlog.get_logger("t").info("hello")
    started = time.monotonic()
    # The SDK's force_flush() would wait for the exporter's retries, whatever its timeout.
    assert reqlog.flush() is False
    assert time.monotonic() - started < 0.2 + 3.0
    assert "otlp" not in reqlog.output_stats()  # delivery is the provider's own business
    exporter.shutdown()  # type: ignore[no-untyped-call]  # ends the retries
    provider.shutdown()


@pytest.mark.parametrize("value", [0, -1, "soon", float("nan"), float("inf"), True, "0"])
def test_otlp_timeout_is_validated(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^otlp_timeout: expected a number of seconds"):
        reqlog.configure(output=io.BytesIO(), otlp_timeout=value)


def test_otlp_timeout_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, receiver: tuple[str, list[Any]]
) -> None:
    url, _ = receiver
    monkeypatch.setenv("REQLOG_OTLP_TIMEOUT", "0.75")
    reqlog.configure(output=io.BytesIO(), otlp=url)
    assert reqlog._state.STATE.otlp.timeout == 0.75
    monkeypatch.setenv("REQLOG_OTLP_TIMEOUT", "never")
    with pytest.raises(ValueError, match=r"^otlp_timeout \(from REQLOG_OTLP_TIMEOUT\): "):
        reqlog.configure(output=io.BytesIO(), otlp=url)


def test_a_full_channel_drops_and_counts(tmp_path: Path) -> None:
    # The channel itself, with an exporter that never answers until told to: the emitting
    # side never waits, and what does not fit is counted.
    from reqlog.integrations.otel import OTLPChannel

    release = threading.Event()
    exported: list[Any] = []

    class Stuck:
        def export(self, batch: Any) -> Any:
            release.wait(30)
            exported.extend(batch)
            return _success()

        def shutdown(self) -> None:
            release.set()

    lost: list[int] = []
    channel = OTLPChannel(Stuck(), queue_size=4, batch_size=2, delay=0.0, on_lost=lost.append)
    channel.export(["r0", "r1"])  # taken by the thread, which then waits in export()
    _await(lambda: not channel._queue, "the thread never took the first batch")
    channel.export([f"r{i}" for i in range(2, 10)])  # 4 fit, 4 do not
    assert channel.stats() == {"accepted": 10, "written": 0, "dropped": 4, "errors": 0}
    assert channel.flush(0.05) is False
    release.set()
    assert channel.flush(30) is True  # the 4 drops were already reported by the flush above
    assert exported == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert lost == [4]
    channel.close(1.0)


def _success() -> Any:
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    return LogRecordExportResult.SUCCESS


def test_close_while_the_thread_waits_for_a_batch_to_fill() -> None:
    # The thread lingers for a fuller batch; close() takes what is queued meanwhile. Either
    # side may get the record, but it is counted once, and no empty batch is ever sent.
    from reqlog.integrations.otel import OTLPChannel

    batches: list[list[Any]] = []

    class Recorder:
        def export(self, batch: Any) -> Any:
            batches.append(list(batch))
            return _success()

        def shutdown(self) -> None:
            pass

    lost: list[int] = []
    channel = OTLPChannel(Recorder(), batch_size=100, delay=30.0, on_lost=lost.append)
    channel.export(["only"])
    _await(lambda: channel._thread is not None, "no thread")
    channel.close(0.0)
    assert channel._thread is not None
    channel._thread.join(10)
    stats = channel.stats()
    assert [b for b in batches if not b] == []
    assert (stats["written"] + stats["dropped"], stats["errors"]) == (1, 0)
    assert lost == ([1] if stats["dropped"] else [])
