"""reqlog: one structured access event per request, and the request's context on every event."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from reqlog._config import configure, default_processors, get_logger
from reqlog.context import bind, bind_user, get_request_id
from reqlog.middleware import RequestLoggingMiddleware
from reqlog.output import flush, output_stats
from reqlog.processors import Redactor

try:
    __version__ = version("reqlog-asgi")  # the distribution's name; the import name is reqlog
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

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
