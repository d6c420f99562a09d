"""The processor chain: order, slow requests, levels by status, sampling, the slow output."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from fastapi import FastAPI, HTTPException
from freezegun import freeze_time
from structlog.typing import EventDict

import reqlog
from reqlog.processors import (
    IsoTimeStamper,
    Redactor,
    Sampler,
    SlowRequestOutput,
    StatusLevels,
    WhenPresent,
    sample_score,
)
from tests.conftest import LogOutput

LOW_ID = "00000000" + "0" * 24  # sample score 0.0: kept at every rate
HIGH_ID = "ffffffff" + "0" * 24  # sample score ~1.0: dropped at every rate below 1


class FakeClock:
    """The middleware's clock, moved by the endpoints: durations without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000.0


def make_app(clock: FakeClock | None = None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware, clock=clock or FakeClock())

    @app.get("/items/{item_id}")
    async def item(item_id: int, ms: float = 0.0) -> dict[str, int]:
        if clock is not None:
            clock.advance(ms)
        return {"id": item_id}

    @app.get("/reports/{rid}")
    async def report(rid: str, ms: float = 0.0) -> dict[str, str]:
        if clock is not None:
            clock.advance(ms)
        return {"id": rid}

    @app.get("/status/{code}")
    async def status(code: int, ms: float = 0.0) -> None:
        if clock is not None:
            clock.advance(ms)
        raise HTTPException(status_code=code)

    @app.get("/boom")
    async def boom() -> None:
        msg = "boom"
        raise RuntimeError(msg)

    return app


def get(app: FastAPI, url: str, request_id: str = LOW_ID) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(
            app=app, client=("10.0.0.1", 123), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get(url, headers={"user-agent": "test", "x-request-id": request_id})

    return asyncio.run(call())


def completed(
    path: str,
    route: str,
    *,
    duration_ms: float,
    status_code: int = 200,
    level: str = "info",
    query: str = "",
    response_bytes: int = 10,
    request_id: str = LOW_ID,
    **extra: Any,
) -> dict[str, Any]:
    """A whole request_completed event as the middleware writes it."""
    return {
        "request_id": request_id,
        "client_ip": "10.0.0.1",
        "method": "GET",
        "path": path,
        "route": route,
        "query": query,
        "status_code": status_code,
        "duration_ms": duration_ms,
        "user_agent": "test",
        "http_version": "1.1",
        "response_bytes": response_bytes,
        **extra,
        "event": "request_completed",
        "logger": "reqlog.access",
        "level": level,
        "timestamp": "2024-05-01T12:00:00Z",
    }


# --- the chain ----------------------------------------------------------------------------------


def _names(chain: list[Any]) -> list[str]:
    return [getattr(p, "__name__", type(p).__name__) for p in chain]


def test_default_chain_order() -> None:
    def mine(logger: Any, method_name: str, event_dict: Any) -> Any:
        return event_dict

    chain = reqlog.default_processors(service="orders", processors=[mine], sample_rate=0.5)
    assert _names(chain) == [
        "merge_structlog_contextvars",
        "merge_request_context",
        "add_logger_name",
        "add_log_level",
        "IsoTimeStamper",
        "AddStaticFields",
        "Sampler",
        "Guarded",  # the user's processor, guarded
        "WhenPresent",  # stack info and exceptions, when present
        "Redactor",
        "capture",  # reqlog.testing's hook: a no-op outside tests
        "JSONRenderer",
    ]
    assert _names(reqlog.default_processors(format="console", redact=False)) == [
        "merge_structlog_contextvars",
        "merge_request_context",
        "add_logger_name",
        "add_log_level",
        "IsoTimeStamper",
        "WhenPresent",
        "capture",
        "EscapeControls",
        "ConsoleLines",  # ConsoleRenderer: continuation lines indented, never failing
    ]


def test_default_processors_drive_plain_structlog() -> None:
    stream = io.StringIO()
    structlog.configure(
        processors=reqlog.default_processors(service="worker"),
        logger_factory=structlog.WriteLoggerFactory(stream),
    )
    with freeze_time("2024-05-01T12:00:00Z"):
        structlog.get_logger("jobs").info("job_done", api_key="k", job=7)
    assert orjson.loads(stream.getvalue()) == {
        "event": "job_done",
        "api_key": "[REDACTED]",
        "job": 7,
        "level": "info",
        "timestamp": "2024-05-01T12:00:00Z",
        "service": "worker",
    }


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"format": "xml"}, "format"),
        ({"format": "auto"}, "format"),
        ({"service": 3}, "service"),
        ({"processors": [1]}, "processors"),
        ({"redact": "no"}, "redact"),
        ({"sample_rate": -0.1}, "sample_rate"),
        ({"schema": "xml"}, "schema"),
    ],
)
def test_default_processors_validate(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ValueError, match=f"^{option}: "):
        reqlog.default_processors(**kwargs)


