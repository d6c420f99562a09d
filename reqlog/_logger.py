"""get_logger(): a structlog logger that writes through reqlog's chain."""

from __future__ import annotations

import sys
from typing import Any, cast

from structlog.typing import FilteringBoundLogger

from reqlog._configure import ensure_configured
from reqlog._emit import BoundLogger, OutputLogger
from reqlog._state import STATE

__all__ = ["get_logger"]


def get_logger(name: str | None = None, **initial_values: Any) -> FilteringBoundLogger:
    """A structlog logger that writes through reqlog's chain; ``name`` becomes ``logger``.

    Use it at module level: it follows every later configure().

    >>> log = get_logger(__name__)
    >>> log.info("loading_item", item_id=42)  # carries request_id, client_ip, user_id...
    """
    if name is None:
        name = sys._getframe(1).f_globals.get("__name__")
    ensure_configured()
    logger = BoundLogger(OutputLogger(name), STATE.processors, initial_values)
    return cast(FilteringBoundLogger, logger)
