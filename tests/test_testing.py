"""reqlog.testing and the pytest plugin: capture_events, check_pipeline, reqlog_events."""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import orjson
import pytest
import structlog
from freezegun import freeze_time
from structlog.typing import EventDict, WrappedLogger

import reqlog
from reqlog import testing

pytest_plugins = ["pytester"]


# -- capture_events ----------------------------------------------------------------------------


def test_capture_events_sees_reqlog_structlog_and_stdlib_events(log_output: Any) -> None:
    log_output.configure(service="orders")
    with testing.capture_events() as events:
        reqlog.get_logger("app").info("from_reqlog", n=1)
        structlog.get_logger("lib").warning("from_structlog")
        logging.getLogger("std").error("from %s", "stdlib", extra={"order_id": 5})

    stamps = [e.pop("timestamp") for e in events]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", s) for s in stamps)
    assert events == [
        {"event": "from_reqlog", "n": 1, "logger": "app", "level": "info", "service": "orders"},
        {"event": "from_structlog", "logger": "lib", "level": "warning", "service": "orders"},
        {
            "event": "from stdlib",
            "order_id": 5,
            "logger": "std",
            "level": "error",
            "service": "orders",
        },
    ]
    # Still written: the capture only watches.
    assert [e["event"] for e in log_output.events()] == [
        "from_reqlog",
        "from_structlog",
        "from stdlib",
    ]


def test_capture_events_sees_what_the_schema_renders(log_output: Any) -> None:
    log_output.configure(schema="ecs")
    with testing.capture_events() as events:
        reqlog.get_logger("app").info("hi", status_code=201)
    assert events[0]["http"] == {"response": {"status_code": 201}}
    assert events[0]["message"] == "hi"


def test_capture_events_follows_reconfiguration_and_stops_at_exit(log_output: Any) -> None:
    log = reqlog.get_logger("app")
    with testing.capture_events() as events:
        log_output.configure()
        log.info("one")
        log_output.configure(level="WARNING")
        log.info("filtered")
        log.warning("two")
    log.warning("after")
    assert [e["event"] for e in events] == ["one", "two"]


def test_nested_captures_each_get_every_event_and_unwind_by_identity() -> None:
    log = reqlog.get_logger("app")
    reqlog.configure(output=io.BytesIO())
    with testing.capture_events() as outer:
        with testing.capture_events() as inner:
            log.info("both")
        log.info("outer_only")
    assert [e["event"] for e in outer] == ["both", "outer_only"]
    assert [e["event"] for e in inner] == ["both"]


def test_captured_events_are_copies(log_output: Any) -> None:
    log_output.configure(format="console")
    with testing.capture_events() as events:
        reqlog.get_logger("app").info("hi", path="/a\x1b[2J")
    # The console format escapes control characters after the capture point.
    assert events[0]["path"] == "/a\x1b[2J"