def test_user_processors_run_after_context_and_before_redaction(log_output: LogOutput) -> None:
    seen: list[dict[str, Any]] = []

    def spy(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        seen.append(dict(event_dict))
        return event_dict

    log_output.configure(processors=[spy])
    with freeze_time("2024-05-01T12:00:00Z"):
        reqlog.get_logger("app").info("login", password="p")
    assert seen == [
        {
            "event": "login",
            "password": "p",  # not redacted yet
            "logger": "app",
            "level": "info",
            "timestamp": "2024-05-01T12:00:00Z",
        }
    ]
    assert log_output.events()[0]["password"] == "[REDACTED]"


def test_user_processor_can_drop_events(log_output: LogOutput) -> None:
    def drop_health(logger: Any, method_name: str, event_dict: dict[str, Any]) -> Any:
        if event_dict.get("path") == "/healthz" or event_dict.get("logger") == "noisy":
            raise structlog.DropEvent
        return event_dict

    log_output.configure(processors=[drop_health])
    reqlog.get_logger("app").info("kept", path="/items")
    reqlog.get_logger("app").info("dropped", path="/healthz")
    logging.getLogger("noisy").warning("dropped too")
    assert [e["event"] for e in log_output.events()] == ["kept"]


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5Z", "1999-12-31T23:59:59.999999Z"],
)
def test_iso_timestamper_matches_structlog(moment: str) -> None:
    ours = IsoTimeStamper()
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    with freeze_time(moment):
        assert ours(None, "info", {}) == theirs(None, "info", {})


def test_iso_timestamper_follows_the_clock() -> None:
    stamper = IsoTimeStamper()
    with freeze_time("2024-05-01T12:00:00.25Z") as frozen:
        assert stamper(None, "info", {}) == {"timestamp": "2024-05-01T12:00:00.250000Z"}
        frozen.tick(1.5)
        assert stamper(None, "info", {}) == {"timestamp": "2024-05-01T12:00:01.750000Z"}


def test_when_present_skips_events_without_its_keys() -> None:
    calls: list[str] = []

    def step(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        calls.append(event_dict["event"])
        return event_dict

    when = WhenPresent(("exc_info",), [step])
    when(None, "info", {"event": "plain"})
    when(None, "info", {"event": "failed", "exc_info": True})
    assert calls == ["failed"]


# --- slow requests ------------------------------------------------------------------------------


def test_slow_request_is_tagged_with_an_injected_clock(log_output: LogOutput) -> None:
    log_output.configure(slow_request_ms=100)
    clock = FakeClock()
    app = make_app(clock)
    with freeze_time("2024-05-01T12:00:00Z"):
        get(app, "/items/1?ms=250")
        get(app, "/items/2?ms=20")
    assert log_output.access() == [
        completed(
            "/items/1",
            "/items/{item_id}",
            query="ms=250",
            duration_ms=250.0,
            response_bytes=8,
            level="warning",
            slow=True,
            slow_threshold_ms=100.0,
        ),
        completed(
            "/items/2", "/items/{item_id}", query="ms=20", duration_ms=20.0, response_bytes=8
        ),
    ]


def test_threshold_is_inclusive_and_env_configurable(
    log_output: LogOutput, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQLOG_SLOW_REQUEST_MS", "100")
    log_output.configure()
    clock = FakeClock()
    app = make_app(clock)
    get(app, "/items/1?ms=100")
    get(app, "/items/1?ms=99.5")
    assert [e.get("slow") for e in log_output.access()] == [True, None]


def test_per_route_thresholds(log_output: LogOutput) -> None:
    log_output.configure(slow_request_ms=100, slow_routes={"/reports/{rid}": 1000})
    clock = FakeClock()
    app = make_app(clock)
    get(app, "/reports/a?ms=250")  # the report route allows 1 s
    get(app, "/reports/b?ms=1500")
    get(app, "/items/1?ms=250")  # other routes keep the default
    assert [(e["path"], e.get("slow_threshold_ms"), e["level"]) for e in log_output.access()] == [
        ("/reports/a", None, "info"),
        ("/reports/b", 1000.0, "warning"),
        ("/items/1", 100.0, "warning"),
    ]


def test_per_route_threshold_without_a_default(log_output: LogOutput) -> None:
    log_output.configure(slow_routes={"/reports/{rid}": 50})
    clock = FakeClock()
    app = make_app(clock)
    get(app, "/reports/a?ms=60")
    get(app, "/items/1?ms=5000")
    assert [e.get("slow") for e in log_output.access()] == [True, None]


def test_slow_server_error_stays_an_error(log_output: LogOutput) -> None:
    log_output.configure(slow_request_ms=10)
    clock = FakeClock()
    get(make_app(clock), "/status/503?ms=50")
    [event] = log_output.access()
    assert (event["status_code"], event["slow"], event["level"]) == (503, True, "error")


def test_slow_level_is_chosen_before_level_filtering(log_output: LogOutput) -> None:
    # At level WARNING, fast 200s are filtered out but slow ones get through as warnings.
    log_output.configure(level="WARNING", slow_request_ms=100)
    clock = FakeClock()
    app = make_app(clock)
    get(app, "/items/1?ms=10")
    get(app, "/items/2?ms=500")
    assert [(e["path"], e["level"]) for e in log_output.access()] == [("/items/2", "warning")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"slow_request_ms": 0}, "slow_request_ms"),
        ({"slow_request_ms": "fast"}, "slow_request_ms"),
        ({"slow_routes": {"reports": 10}}, "slow_routes"),
        ({"slow_routes": {"/reports": -1}}, "slow_routes['/reports']"),
        ({"slow_routes": [("/r", 1)]}, "slow_routes"),
        ({"slow_output": 42}, "slow_output"),
        ({"slow_output": "/nonexistent-dir/slow.log"}, "slow_output"),
    ],
)
def test_slow_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        reqlog.configure(output=io.BytesIO(), **options)


