"""reqlog: one structured access event per request, and the request's context on every event."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reqlog._configure import configure, default_processors
    from reqlog._logger import get_logger
    from reqlog._state import flush, output_stats
    from reqlog.context import bind, bind_user, get_request_id
    from reqlog.middleware import RequestLoggingMiddleware
    from reqlog.processors import Redactor

    __version__: str

# Imported when first used (PEP 562): the ``reqlog`` command imports this package too, and
# should not pay for structlog and Starlette before it reads a single line.
_LAZY = {
    "configure": "reqlog._configure",
    "default_processors": "reqlog._configure",
    "get_logger": "reqlog._logger",
    "bind": "reqlog.context",
    "bind_user": "reqlog.context",
    "get_request_id": "reqlog.context",
    "RequestLoggingMiddleware": "reqlog.middleware",
    "flush": "reqlog._state",
    "output_stats": "reqlog._state",
    "Redactor": "reqlog.processors",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("reqlog-asgi")  # the distribution; the import name is reqlog
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            value = "0.0.0"
    else:
        module = _LAZY.get(name)
        if module is None:
            msg = f"module 'reqlog' has no attribute {name!r}"
            raise AttributeError(msg)
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "__version__"])


__all__ = [
    "Redactor",
    "RequestLoggingMiddleware",
    "__version__",
    "bind",
    "bind_user",
    "configure",
    "default_processors",
    "flush",
    "get_logger",
    "get_request_id",
    "output_stats",
]