def test_stdlib_event_without_duplicate_message_under_log_capture(
    log_output: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # pytest's caplog handler formats the record first and leaves record.message behind.
    log_output.configure()
    with caplog.at_level(logging.INFO):
        logging.getLogger("std").info("hello %s", "there")
    (event,) = log_output.events()
    assert "message" not in event
    assert event["event"] == "hello there"


# -- check_pipeline ----------------------------------------------------------------------------


def redact_battery(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A stand-in redactor for the battery's secrets: walks the event, masks each secret value.

    It masks the battery's exact secret values, never a fragment of one: a fragment such as
    "4111" also turns up in timestamps and durations, and masking those would make the check
    fail on the clock (a timestamp of "...:00.041117Z" once read "[REDACTED]").
    """
    return {k: _mask(v) for k, v in event_dict.items()}


# The values reqlog.testing's battery logs (its private constants, spelled out here as a user's
# own redactor would know them).
_BATTERY_SECRETS = (
    "pw-Zq81xKm3vT",
    "tok-7RfWq2LpXc",
    "key-H4nd0ff9Qa",
    "sess-0aP9gLm2Wd",
    "dXNlcjpwYTU1LXNlY3JldA==",
    "b3Ar3r-T0k3n-Vx91LmQzR8",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjaGVja19waXBlbGluZSJ9"
    ".c2lnbmF0dXJlLW9mLWNoZWNrLXBpcGVsaW5l",
    "4111 1111 1111 1111",
    "078-05-1120",
)


def _mask(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        for secret in _BATTERY_SECRETS:
            if secret in value:
                value = value.replace(secret, "[REDACTED]")
        return value
    if depth > 10:  # the battery logs a list that contains itself
        return value
    if isinstance(value, dict):
        return {k: _mask(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, depth + 1) for v in value]
    return value


def test_battery_secrets_are_the_ones_check_pipeline_logs() -> None:
    # The stand-in redactor above would go stale silently if the battery changed its values.
    assert set(_BATTERY_SECRETS) == {
        testing._PASSWORD,
        testing._TOKEN,
        testing._API_KEY,
        testing._COOKIE,
        testing._BASIC,
        testing._BEARER,
        testing._JWT,
        testing._CARD,
        testing._SSN,
    }


@pytest.mark.parametrize(
    "instant",
    ["2026-11-24 06:00:00.041117", "2026-11-24 06:41:11.411100", "4111-01-01 00:00:00"],
)
def test_check_pipeline_passes_whatever_the_clock_says(instant: str) -> None:
    # Timestamps that contain a fragment of the fake card number are not secrets.
    with freeze_time(instant):
        report = testing.check_pipeline(format="json", level="ERROR", processors=[redact_battery])
    assert report.problems == []
    assert {orjson.loads(line)["timestamp"][:4] for line in report.lines} == {instant[:4]}


def test_check_pipeline_passes_on_the_defaults() -> None:
    report = testing.check_pipeline(format="json")
    assert report.ok
    assert len(report.lines) == len(report.cases) == 12


@pytest.mark.parametrize("schema", ["flat", "ecs", "otel"])
def test_check_pipeline_passes_on_a_redacting_chain(schema: str) -> None:
    report = testing.check_pipeline(format="json", schema=schema, processors=[redact_battery])
    assert report.problems == []
    assert (report.format, report.schema) == ("json", schema)
    assert report.cases == [
        "plain",
        "secret_keys",
        "secret_query",
        "secret_headers",
        "secret_text",
        "control_chars",
        "exception",
        "odd_objects",
        "unicode",
        "stdlib_args",
        "stdlib_bad_args",
        "stdlib_exception",
    ]
    assert len(report.lines) == 12
    assert all(isinstance(orjson.loads(line), dict) for line in report.lines)


@pytest.mark.parametrize("fmt", ["logfmt", "console"])
def test_check_pipeline_passes_on_text_formats(fmt: str) -> None:
    report = testing.check_pipeline(format=fmt, processors=[redact_battery])
    assert report.ok
    assert report.format == fmt


def test_check_pipeline_catches_secrets_written_in_clear() -> None:
    with pytest.raises(testing.PipelineCheckError) as caught:
        testing.check_pipeline(format="json", redact=False)
    problems = caught.value.report.problems
    assert "secret_keys: the secret 'pw-Zq81xKm3vT' was written in clear" in problems
    assert "secret_query: the secret 'tok-7RfWq2LpXc' was written in clear" in problems
    assert "stdlib_args: the secret 'pw-Zq81xKm3vT' was written in clear" in problems
    assert all("written in clear" in p for p in problems)
    assert isinstance(caught.value, AssertionError)
    assert str(caught.value).startswith(f"reqlog pipeline check: {len(problems)} problem(s)\n")


def test_check_pipeline_catches_a_processor_that_puts_a_secret_back() -> None:
    def add_debug_copy(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        # A "debugging aid" that keeps the raw password around under a key no redactor
        # knows about: runs after the stand-in redactor, so the secret is back.
        if "password" in event_dict:
            event_dict["debug_raw"] = "pw-Zq81xKm3vT"
        return event_dict

    with pytest.raises(testing.PipelineCheckError) as caught:
        testing.check_pipeline(format="json", processors=[redact_battery, add_debug_copy])
    assert caught.value.report.problems == [
        "secret_keys: the secret 'pw-Zq81xKm3vT' was written in clear",
        "stdlib_args: the secret 'pw-Zq81xKm3vT' was written in clear",
    ]


def test_check_pipeline_catches_a_chain_that_breaks_events() -> None:
    def drop_timestamp(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.pop("timestamp", None)
        return event_dict

    def explode_on_exceptions(
        logger: WrappedLogger, method_name: str, event_dict: EventDict
    ) -> EventDict:
        if event_dict.get("exc_info"):
            raise RuntimeError("processor bug")
        return event_dict

    with pytest.raises(testing.PipelineCheckError) as caught:
        testing.check_pipeline(
            format="json", processors=[redact_battery, drop_timestamp, explode_on_exceptions]
        )
    problems = caught.value.report.problems
    assert "plain: required key 'timestamp' missing" in problems
    assert "unicode: required key 'timestamp' missing" in problems
    assert any(
        p.startswith("exception: reqlog reported a failure: processor")
        and "RuntimeError('processor bug')" in p
        for p in problems
    )


def test_check_pipeline_catches_a_processor_that_returns_no_dict() -> None:
    def to_text(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return "oops"  # type: ignore[return-value]

    with pytest.raises(testing.PipelineCheckError) as caught:
        testing.check_pipeline(format="json", processors=[to_text])
    problems = caught.value.report.problems
    assert problems[:2] == [
        "plain: reqlog reported a failure: could not log event 'check_plain': "
        "AttributeError(\"'str' object has no attribute 'values'\")",
        "plain: expected one line, got none",
    ]
    assert len(problems) == 2 * 12


def test_check_pipeline_on_the_current_configuration_leaves_it_alone(log_output: Any) -> None:
    log_output.configure(processors=[redact_battery], service="orders")
    reqlog.get_logger("app").info("before")

    report = testing.check_pipeline()

    reqlog.get_logger("app").info("after")
    assert [e["event"] for e in log_output.events()] == ["before", "after"]
    assert all(orjson.loads(line)["service"] == "orders" for line in report.lines)


def test_check_pipeline_with_options_leaves_reqlog_unconfigured() -> None:
    testing.check_pipeline(format="json", processors=[redact_battery])
    assert not reqlog._configure.is_configured()


def test_check_pipeline_without_stdlib_routing_says_so() -> None:
    report = testing.check_pipeline(format="json", stdlib=False, processors=[redact_battery])
    assert report.notes == ["stdlib=False: standard-library records were not checked"]
    assert "stdlib_args" not in report.cases


def test_check_pipeline_logs_at_the_configured_level() -> None:
    report = testing.check_pipeline(format="json", level="ERROR", processors=[redact_battery])
    assert {orjson.loads(line)["level"] for line in report.lines} == {"error"}


# -- the pytest plugin ---------------------------------------------------------------------------


def test_plugin_fixture_collects_processed_events(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import logging

        import structlog
        import reqlog


        def test_events(reqlog_events):
            reqlog.configure(format="json", service="svc")
            reqlog.get_logger("app").info("hello", order_id=1)
            structlog.get_logger("lib").info("from_structlog")
            logging.getLogger("std").warning("from %s", "stdlib")
            assert [(e["event"], e["logger"], e["service"]) for e in reqlog_events] == [
                ("hello", "app", "svc"),
                ("from_structlog", "lib", "svc"),
                ("from stdlib", "std", "svc"),
            ]
            assert reqlog_events[0]["order_id"] == 1
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)


def test_plugin_resets_configuration_and_context_between_tests(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import logging

        import structlog
        import reqlog
        from reqlog import _configure


        def test_first(reqlog_events):
            reqlog.configure(format="json", level="DEBUG", service="first")
            structlog.contextvars.bind_contextvars(leftover=True)
            reqlog.get_logger("app").debug("one")
            assert reqlog_events[0]["leftover"] is True


        def test_second(reqlog_events):
            assert not _configure.is_configured()
            assert structlog.contextvars.get_contextvars() == {}
            reqlog.get_logger("app").debug("filtered at the default INFO")
            reqlog.get_logger("app").info("two")
            assert [e["event"] for e in reqlog_events] == ["two"]
            assert "service" not in reqlog_events[0]
            assert "leftover" not in reqlog_events[0]
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=2)


def test_plugin_does_nothing_for_tests_that_do_not_ask(pytester: pytest.Pytester) -> None:
    # In a fresh interpreter: the plugin is loaded, but neither reqlog nor structlog is
    # configured and the standard library's logging is as the project left it.
    pytester.makepyfile(
        """
        import logging
        import sys

        import structlog


        def test_untouched():
            assert "reqlog.pytest_plugin" in sys.modules
            assert not sys.modules["reqlog._configure"].is_configured()
            assert not structlog.is_configured()
            root = logging.getLogger()
            assert not any(type(h).__module__.startswith("reqlog") for h in root.handlers)
            assert logging.getLogger("uvicorn.access").disabled is False
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_events(reqlog_events):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:reqlog", "-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'reqlog_events' not found*"])