# --- the slow output ----------------------------------------------------------------------------


def test_slow_output_receives_slow_requests_in_addition(log_output: LogOutput) -> None:
    slow = io.BytesIO()
    log_output.configure(slow_request_ms=100, slow_output=slow)
    clock = FakeClock()
    app = make_app(clock)
    get(app, "/items/1?ms=250")
    get(app, "/items/2?ms=5")
    reqlog.get_logger("app").warning("not an access event", slow=True)
    main = log_output.access()
    assert [e["path"] for e in main] == ["/items/1", "/items/2"]
    slow_events = [orjson.loads(line) for line in slow.getvalue().splitlines()]
    assert slow_events == [main[0]]


def test_slow_output_to_a_file_in_console_format(tmp_path: Path) -> None:
    path = tmp_path / "slow.log"
    main = io.StringIO()
    reqlog.configure(output=main, format="console", slow_request_ms=100, slow_output=str(path))
    clock = FakeClock()
    app = make_app(clock)
    get(app, "/items/1?ms=250")
    get(app, "/items/2?ms=5")
    reqlog.flush()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert "request_completed" in lines[0]
    assert "slow_threshold_ms=100.0" in lines[0]
    assert "\x1b[" not in lines[0]  # a file gets no colours
    assert main.getvalue().count("request_completed") == 2


def test_slow_output_is_redacted(log_output: LogOutput) -> None:
    slow = io.BytesIO()
    log_output.configure(slow_request_ms=1, slow_output=slow)
    clock = FakeClock()
    get(make_app(clock), "/items/1?ms=5&token=abc")
    [event] = [orjson.loads(line) for line in slow.getvalue().splitlines()]
    assert event["query"] == "ms=5&token=[REDACTED]"


def test_reconfigure_closes_the_old_slow_output(tmp_path: Path) -> None:
    first = tmp_path / "first.log"
    reqlog.configure(output=io.BytesIO(), slow_request_ms=1, slow_output=str(first))
    reqlog.configure(output=io.BytesIO())
    clock = FakeClock()
    get(make_app(clock), "/items/1?ms=5")
    assert first.read_text() == ""


def test_slow_request_output_survives_a_failing_renderer() -> None:
    written: list[bytes] = []

    class Sink:
        def write(self, line: bytes) -> None:
            written.append(line)

    def broken(logger: Any, method_name: str, event_dict: Any) -> Any:
        raise TypeError

    tee = SlowRequestOutput(Sink(), [broken])
    event = {"event": "request_completed", "slow": True}
    assert tee(None, "warning", event) is event
    assert written == []


