"""FLOOR: the cheapest honest pure-ASGI middleware that writes reqlog's access line.

The yardstick of issue 12: what one access line costs when nothing else is done. Per request it

- reads the request ID from ``X-Request-ID`` when it is valid by reqlog's default rule (a UUID,
  with or without hyphens, or 32 hex digits), else makes a random 128-bit one (32 hex digits),
  puts it in one context variable for the app's own log lines and echoes it on the response;
- writes the same line reqlog writes with ``configure(format="json", service=...)``: the same
  fields in the same order, orjson, the query redacted by the same secret names (a benign query
  comes out exactly as reqlog writes it; a value that might hold a secret reqlog would search
  for is censored whole rather than searched, see ``redact_query``);
- writes it to a file descriptor (``/dev/null`` in the benchmarks) before the request returns.

It does not copy the scope to hide a rejected inbound ID from the app, answer a failed request
itself, know proxies, capture bodies, sample, or survive a stalled sink: those are what reqlog adds
over the floor. The line shape is checked against reqlog's own by tests/test_bench.py.
"""

from __future__ import annotations

import contextvars
import os
import re
import time
from typing import Any
from urllib.parse import unquote_plus

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The secret names reqlog redacts by default: data, not reqlog's code.
from reqlog.processors import DEFAULT_KEYS

__all__ = ["REQUEST_ID", "FloorMiddleware"]

#: The request's ID, for the app's own log lines.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("floor_id", default=None)

CENSOR = "[REDACTED]"
_VALID_ID = re.compile(
    rb"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_SEPARATORS = str.maketrans("", "", "-_. []")
_EXACT = frozenset(k.translate(_SEPARATORS) for k in DEFAULT_KEYS if not k.startswith("*"))
_SUFFIXES = tuple(k[1:] for k in DEFAULT_KEYS if k.startswith("*") and not k.endswith("*"))
_CONTAINS = tuple(k[1:-1] for k in DEFAULT_KEYS if k.startswith("*") and k.endswith("*"))
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9._~-]{1,12}")
# Parameter name -> whether it names a secret; bounded, so that ever-new names cannot grow it.
_SECRET_NAMES: dict[str, bool] = {}
_MAX_NAMES = 1024

_ids: list[str] = []


def _new_id() -> str:
    # 256 IDs per os.urandom() call, as reqlog makes them.
    if not _ids:
        digits = os.urandom(16 * 256).hex()
        _ids.extend([digits[i : i + 32] for i in range(0, len(digits), 32)])
    return _ids.pop()


def _secret_name(raw: str) -> bool:
    known = _SECRET_NAMES.get(raw)
    if known is not None:
        return known
    name = unquote_plus(raw) if "%" in raw or "+" in raw else raw
    key = name.lower().translate(_SEPARATORS)
    secret = key in _EXACT or key.endswith(_SUFFIXES) or any(w in key for w in _CONTAINS)
    if len(_SECRET_NAMES) >= _MAX_NAMES:
        _SECRET_NAMES.clear()
    _SECRET_NAMES[raw] = secret
    return secret


def redact_query(raw: bytes) -> str:
    """The query as reqlog writes a benign one; values it cannot vouch for, censored.

    Parameters named like a secret are censored as reqlog censors them. Any other value is
    written only when it is short and plain (letters, digits, ``.``, ``_``, ``~``, ``-``, at most
    12 characters): every secret shape reqlog searches values for (tokens, keys, JWTs, card
    numbers of 13 digits or more, credentials in URLs, ``name=value`` inside a value) is longer
    or holds another character, so the floor never writes what reqlog would redact, without
    searching for it.
    """
    query = raw.decode("latin-1")
    if not query:
        return query
    parts = query.split("&")
    changed = False
    for index, part in enumerate(parts):
        name, sep, value = part.partition("=")
        if sep and value and (_secret_name(name) or not _PLAIN_VALUE.fullmatch(value)):
            parts[index] = f"{name}={CENSOR}"
            changed = True
    return "&".join(parts) if changed else query


_stamp: tuple[int, str] = (-1, "")
_DIGITS = [f"{n:03d}" for n in range(1000)]


def _timestamp() -> str:
    # reqlog's format (``2026-05-01T12:00:00.123456Z``), the date and time formatted once per
    # second and the microseconds from a table: big-integer arithmetic and a format
    # specification per call would cost more than all the rest of this function.
    global _stamp
    now = time.time()
    second = int(now)
    if second != _stamp[0]:
        _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    micro = int((now - second) * 1_000_000)
    if not micro:  # as structlog writes a whole second
        return _stamp[1] + "Z"
    return _stamp[1] + "." + _DIGITS[micro // 1000] + _DIGITS[micro % 1000] + "Z"


class FloorMiddleware:
    """The floor contender: see the module docstring."""

    def __init__(self, app: ASGIApp, *, fd: int, service: str) -> None:
        self.app = app
        self.fd = fd
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        inbound: bytes | None = None
        user_agent: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                inbound = value
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        rejected = False
        if inbound is not None and len(inbound) <= 36 and _VALID_ID.fullmatch(inbound):
            request_id = inbound.decode("latin-1")
        else:
            request_id = _new_id()
            rejected = inbound is not None
        echo = (b"x-request-id", request_id.encode("latin-1"))
        status = 500
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers") or []
                for key, _ in headers:
                    if key == b"x-request-id":
                        break
                else:
                    message = {**message, "headers": [*headers, echo]}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        event = "request_failed"
        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_wrapper)
            event = "request_completed"
        finally:
            REQUEST_ID.reset(token)
            self._write(scope, request_id, user_agent, status, sent, event, start, rejected)

    def _write(
        self,
        scope: Scope,
        request_id: str,
        user_agent: str | None,
        status: int,
        sent: int,
        event: str,
        start: float,
        rejected: bool = False,
    ) -> None:
        client = scope.get("client")
        fields: dict[str, Any] = {
            "request_id": request_id,
            "client_ip": client[0] if client else None,
            "method": scope["method"],
            "path": scope["path"],
            "route": getattr(scope.get("route"), "path_format", None),
            "query": redact_query(scope["query_string"]),
            "status_code": status,
            "duration_ms": round((time.perf_counter() - start) * 1000.0, 3),
            "user_agent": user_agent,
            "http_version": scope.get("http_version"),
            "response_bytes": sent,
        }
        if rejected:  # as reqlog flags a request ID it did not take
            fields["request_id_rejected"] = True
        fields["event"] = event
        fields["logger"] = "reqlog.access"
        fields["level"] = "info" if status < 400 else "warning" if status < 500 else "error"
        fields["timestamp"] = _timestamp()
        fields["service"] = self.service
        try:  # noqa: SIM105 - contextlib.suppress costs a context manager per request
            os.write(self.fd, orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE))
        except Exception:  # noqa: BLE001 - logging never breaks the app
            pass
