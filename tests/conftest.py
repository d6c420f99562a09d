"""Shared fixtures: every test starts unconfigured, and can read what reqlog wrote."""

from __future__ import annotations

import io
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pydantic.v1  # noqa: F401 - defines date subclasses: import before freezegun fakes date
import pytest
from hypothesis import HealthCheck, settings

import reqlog
from reqlog import testing

# Every property test of the suite runs derandomized: the same examples on every run and every
# machine, so that ten runs in a row agree (and nothing depends on a .hypothesis database
# left by an earlier run). Registered here, before any test module is imported: a module's
# @settings(...) is built from the profile loaded at its import. HYPOTHESIS_PROFILE=explore
# searches afresh with many more examples.
settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore", deadline=None, max_examples=3000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


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


def listening_socket() -> socket.socket:
    """A loopback TCP socket on a port the kernel chose, bound and listening.

    Hand its file descriptor to the server under test (``uvicorn --fd``, gunicorn's
    ``--bind fd://``, ``uvicorn.Server.run(sockets=...)``) and close this copy. Two races go
    away: no other process can take the port between choosing and binding it (as with "bind
    to port 0, close, pass the number"), and a request sent before the server is up waits in
    the backlog instead of failing, so it is sent once, never retried. If the server dies
    instead, the last copy of the socket closes with it and the request fails at once.
    """
    sock = socket.socket()
    # uvicorn wraps an inherited descriptor as AF_UNIX, so asyncio never sets TCP_NODELAY on
    # the connections it accepts: Nagle's algorithm then meets delayed ACKs and each
    # keep-alive request waits ~40 ms. Linux copies the option from the listening socket.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


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
