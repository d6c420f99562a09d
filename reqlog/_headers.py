"""ASGI header lists: a response header added, a request header replaced, headers as sent."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message, Scope

__all__ = ["as_sent", "replace_header", "with_header"]


def with_header(message: Message, name: bytes, value: bytes) -> Message:
    """The message with header ``name`` added, unless the app set it (names are lower case in
    ASGI responses); a copy: the app's own header list is left alone."""
    headers = message.get("headers") or ()
    for key, _ in headers:
        if key == name:
            return message
    return {**message, "headers": [*headers, (name, value)]}


def replace_header(
    headers: Iterable[tuple[bytes, bytes]], name: bytes, value: bytes
) -> list[tuple[bytes, bytes]]:
    """``headers`` with every ``name`` field removed and one ``name: value`` added at the end."""
    return [*((k, v) for k, v in headers if k != name), (name, value)]


def as_sent(scope: Scope, name: bytes, used: bytes) -> Scope:
    """The scope with the request-ID headers as the client sent them, for ``log_headers``: a
    value that was not used (rejected, or a dropped duplicate) shows as ``[REJECTED]``."""
    headers = scope["headers"]
    if all(k != name or v == used for k, v in headers):
        return scope
    shown = [(k, v if k != name or v == used else b"[REJECTED]") for k, v in headers]
    return {**scope, "headers": shown}
