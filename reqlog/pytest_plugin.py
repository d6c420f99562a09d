"""reqlog's pytest plugin: the ``reqlog_events`` fixture, registered on install.

The plugin only defines fixtures; nothing runs unless a test asks for one, so projects that
install reqlog without using the fixture see no change in their test runs: importing reqlog
configures nothing. Disable the plugin with ``-p no:reqlog``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reqlog import testing

__all__ = ["reqlog_events"]


@pytest.fixture
def reqlog_events() -> Iterator[list[dict[str, Any]]]:
    """The events logged during the test, as dicts, after redaction and before rendering.

    reqlog is reset (unconfigured, context cleared) before and after the test, so configure
    it in the test or in your app factory. Events from reqlog's loggers, structlog's and (once
    ``reqlog.configure()`` has run, with ``stdlib=True``) the standard library's are collected,
    and still written to the configured output.

    >>> def test_login_is_logged(reqlog_events):
    ...     reqlog.configure()
    ...     reqlog.get_logger("auth").info("login", user_id=7)
    ...     assert reqlog_events[0]["event"] == "login"
    """
    testing.reset()
    try:
        with testing.capture_events() as events:
            yield events
    finally:
        testing.reset()
