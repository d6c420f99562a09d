"""Outgoing httpx requests carry the current request ID, so the next service logs the same one.

>>> import httpx
>>> from reqlog.integrations.httpx import instrument
>>> client = instrument(httpx.AsyncClient(base_url="http://inventory"))

Inside a request served by ``RequestLoggingMiddleware``, every request the client sends gets
an ``X-Request-ID`` header with the current request's ID; the service on the other end, when
it runs reqlog (or asgi-correlation-id), logs under that same ID. Inside a Celery task set up
with ``reqlog.integrations.celery``, the task's correlation ID is sent instead. A header the
caller set explicitly is left alone; outside a request nothing is added.
"""

from __future__ import annotations

from typing import TypeVar

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from reqlog.integrations import missing

    raise missing("httpx", "httpx") from exc

from asgi_correlation_id.context import correlation_id

from reqlog.context import get_request_id

__all__ = ["instrument", "request_id_headers"]

_Client = TypeVar("_Client", httpx.Client, httpx.AsyncClient)

_DEFAULT_HEADER = "X-Request-ID"


def current_id() -> str | None:
    """The ID to propagate: the request's, else asgi-correlation-id's (a Celery task's)."""
    return get_request_id() or correlation_id.get()


def request_id_headers(header: str = _DEFAULT_HEADER) -> dict[str, str]:
    """``{header: id}`` for the current request, or ``{}`` outside one: for other HTTP clients.

    >>> import urllib.request
    >>> request = urllib.request.Request("http://inventory/items", headers=request_id_headers())
    """
    rid = current_id()
    return {header: rid} if rid else {}


class _SetHeader:
    __slots__ = ("header",)

    def __init__(self, header: str) -> None:
        self.header = header

    def apply(self, request: httpx.Request) -> None:
        if self.header in request.headers:
            return  # set explicitly by the caller: theirs wins
        rid = current_id()
        if rid:
            request.headers[self.header] = rid


class _SyncHook(_SetHeader):
    __slots__ = ()

    def __call__(self, request: httpx.Request) -> None:
        self.apply(request)


class _AsyncHook(_SetHeader):
    __slots__ = ()

    async def __call__(self, request: httpx.Request) -> None:
        self.apply(request)


def instrument(client: _Client, *, header: str = _DEFAULT_HEADER) -> _Client:
    """Add a request event hook to ``client`` (``httpx.Client`` or ``httpx.AsyncClient``).

    The hook runs in the task or thread that sends the request, so it sees that request's
    context. Instrumenting the same client twice adds one hook. Returns the client.
    """
    if not isinstance(header, str) or not header or any(c in header for c in " :\r\n"):
        msg = f"header: not a valid header name: {header!r}"
        raise ValueError(msg)
    hook: _SetHeader
    if isinstance(client, httpx.AsyncClient):
        hook = _AsyncHook(header)
    elif isinstance(client, httpx.Client):
        hook = _SyncHook(header)
    else:
        msg = f"client: expected an httpx.Client or httpx.AsyncClient, got {client!r}"
        raise ValueError(msg)
    hooks = client.event_hooks
    request_hooks = list(hooks.get("request", []))
    if any(isinstance(h, _SetHeader) and h.header.lower() == header.lower() for h in request_hooks):
        return client
    request_hooks.append(hook)
    hooks["request"] = request_hooks
    client.event_hooks = hooks
    return client
