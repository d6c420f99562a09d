"""Request-scoped state: bind(), bind_user(), get_request_id(), and the processor that merges it."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from reqlog import _foreign

__all__ = [
    "RequestContext",
    "bind",
    "bind_user",
    "get_request_id",
    "merge_request_context",
]


class RequestContext:
    """What reqlog knows about the request being served.

    One object per request, held in a context variable. The object itself is shared, not
    copied: a sync endpoint or dependency runs in the threadpool on a *copy* of the context,
    so a plain ``ContextVar.set`` made there would never reach the access event. Mutating the
    shared object does. That is why this exists beside ``structlog.contextvars``, whose
    bindings are per-context and so stay behind in the worker thread.
    """

    __slots__ = ("fields", "scope", "user_pending")

    def __init__(self, fields: dict[str, Any], scope: MutableMapping[str, Any] | None) -> None:
        self.fields = fields
        # The ASGI scope, to pick up Starlette's AuthenticationMiddleware user once it exists
        # (empty without one). Every event asks ``user_pending and "user" in scope`` before
        # calling resolve_user(): most apps never put a user there.
        self.scope: MutableMapping[str, Any] = {} if scope is None else scope
        self.user_pending = scope is not None

    def resolve_user(self) -> None:
        """Bind ``scope["user"]`` the first time it is an authenticated user."""
        user = self.scope.get("user")
        if user is None:
            return
        self.user_pending = False
        if "user_id" in self.fields or not getattr(user, "is_authenticated", False):
            return
        identity = _user_identity(user)
        if identity is not None:
            self.fields["user_id"] = identity


def _user_identity(user: Any) -> str | None:
    for attr in ("identity", "display_name"):
        try:
            value = getattr(user, attr)
        except Exception:  # noqa: BLE001 - a user object's property must not break logging
            continue
        if value:
            return str(value)
    return None


CURRENT: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "reqlog_request", default=None
)
_CURRENT = CURRENT


def current() -> RequestContext | None:
    """The current request's context, or ``None`` outside a request."""
    return _CURRENT.get()


def bind(**fields: Any) -> None:
    """Add fields to every later event of the current request, its access event included.

    Works from async endpoints, sync endpoints and dependencies (the threadpool) and background
    tasks alike. Outside a request it falls back to ``structlog.contextvars.bind_contextvars``.

    >>> bind(order_id=42, tenant="acme")
    """
    ctx = _CURRENT.get()
    if ctx is None:
        structlog.contextvars.bind_contextvars(**fields)
    else:
        ctx.fields.update(fields)


def bind_user(user_id: Any = None, email: str | None = None, **extra: Any) -> None:
    """Bind the user's identity: ``user_id``, ``user_email`` and ``user_<key>`` for each extra.

    An explicit call wins over a user that Starlette's ``AuthenticationMiddleware`` put in the
    scope.
    """
    fields: dict[str, Any] = {}
    if user_id is not None:
        fields["user_id"] = str(user_id)
    if email is not None:
        fields["user_email"] = email
    for key, value in extra.items():
        fields[key if key.startswith("user_") else f"user_{key}"] = value
    ctx = _CURRENT.get()
    if ctx is not None:
        ctx.user_pending = False
    bind(**fields)


def get_request_id() -> str | None:
    """The current request's ID, or ``None`` outside a request."""
    ctx = _CURRENT.get()
    if ctx is None:
        return None
    rid = ctx.fields.get("request_id")
    return rid if isinstance(rid, str) else None


def merge_request_context(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Processor: put the current request's fields on the event (explicit keywords win)."""
    ctx = _CURRENT.get()
    if ctx is None:
        return event_dict
    if ctx.user_pending and "user" in ctx.scope:
        ctx.resolve_user()
    # One C-level merge: a threadpool thread may be binding into ctx.fields right now.
    return {**ctx.fields, **event_dict}


# structlog's context variables, one per key ever bound: while there are none, nothing can
# need merging or restoring (see reqlog._foreign).
_STRUCTLOG_VARS = _foreign.STRUCTLOG_CONTEXT_VARS


def merge_structlog_contextvars(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Processor: ``structlog.contextvars.merge_contextvars``, skipped while nothing can be bound.

    structlog's walks every context variable of the context on every event; until the first
    ``bind_contextvars()`` there is nothing to find.
    """
    if not _STRUCTLOG_VARS:
        return event_dict
    return structlog.contextvars.merge_contextvars(logger, method_name, event_dict)


def structlog_snapshot() -> contextvars.Context | None:
    """Remember structlog's context-local bindings (``copy_context`` is O(1)).

    ``None`` while structlog.contextvars was never used: there is nothing to restore then.
    """
    return contextvars.copy_context() if _STRUCTLOG_VARS else None


def structlog_restore(snapshot: Mapping[contextvars.ContextVar[Any], Any] | None) -> None:
    """Undo whatever ``structlog.contextvars.bind_contextvars`` did since ``snapshot``.

    structlog keeps one context variable per key and offers no snapshot/restore. A server may
    run several keep-alive requests in one task context (uvicorn #2167), so bindings made by
    an async endpoint would otherwise leak into the next request on the connection.
    """
    if not _STRUCTLOG_VARS:
        return  # structlog.contextvars was never used: nothing can have been bound
    for var, value in contextvars.copy_context().items():
        if not var.name.startswith("structlog_"):
            continue
        before = Ellipsis if snapshot is None else snapshot.get(var, Ellipsis)
        if value is not before:
            var.set(before)
