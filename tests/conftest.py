"""Shared fixtures: every test starts unconfigured, and can read what reqlog wrote."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pydantic.v1  # noqa: F401 - defines date subclasses: import before freezegun fakes date
import pytest

import reqlog
from reqlog import testing


class LogOutput:
    """An in-memory output: configure reqlog to it, then read the events back parsed."""

    def __init__(self) -> None:
        self.stream = io.BytesIO()

    def configure(self, **options: Any) -> None:
        options.setdefault("format", "json")
        reqlog.configure(output=self.stream, **options)

    def lines(self) -> list[bytes]:
        reqlog.flush()
        return self.stream.getvalue().splitlines()

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines()]

    def access(self) -> list[dict[str, Any]]:
        """Only the access events (request_completed, request_failed, websocket_*)."""
        return [e for e in self.events() if e.get("logger") == "reqlog.access"]


@pytest.fixture(autouse=True)
def _reset_reqlog() -> Iterator[None]:
    testing.reset()
    uvicorn_levels = {n: logging.getLogger(n).level for n in ("uvicorn", "uvicorn.error")}
    # httpx logs every request it makes at INFO: noise in tests that read the whole output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    yield
    testing.reset()
    for name, level in uvicorn_levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def log_output() -> LogOutput:
    return LogOutput()
