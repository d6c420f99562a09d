"""Helpers for users' own tests: capture processed events, reset reqlog between tests."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

import structlog
from structlog.typing import EventDict

from reqlog import _config

__all__ = ["capture_logs", "reset"]


def reset() -> None:
    """Undo configure() and clear structlog's context-local bindings."""
    _config.reset()
    structlog.contextvars.clear_contextvars()


@contextmanager
def capture_logs() -> Generator[list[EventDict], None, None]:
    """Capture reqlog and structlog events as dicts instead of writing them.

    A thin wrapper of ``structlog.testing.capture_logs`` that makes sure reqlog's chain exists
    first, so loggers created by ``reqlog.get_logger()`` are captured too.

    >>> with capture_logs() as events:
    ...     reqlog.get_logger("t").info("hello")
    >>> events[0]["event"]
    'hello'
    """
    _config.settings()
    with structlog.testing.capture_logs() as events:
        yield events
