"""configure(): formats, outputs, levels, environment fallbacks, validation, stdlib routing."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from freezegun import freeze_time

import reqlog
from tests.conftest import LogOutput


@freeze_time("2026-11-24 06:00:00.250")
def test_json_event_has_the_common_keys(log_output: LogOutput) -> None:
    log_output.configure(service="orders")
    reqlog.get_logger("app.mod").info("hello", n=1)
    assert log_output.events() == [
        {
            "n": 1,
            "event": "hello",
            "logger": "app.mod",
            "level": "info",
            "timestamp": "2026-11-24T06:00:00.250000Z",
            "service": "orders",
        }
    ]


def test_logger_name_defaults_to_the_calling_module(log_output: LogOutput) -> None:
    log_output.configure()
    reqlog.get_logger().info("x")
    structlog.get_logger("via.structlog").info("y")
    assert [e["logger"] for e in log_output.events()] == [__name__, "via.structlog"]


def test_levels_filter_and_reconfigure_reaches_existing_loggers(log_output: LogOutput) -> None:
    log = reqlog.get_logger("early")  # created before configure(), as module loggers are
    log_output.configure(level="WARNING")
    log.info("dropped")
    log.warning("kept")
    log_output.configure(level=logging.DEBUG)
    log.debug("now kept")
    assert [(e["event"], e["level"]) for e in log_output.events()] == [
        ("kept", "warning"),
        ("now kept", "debug"),
    ]


def test_reconfiguring_never_duplicates_output(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    reqlog.configure(output=str(path), format="json")
    reqlog.configure(output=str(path), format="json")
    logging.getLogger("lib").warning("once")
    reqlog.get_logger("app").warning("twice?")
    reqlog.flush()
    assert [orjson.loads(line)["event"] for line in path.read_bytes().splitlines()] == [
        "once",
        "twice?",
    ]


def test_file_output_appends(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text('{"event":"old"}\n')
    reqlog.configure(output=path, format="json")
    reqlog.get_logger("a").info("new")
    reqlog.flush()
    assert [orjson.loads(x)["event"] for x in path.read_bytes().splitlines()] == ["old", "new"]


def test_text_file_object_and_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    reqlog.configure(output=stream, format="json")
    reqlog.get_logger("a").info("to a text stream")
    assert orjson.loads(stream.getvalue())["event"] == "to a text stream"
    reqlog.configure(output="stderr", format="json")
    reqlog.get_logger("a").info("to stderr")
    reqlog.flush()  # stderr is written by the background writer
    captured = capsys.readouterr()
    assert (captured.out, orjson.loads(captured.err)["event"]) == ("", "to stderr")


def test_auto_format_is_json_when_not_a_tty(log_output: LogOutput) -> None:
    reqlog.configure(output=log_output.stream)
    reqlog.get_logger("a").info("auto")
    assert log_output.events()[0]["event"] == "auto"


def test_console_and_logfmt_escape_control_characters() -> None:
    for fmt in ("console", "logfmt"):
        stream = io.StringIO()
        reqlog.configure(output=stream, format=fmt)
        reqlog.get_logger("a").info("evil", path="/a\nforged line\x1b[31m")
        text = stream.getvalue()
        assert text.count("\n") == 1, (fmt, text)
        assert "\x1b" not in text
        assert "\\x0a" in text or "\\n" in text


def test_one_json_object_per_line_whatever_values_hold(log_output: LogOutput) -> None:
    log_output.configure()
    nasty = 'a"b\\c\r\nd\x1b[2J\x00e\u2028f'
    reqlog.get_logger("a").info(nasty, **{nasty: nasty, "obj": object(), "raw": b"\xff\x00"})
    logging.getLogger("lib").error(nasty)
    lines = log_output.lines()
    assert len(lines) == 2
    first = orjson.loads(lines[0])
    assert (first["event"], first[nasty]) == (nasty, nasty)
    assert first["obj"].startswith("<object object")
    assert orjson.loads(lines[1])["event"] == nasty


def test_unserialisable_values_still_produce_the_event(log_output: LogOutput) -> None:
    log_output.configure()
    reqlog.get_logger("a").info("big", huge=2**100, nested={1: {2, 3}})
    [event] = log_output.events()
    assert event["huge"] == str(2**100)
    assert event["event"] == "big"


# -- environment and validation ---------------------------------------------------------------


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "env.log"
    monkeypatch.setenv("REQLOG_LEVEL", "error")
    monkeypatch.setenv("REQLOG_FORMAT", "json")
    monkeypatch.setenv("REQLOG_OUTPUT", str(path))
    monkeypatch.setenv("REQLOG_SERVICE", "from-env")
    reqlog.configure()
    log = reqlog.get_logger("a")
    log.warning("dropped")
    log.error("kept")
    reqlog.flush()
    [event] = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert (event["event"], event["service"]) == ("kept", "from-env")


def test_explicit_options_beat_the_environment(
    monkeypatch: pytest.MonkeyPatch, log_output: LogOutput
) -> None:
    monkeypatch.setenv("REQLOG_LEVEL", "ERROR")
    log_output.configure(level="DEBUG")
    reqlog.get_logger("a").debug("kept")
    assert len(log_output.events()) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"level": "LOUD"}, "level: expected a level name"),
        ({"level": 17}, "level: expected a level name"),
        ({"format": "xml"}, "format: expected one of json, console, logfmt, auto"),
        ({"output": 42}, "output: expected 'stdout', 'stderr', a file path"),
        ({"output": []}, "output: an empty list writes nowhere"),
        ({"output": "/no/such/dir/app.log"}, "output: directory '/no/such/dir' does not exist"),
        ({"service": 3}, "service: expected a string"),
        ({"processors": [42]}, "processors: 42 is not callable"),
        ({"processors": "abc"}, "processors: expected a list"),
        ({"stdlib": "yes"}, "stdlib: expected True or False"),
        ({"slow_request_ms": -5}, "slow_request_ms: expected a positive number"),
        ({"slow_routes": {"items": 5}}, "slow_routes: keys are route templates"),
        ({"slow_routes": {"/items": "soon"}}, r"slow_routes\['/items'\]: expected a positive"),
        ({"status_levels": {"4yy": "info"}}, "status_levels: keys are status codes"),
        ({"status_levels": {404: "LOUD"}}, r"status_levels\[404\]: expected a level"),
    ],
)
def test_invalid_options_raise_value_error_naming_the_option(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        reqlog.configure(**options)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REQLOG_LEVEL", "chatty", r"level \(from REQLOG_LEVEL\)"),
        ("REQLOG_FORMAT", "yaml", r"format \(from REQLOG_FORMAT\)"),
        ("REQLOG_SLOW_REQUEST_MS", "fast", r"slow_request_ms \(from REQLOG_SLOW_REQUEST_MS\)"),
    ],
)
def test_invalid_environment_raises_at_configure(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        reqlog.configure()


def test_a_failed_configure_leaves_the_previous_setup(log_output: LogOutput) -> None:
    log_output.configure()
    with pytest.raises(ValueError, match="format"):
        reqlog.configure(format="xml")  # type: ignore[arg-type]
    reqlog.get_logger("a").info("still here")
    assert log_output.events()[0]["event"] == "still here"


# -- the standard library ----------------------------------------------------------------------


def test_stdlib_records_share_the_chain(log_output: LogOutput) -> None:
    log_output.configure(service="svc")
    logging.getLogger("third.party").warning("user %s failed", "ada", extra={"attempt": 3})
    try:
        raise ValueError("bad thing")
    except ValueError:
        logging.getLogger("third.party").exception("it broke")
    first, second = log_output.events()
    assert {k: v for k, v in first.items() if k != "timestamp"} == {
        "event": "user ada failed",
        "attempt": 3,
        "logger": "third.party",
        "level": "warning",
        "service": "svc",
    }
    assert second["level"] == "error"
    assert second["exception"][0]["exc_type"] == "ValueError"


def test_basic_config_handler_is_replaced_not_duplicated(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(stream=__import__("sys").stderr, force=False)
    try:
        reqlog.configure(output="stdout", format="json")
        logging.getLogger("lib").warning("one line")
        reqlog.flush()
        out, err = capsys.readouterr()
        assert [orjson.loads(x)["event"] for x in out.splitlines()] == ["one line"]
        assert err == ""
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)


def test_stdlib_false_leaves_logging_alone(log_output: LogOutput) -> None:
    log_output.configure(stdlib=False)
    logging.getLogger("lib").warning("not ours")
    assert log_output.events() == []


def test_server_loggers_propagate_to_reqlog(log_output: LogOutput) -> None:
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(logging.StreamHandler())
    uvicorn_logger.propagate = False
    log_output.configure()
    assert uvicorn_logger.handlers == []
    assert uvicorn_logger.propagate is True
    logging.getLogger("uvicorn.error").info("Started server process")
    assert log_output.events()[0]["logger"] == "uvicorn.error"


# -- logging never breaks the app ----------------------------------------------------------------


def test_failing_user_processor_is_skipped_and_reported_once(
    log_output: LogOutput, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken(logger: Any, method: str, event_dict: Any) -> Any:
        raise RuntimeError("processor bug")

    log_output.configure(processors=[broken])
    log = reqlog.get_logger("a")
    log.info("first")
    log.info("second")
    logging.getLogger("lib").info("third")
    assert [e["event"] for e in log_output.events()] == ["first", "second", "third"]
    err = capfd.readouterr().err
    assert err.count("processor bug") == 1, err


def test_failing_output_never_raises_and_is_reported_once(
    capfd: pytest.CaptureFixture[str],
) -> None:
    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    reqlog.configure(output=Full(), format="json")
    log = reqlog.get_logger("a")
    for _ in range(3):
        log.info("lost")
    logging.getLogger("lib").warning("lost too")
    err = capfd.readouterr().err
    assert err.count("No space left on device") == 1, err
    stats = reqlog.output_stats()
    assert (stats["accepted"], stats["written"], stats["dropped"]) == (4, 0, 4)


def test_server_logging_configured_after_configure_is_adopted(log_output: LogOutput) -> None:
    """``uvicorn.run(app)`` applies uvicorn's logging config after the app module ran."""
    import logging.config

    from fastapi import FastAPI
    from uvicorn.config import LOGGING_CONFIG

    log_output.configure()
    logging.config.dictConfig(LOGGING_CONFIG)
    reqlog.RequestLoggingMiddleware(FastAPI())  # built when the server starts the app
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    assert [e["event"] for e in log_output.events()] == ["Application startup complete."]
    assert logging.getLogger("uvicorn").handlers == []