# --- levels by status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "slow", "level"),
    [
        (101, False, logging.INFO),
        (200, False, logging.INFO),
        (304, False, logging.INFO),
        (404, False, logging.WARNING),
        (500, False, logging.ERROR),
        (200, True, logging.WARNING),
        (404, True, logging.WARNING),
        (503, True, logging.ERROR),
    ],
)
def test_default_status_levels(code: int, slow: bool, level: int) -> None:
    assert StatusLevels()(code, slow) == level


def test_status_levels_mapping_and_classes() -> None:
    levels = StatusLevels({404: "info", "4xx": "error", "2XX": "debug", 503: logging.WARNING})
    assert [levels(c) for c in (200, 404, 401, 503, 500)] == [
        logging.DEBUG,
        logging.INFO,  # an exact code wins over its class
        logging.ERROR,
        logging.WARNING,
        logging.ERROR,
    ]
    assert levels(200, slow=True) == logging.WARNING


def test_status_levels_callable() -> None:
    def choose(status: int, slow: bool) -> str:
        return "critical" if status == 418 else "debug"

    levels = StatusLevels(choose)
    assert (levels(418), levels(200), levels(500, True)) == (
        logging.CRITICAL,
        logging.DEBUG,
        logging.DEBUG,
    )


def test_status_levels_callable_that_fails_falls_back() -> None:
    def broken(status: int, slow: bool) -> str:
        raise KeyError(status)

    assert StatusLevels(broken)(503) == logging.ERROR
    assert StatusLevels(lambda status, slow: "nonsense")(404) == logging.WARNING


@pytest.mark.parametrize(
    "mapping",
    [{"6xx": "info"}, {99: "info"}, {404: "loud"}, {True: "info"}, ["404"]],
)
def test_status_levels_are_validated(mapping: Any) -> None:
    with pytest.raises(ValueError, match="status_levels"):
        reqlog.configure(output=io.BytesIO(), status_levels=mapping)


def test_status_levels_through_the_middleware(log_output: LogOutput) -> None:
    log_output.configure(status_levels={"4xx": "info", 503: "critical"}, level="DEBUG")
    app = make_app()
    get(app, "/status/404")
    get(app, "/status/503")
    get(app, "/status/500")
    get(app, "/items/1")
    assert [(e["status_code"], e["level"]) for e in log_output.access()] == [
        (404, "info"),
        (503, "critical"),
        (500, "error"),
        (200, "info"),
    ]


# --- sampling -----------------------------------------------------------------------------------


def _ids(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(n)]


def test_sample_score_is_stable() -> None:
    assert sample_score(LOW_ID) == 0.0
    assert sample_score("80000000-0000-4000-8000-000000000000") == 0.5
    assert sample_score("req-42") == sample_score("req-42")  # hashed, not hex
    assert 0.0 <= sample_score("req-42") < 1.0


def test_sampler_keeps_about_its_share_deterministically() -> None:
    def run(rate: float) -> list[bool]:
        sampler = Sampler(rate)
        kept = []
        for rid in _ids(4000):
            event = {"event": "request_completed", "status_code": 200, "request_id": rid}
            try:
                sampler(None, "info", event)
                kept.append(True)
            except structlog.DropEvent:
                kept.append(False)
        return kept

    first = run(0.25)
    assert first == run(0.25)  # reruns and replicas agree
    assert 0.22 < sum(first) / len(first) < 0.28
    # A higher rate keeps a superset: raising it never loses a request that was kept.
    assert all(b for a, b in zip(first, run(0.5), strict=True) if a)


def test_sampled_event_says_its_rate() -> None:
    event = {"event": "request_completed", "status_code": 200, "request_id": LOW_ID}
    assert Sampler(0.1)(None, "info", dict(event)) == {**event, "sample_rate": 0.1}


@pytest.mark.parametrize(
    "event",
    [
        {"event": "request_completed", "status_code": 404},
        {"event": "request_completed", "status_code": 500},
        {"event": "request_completed", "status_code": 200, "slow": True},
        {"event": "request_completed", "status_code": 200, "response_incomplete": True},
        {"event": "request_completed", "status_code": 200, "level": "warning"},
        {"event": "request_failed", "status_code": 500},
        {"event": "loading_item"},
        {"event": "request_completed", "status_code": 200, "request_id": None},
    ],
)
def test_sampler_always_keeps_errors_and_the_rest(event: dict[str, Any]) -> None:
    event = {"request_id": HIGH_ID, **event}
    assert Sampler(0.01)(None, "info", dict(event)) == event


def test_sampling_through_the_middleware(log_output: LogOutput) -> None:
    log_output.configure(sample_rate=0.5, slow_request_ms=100)
    clock = FakeClock()
    app = make_app(clock)
    get(app, "/items/1", request_id=LOW_ID)  # kept by sampling
    get(app, "/items/2", request_id=HIGH_ID)  # dropped by sampling
    get(app, "/status/404", request_id=HIGH_ID)  # 4xx: always kept
    get(app, "/boom", request_id=HIGH_ID)  # request_failed: always kept
    get(app, "/items/3?ms=500", request_id=HIGH_ID)  # slow: always kept
    events = log_output.access()
    assert [(e["path"], e["event"], e.get("sample_rate")) for e in events] == [
        ("/items/1", "request_completed", 0.5),
        ("/status/404", "request_completed", None),
        ("/boom", "request_failed", None),
        ("/items/3", "request_completed", None),
    ]


def test_sample_rate_from_the_environment(
    log_output: LogOutput, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQLOG_SAMPLE_RATE", "0.5")
    log_output.configure()
    app = make_app()
    get(app, "/items/1", request_id=LOW_ID)
    get(app, "/items/2", request_id=HIGH_ID)
    assert [e["path"] for e in log_output.access()] == ["/items/1"]


@pytest.mark.parametrize(
    "rate", [-0.5, -1e-9, 1.5, 1.0000001, "half", "", True, False, float("nan"), None, "-0.1"]
)
def test_sample_rate_is_validated(rate: Any) -> None:
    with pytest.raises(ValueError, match=r"^sample_rate: expected a number from 0 to 1, got "):
        reqlog.configure(output=io.BytesIO(), sample_rate=rate)


@pytest.mark.parametrize("rate", [0, 0.0, "0", "0.0"])
def test_sample_rate_zero_keeps_only_what_is_always_kept(log_output: LogOutput, rate: Any) -> None:
    # A busy service: no routine request, but every error, 4xx, slow or incomplete one.
    log_output.configure(sample_rate=rate, slow_request_ms=100)
    clock = FakeClock()
    app = make_app(clock)
    get(app, "/items/1", request_id=LOW_ID)  # score 0.0: kept at any rate above 0, not at 0
    get(app, "/items/2", request_id=HIGH_ID)
    get(app, "/status/404", request_id=HIGH_ID)
    get(app, "/status/503", request_id=LOW_ID)
    get(app, "/boom", request_id=LOW_ID)
    get(app, "/items/3?ms=500", request_id=LOW_ID)
    reqlog.get_logger("app").info("not_an_access_event")
    events = log_output.events()
    assert [(e["event"], e.get("path"), e.get("sample_rate")) for e in events] == [
        ("request_completed", "/status/404", None),
        ("request_completed", "/status/503", None),
        ("request_failed", "/boom", None),
        ("request_completed", "/items/3", None),
        ("not_an_access_event", None, None),
    ]


def test_sample_rate_zero_from_the_environment(
    log_output: LogOutput, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQLOG_SAMPLE_RATE", "0")
    log_output.configure()
    app = make_app()
    get(app, "/items/1", request_id=LOW_ID)
    get(app, "/status/500", request_id=LOW_ID)
    assert [e["path"] for e in log_output.access()] == ["/status/500"]


def test_sampler_at_zero_drops_every_routine_request() -> None:
    sampler = Sampler(0)
    for rid in [LOW_ID, HIGH_ID, *_ids(200)]:
        with pytest.raises(structlog.DropEvent):
            sampler(
                None, "info", {"event": "request_completed", "status_code": 200, "request_id": rid}
            )
    assert reqlog.default_processors(sample_rate=0)  # accepted there too


def test_bad_env_sample_rate_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQLOG_SAMPLE_RATE", "2")
    with pytest.raises(ValueError, match="REQLOG_SAMPLE_RATE"):
        reqlog.configure(output=io.BytesIO())


def test_settings_expose_the_redactor_and_rate() -> None:
    from reqlog import _configure

    custom = Redactor(extra_keys=["x"])
    reqlog.configure(output=io.BytesIO(), redact=custom, sample_rate=0.3)
    assert (_configure.settings().redactor, _configure.settings().sample_rate) == (custom, 0.3)
    reqlog.configure(output=io.BytesIO(), redact=False)
    assert _configure.settings().redactor is None
